"""Masks on a DICOM series' grid, for the converters: NIfTI, NRRD and DICOM SEG files."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.files import DataError
from datamodules.dicom import LPS_TO_RAS, SEG_SOP_CLASS, DicomSeries, read_dicom_header
from datamodules.grid import align_to_grid
from datamodules.volumes import read_volume


def read_nrrd(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """NRRD volume → (array, RAS affine); understands LPS/RAS `space` and `space directions`."""
    import nrrd

    path = Path(path)
    try:
        data, header = nrrd.read(str(path))
    except Exception as exc:
        raise DataError(path, f"not a readable NRRD file ({exc})") from None
    if data.ndim != 3:
        raise DataError(path, f"expected a 3D mask, got shape {data.shape}")
    space = str(header.get("space", "")).lower()
    dirs = header.get("space directions")
    origin = header.get("space origin")
    if dirs is None or origin is None:
        raise DataError(path, "NRRD header lacks 'space directions'/'space origin': no geometry")
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(dirs, float).T
    affine[:3, 3] = np.asarray(origin, float)
    if space in ("left-posterior-superior", "lps"):
        affine = LPS_TO_RAS @ affine
    elif space not in ("right-anterior-superior", "ras"):
        raise DataError(path, f"unsupported NRRD space {space!r} (need LPS or RAS)")
    return np.asarray(data), affine


def read_dicom_seg(path: str | Path, series: DicomSeries) -> dict[str, np.ndarray]:
    """DICOM SEG → {segment label: bool mask on the series grid}; frames matched by position."""
    path = Path(path)
    ds = read_dicom_header(path)
    if str(getattr(ds, "SOPClassUID", "")) != SEG_SOP_CLASS:
        raise DataError(path, "not a DICOM Segmentation object (SOPClassUID "
                              f"{getattr(ds, 'SOPClassUID', '?')})")
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    nx, ny, nz = series.image.shape
    if frames.shape[1:] != (ny, nx):
        raise DataError(path, f"SEG frame size {frames.shape[1:]} does not match the series {ny}x{nx}")
    names = {int(s.SegmentNumber): str(getattr(s, "SegmentLabel", s.SegmentNumber))
             for s in ds.SegmentSequence}
    masks = {name: np.zeros((nx, ny, nz), bool) for name in names.values()}
    inv = np.linalg.inv(series.affine)
    uid_index = {uid: k for k, uid in enumerate(series.sop_uids)}
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        seg_no = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        k = None
        if "PlanePositionSequence" in item:
            ipp = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
            vox = inv @ (LPS_TO_RAS @ np.append(ipp, 1.0))
            if np.abs(vox[:2]).max() < 0.5 and abs(vox[2] - round(vox[2])) < 0.25:
                k = int(round(vox[2]))
        if k is None:
            try:
                uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                k = uid_index.get(str(uid))
            except (AttributeError, IndexError):
                k = None
        if k is None or not 0 <= k < nz:
            raise DataError(path, f"frame {f + 1} does not match any slice of the series")
        masks[names[seg_no]][:, :, k] |= frames[f].T.astype(bool)
    return masks


def read_mask(path: str | Path, shape, affine, series: DicomSeries | None = None) -> np.ndarray:
    """A label/mask file (NIfTI, NRRD or DICOM SEG) as an integer array on the image grid.

    For a SEG the result holds segment indices (1..n, in SegmentSequence order; a segment named
    "liver" is reported by `seg_liver_value`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "mask file does not exist")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        vol = read_volume(path, nan="error")
        return align_to_grid(np.asarray(vol.array), vol.affine, shape, affine, path)
    if name.endswith((".nrrd", ".nhdr")):
        data, naff = read_nrrd(path)
        return align_to_grid(data, naff, shape, affine, path)
    if series is None:
        raise DataError(path, "a DICOM SEG mask needs the DICOM series it refers to")
    masks = read_dicom_seg(path, series)
    out = np.zeros(shape, np.uint8)
    for value, m in enumerate(masks.values(), start=1):
        out[m] = value
    return out


def seg_liver_value(path: str | Path) -> int:
    """Index (as used by `read_mask`) of the SEG segment named like "liver"; 1 if only one segment."""
    ds = read_dicom_header(Path(path))
    labels = [str(getattr(s, "SegmentLabel", "")).lower() for s in ds.SegmentSequence]
    for i, lab in enumerate(labels, start=1):
        if "liver" in lab:
            return i
    if len(labels) == 1:
        return 1
    raise DataError(path, f"no segment named 'liver' among {labels}; pass --liver-labels")
