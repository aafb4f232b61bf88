"""DICOM series reading (sorting, rescale, LPS→RAS affine, oblique), NRRD and SEG masks."""
from __future__ import annotations

import tarfile

import numpy as np
import pytest

from common.files import DataError
from datamodules.convert.masks import read_mask, read_nrrd, seg_liver_value
from datamodules.dicom import LPS_TO_RAS, read_dicom_series


def write_series(folder, volume, *, spacing=(0.8, 0.7), step=2.5, origin=(-100.0, -80.0, 50.0),
                 iop=(1, 0, 0, 0, 1, 0), names=None, z_decreasing=False, slope=1.0, intercept=0.0,
                 modality="CT", series_uid=None):
    """Write `volume` (X=columns, Y=rows, Z) as a DICOM series; returns the file paths by slice.

    `z_decreasing`: file index 0 holds the slice with the *highest* position along the normal.
    `names[k]`: file name of slice k (sorted position order)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    iop = np.asarray(iop, float)
    normal = np.cross(iop[:3], iop[3:])
    nz = volume.shape[2]
    names = names or [f"slice{k:03d}.dcm" for k in range(nz)]
    stored = np.round((volume - intercept) / slope).astype(np.int16)
    series_uid = series_uid or generate_uid()
    paths = []
    for k in range(nz):
        file_index = nz - 1 - k if z_decreasing else k
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / names[file_index]
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.Modality = modality
        ds.InstanceNumber = file_index + 1
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin) + k * step * normal]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # [row spacing, column spacing]
        ds.SliceThickness = step
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths


def expected_affine(spacing, step, origin, iop):
    iop = np.asarray(iop, float)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * spacing[0]
    lps[:3, 1] = iop[3:] * spacing[1]
    lps[:3, 2] = np.cross(iop[:3], iop[3:]) * step
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def test_sorted_by_position_not_name_and_rescaled(tmp_path):
    rng = np.random.default_rng(0)
    vol = 2 * rng.integers(-500, 500, size=(12, 10, 6)).astype(np.float32)  # slope 2: even values
    names = ["b", "z1", "a10", "a2", "q", "0"]  # arbitrary, no .dcm suffix
    write_series(tmp_path / "s", vol, names=names, z_decreasing=True, slope=2.0, intercept=-1024.0)
    (tmp_path / "s" / "README.txt").write_text("not dicom")
    s = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(s.image, vol)
    np.testing.assert_allclose(s.affine, expected_affine((0.8, 0.7), 2.5, (-100, -80, 50), (1, 0, 0, 0, 1, 0)))
    assert s.affine[2, 2] > 0  # slices ascend in z although file index 0 is the top slice
    assert [p.name for p in s.files] == list(reversed(names))


def test_oblique_orientation_affine_maps_voxels_to_patient_positions(tmp_path):
    a = np.deg2rad(25)
    iop = (np.cos(a), np.sin(a), 0.0, 0.0, np.cos(0.3), -np.sin(0.3))
    vol = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    write_series(tmp_path / "o", vol, iop=iop, step=3.0)
    s = read_dicom_series(tmp_path / "o")
    np.testing.assert_allclose(s.affine, expected_affine((0.8, 0.7), 3.0, (-100, -80, 50), iop), atol=1e-4)
    # voxel (i, j, k) = column i, row j of slice k: world LPS = IPP_k + i*row_cos*dx + j*col_cos*dy
    import pydicom

    ds = pydicom.dcmread(s.files[2])
    ipp = np.asarray(ds.ImagePositionPatient, float)
    world = ipp + 4 * np.asarray(iop[:3]) * 0.8 + 3 * np.asarray(iop[3:]) * 0.7
    np.testing.assert_allclose((LPS_TO_RAS @ s.affine @ [4, 3, 2, 1])[:3], world, atol=1e-4)
    assert s.image[4, 3, 2] == ds.pixel_array[3, 4]


def test_errors_name_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="no DICOM image files"):
        read_dicom_series(tmp_path / "empty")
    vol = np.zeros((4, 4, 3), np.float32)
    write_series(tmp_path / "d", vol, series_uid="1.2.3.4")
    write_series(tmp_path / "d", vol, names=["x0", "x1", "x2"], series_uid="1.2.3.4")  # same series, same positions
    with pytest.raises(DataError, match="same position"):
        read_dicom_series(tmp_path / "d")


def test_totalsegmentator_jpeg2000_series_matches_its_nifti_segmentation(real_data):
    import nibabel as nib

    ts = real_data / "totalsegmentator"
    s = read_dicom_series(ts / "example_ct_dicom")
    assert s.image.shape == (512, 512, 20) and s.image.min() == -1024
    seg_img = nib.load(ts / "example_seg_dicom.nii.gz")
    seg = read_mask(ts / "example_seg_dicom.nii.gz", s.image.shape, s.affine)
    # README: NIfTI i = DICOM column, j = 511 - DICOM row, k = slice by ascending z
    np.testing.assert_array_equal(seg, np.flip(np.asarray(seg_img.dataobj), axis=1))
    assert int((seg == 5).sum()) == 366708
    canon = nib.as_closest_canonical(nib.Nifti1Image(s.image, s.affine))
    np.testing.assert_allclose(canon.affine, nib.as_closest_canonical(seg_img).affine, atol=1e-3)
    assert 40 < s.image[seg == 5].mean() < 200  # liver HU (contrast CT), not air or bone


def test_dcmqi_series_with_nrrd_and_seg_masks(real_data, tmp_path):
    with tarfile.open(real_data / "dcmqi_liver_3slice" / "ct-3slice.tar.xz") as tar:
        tar.extractall(tmp_path, filter="data")
    s = read_dicom_series(tmp_path / "ct-3slice")
    assert [p.name for p in s.files] == ["03.dcm", "02.dcm", "01.dcm"]  # z decreases with file name
    assert s.image.min() == -3024
    nrrd_mask = read_mask(real_data / "dcmqi_liver_3slice" / "liver_seg.nrrd", s.image.shape, s.affine)
    seg_path = real_data / "dcmqi_liver_3slice" / "liver_seg.dcm"
    seg_mask = read_mask(seg_path, s.image.shape, s.affine, s)
    assert seg_liver_value(seg_path) == 1
    np.testing.assert_array_equal(nrrd_mask > 0, seg_mask == 1)
    assert int(seg_mask.sum()) == 107098
    data, affine = read_nrrd(real_data / "dcmqi_liver_3slice" / "liver_seg.nrrd")
    np.testing.assert_allclose(affine, s.affine, atol=1e-3)
    assert -50 < s.image[seg_mask == 1].mean() < 150  # soft tissue, not padding


def test_mask_with_other_grid_is_refused(tmp_path):
    import nibabel as nib

    vol = np.zeros((6, 5, 4), np.float32)
    write_series(tmp_path / "s", vol)
    s = read_dicom_series(tmp_path / "s")
    nib.save(nib.Nifti1Image(np.ones((6, 5, 3), np.uint8), s.affine), tmp_path / "m.nii.gz")
    with pytest.raises(DataError, match=r"m\.nii\.gz: mask shape"):
        read_mask(tmp_path / "m.nii.gz", s.image.shape, s.affine)
    shifted = s.affine.copy()
    shifted[0, 3] += 5
    nib.save(nib.Nifti1Image(np.ones((6, 5, 4), np.uint8), shifted), tmp_path / "m2.nii.gz")
    with pytest.raises(DataError, match="does not match the image"):
        read_mask(tmp_path / "m2.nii.gz", s.image.shape, s.affine)
