"""The volume layer: reading, one grid tolerance, liver labels by name, atomic uint8 masks."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from common.files import DataError
from datamodules.grid import GRID_ATOL_MM, check_same_grid, same_grid
from datamodules.labels import liver_labels_from_dataset_json, liver_mask
from datamodules.volumes import read_geometry, read_volume, write_mask


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_read_volume_spacing_from_affine_and_4d_rule(tmp_path):
    affine = np.diag([-0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [10, -5, 3]
    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5, 1), affine)
    img.header.set_zooms((9.0, 9.0, 9.0, 1.0))  # header zooms that disagree with the affine are ignored
    img.set_sform(affine, code=1)
    nib.save(img, str(tmp_path / "a.nii.gz"))
    vol = read_volume(tmp_path / "a.nii.gz")
    assert vol.array.shape == (3, 4, 5) and vol.shape == (3, 4, 5) and vol.array.dtype == np.int16
    assert vol.spacing == pytest.approx((0.8, 0.8, 2.5))
    assert vol.array[1, 2, 3] == 1 * 20 + 2 * 5 + 3
    assert vol.source == tmp_path / "a.nii.gz"
    head = read_geometry(tmp_path / "a.nii.gz")
    assert head.array is None and head.shape == (3, 4, 5) and np.allclose(head.affine, affine)
    _save(tmp_path / "b.nii.gz", np.zeros((3, 4, 5, 2), np.uint8), affine)
    with pytest.raises(DataError, match=r"b\.nii\.gz: expected a 3D volume, got shape \(3, 4, 5, 2\)"):
        read_volume(tmp_path / "b.nii.gz")
    with pytest.raises(DataError, match=r"missing\.nii\.gz: does not exist"):
        read_volume(tmp_path / "missing.nii.gz")
    (tmp_path / "c.nii.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"c\.nii\.gz: unreadable NIfTI"):
        read_volume(tmp_path / "c.nii.gz")


def test_read_volume_dicom_folder(real_data):
    vol = read_volume(real_data / "totalsegmentator" / "example_ct_dicom")
    assert vol.shape == (512, 512, 20)
    assert vol.spacing == pytest.approx((0.977, 0.977, 2.0), abs=1e-3)


def test_same_grid_has_one_tolerance():
    a = np.diag([1.0, 1.0, 2.0, 1.0])
    near, far = a.copy(), a.copy()
    near[0, 3] += GRID_ATOL_MM / 2
    far[0, 3] += GRID_ATOL_MM * 2
    assert same_grid(((4, 4, 4), a), ((4, 4, 4), near))
    assert not same_grid(((4, 4, 4), a), ((4, 4, 4), far))
    assert not same_grid(((4, 4, 4), a), ((4, 4, 5), a))
    check_same_grid(((4, 4, 4), near), ((4, 4, 4), a), "p.nii.gz", "q.nii.gz")
    with pytest.raises(DataError, match=r"p\.nii\.gz: mask affine differs from the affine of q\.nii\.gz"):
        check_same_grid(((4, 4, 4), far), ((4, 4, 4), a), "p.nii.gz", "q.nii.gz", "mask ")
    with pytest.raises(DataError, match=r"p\.nii\.gz: shape \(4, 4, 5\) differs from q\.nii\.gz shape"):
        check_same_grid(((4, 4, 5), a), ((4, 4, 4), a), "p.nii.gz", "q.nii.gz")


@pytest.mark.parametrize("labels, expected", [
    ({"background": 0, "liver": 1, "kidney_r": 2, "kidney_l": 3, "spleen": 4}, {1}),  # CHAOS MR
    ({"background": 0, "liver": 1, "tumour": 2}, {1, 2}),  # MSD / LiTS
    ({"0": "background", "1": "liver", "2": "cancer"}, {1, 2}),  # MSD Task03 dataset.json as shipped
    ({"background": 0, "spleen": 1, "kidney_right": 2, "gallbladder": 4, "liver": 5}, {5}),  # TotalSegmentator
    ({"background": 0, "Liver": 6, "Tumor": 7, "kidney_tumor": 8}, {6, 7}),  # another organ's tumour is not liver
    ({"background": 0, "liver": [1, 2], "lesion": 2}, {1, 2}),  # nnU-Net regions
])
def test_liver_labels_by_name(labels, expected):
    assert liver_labels_from_dataset_json({"labels": labels}) == expected
    assert liver_labels_from_dataset_json(labels) == expected


def test_liver_labels_from_file_and_clear_error(tmp_path, real_data):
    assert liver_labels_from_dataset_json(real_data / "chaos_t2" / "dataset.json") == {1}
    assert liver_labels_from_dataset_json(real_data / "chaos_t2") == {1}
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "vessel": 1, "tumour": 2}}))
    with pytest.raises(DataError, match=r"dataset\.json: no liver label.*\['background', 'tumour', 'vessel'\]"):
        liver_labels_from_dataset_json(path)
    path.write_text(json.dumps({"channel_names": {"0": "CT"}}))
    with pytest.raises(DataError, match=r"dataset\.json: declares no 'labels'"):
        liver_labels_from_dataset_json(path)


def test_liver_mask_spec_forms(tmp_path):
    label = np.array([0, 1, 2, 3, 5])
    assert liver_mask(label).tolist() == [False, True, True, True, True]
    assert liver_mask(label, {1, 2}).tolist() == [False, True, True, False, False]
    assert liver_mask(label, {"labels": {"liver": 5}}).tolist() == [False, False, False, False, True]
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "spleen": 2}}))
    assert liver_mask(label, tmp_path / "dataset.json").tolist() == [False, True, False, False, False]


def test_write_mask_atomic_uint8_keeps_geometry(tmp_path):
    affine = np.diag([-1.5, -1.5, 3.0, 1.0])
    src = nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), affine)
    src.set_qform(affine, code=2)
    src.set_sform(affine, code=4)
    nib.save(src, str(tmp_path / "img.nii.gz"))
    like = read_volume(tmp_path / "img.nii.gz")
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 2:4, 3] = True
    out = write_mask(tmp_path / "sub" / "m.nii.gz", mask, like)
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.uint8 and np.array_equal(np.asarray(back.dataobj), mask)
    assert np.allclose(back.affine, affine) and int(back.header["qform_code"]) == 2 and int(back.header["sform_code"]) == 4
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["m.nii.gz"]  # no temp file left
    with pytest.raises(DataError, match=r"bad\.nii\.gz: mask shape \(2, 2, 2\)"):
        write_mask(tmp_path / "bad.nii.gz", np.zeros((2, 2, 2)), like)
    assert not (tmp_path / "bad.nii.gz").exists()


def test_a_flipped_prediction_is_named_as_flipped_not_as_far_off(tmp_path, capsys):
    """Issue 27, item 6: the same voxels stored LPS instead of RAS is 'axes flipped', not '306 mm'."""
    import nibabel as nib

    from benchmark.scoring.evaluate import main

    ras = np.diag([1.5, 1.5, 3.0, 1.0])
    mask = np.zeros((12, 10, 4), np.uint8)
    mask[2:6, 3:8, 1:3] = 1
    lps = ras.copy()
    lps[:2, :2] *= -1
    lps[:2, 3] = [11 * 1.5, 9 * 1.5]  # voxel (0, 0) of the flipped grid is voxel (11, 9) of the other
    for name, affine, data in (("gt", ras, mask), ("pred", lps, mask[::-1, ::-1])):
        (tmp_path / name).mkdir()
        nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(tmp_path / name / "a.nii.gz"))
    assert main(["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'pred' / 'a.nii.gz'}: axes are flipped: stored LPS, ground truth " in err
    assert "is RAS (the same voxels in space, in another order); save it in RAS order" in err and " mm" not in err
    shifted = ras.copy()
    shifted[0, 3] += 5.0
    with pytest.raises(DataError, match="affine differs"):  # a real shift is still a shift
        check_same_grid(((12, 10, 4), shifted), ((12, 10, 4), ras), "p.nii.gz", "q.nii.gz")
