"""The one way in and out for volumes: read NIfTI / DICOM series, compare grids, pick the liver, write masks.

Every reader, converter, `predict`, `evaluate` and the runner go through here, so a volume has
one 4D rule, one geometry tolerance, one spacing (always from the affine) and one liver rule.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from datamodules.files import DataError, atomic_path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
GRID_ATOL_MM = 1e-3  # the one "same grid" tolerance: max |affine difference| in mm (header round-off)
LIVER_NAME = re.compile(r"liver", re.IGNORECASE)
LESION_NAME = re.compile(r"(lesion|tumou?r|cancer)s?", re.IGNORECASE)  # a bare lesion class of the liver


@dataclass
class Volume:
    """A volume as stored: `array` (X, Y, Z) in file order, `affine` voxel -> RAS mm,
    `spacing` the voxel size along each array axis (from the affine), `header` (nibabel header
    or the first DICOM dataset), `source` the file or DICOM folder it came from."""

    array: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, float, float]
    header: Any
    source: Path
    shape: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.shape and self.array is not None:
            self.shape = tuple(self.array.shape)


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along each array axis: the column norms of the affine (never header zooms)."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0))


def _open_nifti(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for truncated/corrupt files
        raise DataError(path, f"unreadable NIfTI ({type(exc).__name__}: {exc})") from exc


def _spatial_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """The 4D rule: (X, Y, Z) or (X, Y, Z, 1); anything else is refused."""
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(path, f"expected a 3D volume, got shape {tuple(shape)}")
    return tuple(int(s) for s in shape)


def read_geometry(path: str | Path) -> Volume:
    """Shape, affine and spacing from the NIfTI header only (`array` is None): no voxel decoding."""
    path = Path(path)
    img = _open_nifti(path)
    affine = np.asarray(img.affine, dtype=np.float64)
    return Volume(None, affine, spacing_from_affine(affine), img.header, path, _spatial_shape(img.shape, path))


def read_volume(path: str | Path, dtype=None) -> Volume:
    """A NIfTI file or a DICOM series folder as a `Volume` (`dtype` None keeps the stored type)."""
    path = Path(path)
    if path.is_dir():
        from datamodules.dicom import read_dicom_series

        series = read_dicom_series(path)
        array = series.image if dtype is None else series.image.astype(dtype)
        return Volume(array, series.affine, spacing_from_affine(series.affine), series, path)
    if not path.is_file():
        raise DataError(path, "does not exist")
    if not is_nifti(path):
        raise DataError(path, "expected a .nii/.nii.gz file or a DICOM series folder")
    img = _open_nifti(path)
    shape = _spatial_shape(img.shape, path)
    try:
        array = np.asanyarray(img.dataobj) if dtype is None else np.asarray(img.dataobj, dtype=dtype)
    except Exception as exc:
        raise DataError(path, f"unreadable NIfTI ({type(exc).__name__}: {exc})") from exc
    array = array.reshape(shape)
    affine = np.asarray(img.affine, dtype=np.float64)
    return Volume(array, affine, spacing_from_affine(affine), img.header, path)


def _grid(v) -> tuple[tuple[int, ...], np.ndarray]:
    if isinstance(v, Volume):
        return tuple(v.shape), np.asarray(v.affine, float)
    shape, affine = v
    return tuple(int(s) for s in shape), np.asarray(affine, float)


def same_grid(a, b) -> bool:
    """True when two volumes (or `(shape, affine)` pairs) share one voxel grid within GRID_ATOL_MM."""
    (sa, aa), (sb, ab) = _grid(a), _grid(b)
    return sa == sb and bool(np.allclose(aa, ab, rtol=0.0, atol=GRID_ATOL_MM))


def check_same_grid(a, b, path: str | Path, other: str | Path, what: str = "") -> None:
    """Raise `DataError` naming `path` (volume `a`) when it is not on `other`'s grid (`b`):
    the one geometry check. `what` prefixes the message ("label ", "mask ")."""
    (sa, aa), (sb, ab) = _grid(a), _grid(b)
    if sa != sb:
        raise DataError(path, f"{what}shape {sa} differs from {other} shape {sb}")
    if not same_grid(a, b):
        raise DataError(path, f"{what}affine differs from the affine of {other} by up to "
                              f"{np.abs(aa - ab).max():.3g} mm (tolerance {GRID_ATOL_MM} mm):\n"
                              f"{np.round(aa, 4)}\nvs\n{np.round(ab, 4)}")


def orientation(affine: np.ndarray) -> str:
    """Axis codes of an affine, e.g. "RAS" or "LPS"."""
    import nibabel as nib

    return "".join(nib.aff2axcodes(np.asarray(affine)))


def ras_spacing(affine: np.ndarray, spacing) -> tuple[float, ...]:
    """Voxel spacing in RAS axis order (x, y, z), the order `Spacingd` sees after `Orientationd("RAS")`:
    a sagittal or coronal file stores its axes in another order."""
    import nibabel as nib

    axes = nib.io_orientation(np.asarray(affine))[:, 0].astype(int)
    out = [0.0, 0.0, 0.0]
    for file_axis, ras_axis in enumerate(axes):
        out[ras_axis] = float(spacing[file_axis])
    return tuple(out)


def align_to_grid(data: np.ndarray, affine: np.ndarray, ref_shape, ref_affine, path) -> np.ndarray:
    """Reorder axes/flips of `data` so it lies on the reference grid; refuse a different grid."""
    import nibabel.orientations as nio

    transform = nio.ornt_transform(nio.io_orientation(affine), nio.io_orientation(ref_affine))
    out = nio.apply_orientation(data, transform)
    new_affine = affine @ nio.inv_ornt_aff(transform, data.shape)
    if tuple(out.shape) != tuple(ref_shape):
        raise DataError(path, f"mask shape {tuple(out.shape)} (after reorientation) does not match the "
                              f"image shape {tuple(ref_shape)}")
    if not same_grid((out.shape, new_affine), (ref_shape, ref_affine)):
        raise DataError(path, "mask geometry (affine) does not match the image: max difference "
                              f"{np.abs(new_affine - np.asarray(ref_affine)).max():.3g} mm (tolerance {GRID_ATOL_MM} mm)")
    return np.ascontiguousarray(out)


def parse_labels(meta: dict[str, Any], path: str | Path = "dataset.json") -> dict[str, list[int]]:
    """Label name -> label values, from nnU-Net (`{"liver": 1}` or regions `{"liver": [1, 2]}`)
    or MSD (`{"1": "liver"}`) style."""
    labels = meta.get("labels", {})
    if not isinstance(labels, dict):
        raise DataError(path, "'labels' must be an object")
    out: dict[str, list[int]] = {}
    for key, value in labels.items():
        if isinstance(value, str) and re.fullmatch(r"-?\d+", str(key)):  # MSD: "1": "liver"
            out[value] = [int(key)]
        elif isinstance(value, bool):
            raise DataError(path, f"label {key!r}: expected an int or a list of ints, got {value!r}")
        elif isinstance(value, int):
            out[str(key)] = [value]
        elif isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            out[str(key)] = [int(v) for v in value]
        else:
            raise DataError(path, f"label {key!r}: expected an int or a list of ints, got {value!r}")
    return out


def liver_labels_from_dataset_json(source: str | Path | Mapping) -> set[int]:
    """Label values that are liver, by name from dataset.json `labels`: every label whose name
    contains "liver" plus bare lesion classes ("lesion", "tumour", "tumor", "cancer"), any case.
    `source`: a dataset.json path, a dataset folder, the parsed dict, or its `labels` dict."""
    path: Any = "dataset.json"
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            path = path / "dataset.json"
        try:
            meta = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(path, f"not readable JSON ({exc})") from exc
    else:
        meta = source
    if not isinstance(meta, Mapping):
        raise DataError(path, "expected a JSON object")
    if "labels" not in meta:
        if any(k in meta for k in ("channel_names", "modality", "numTraining", "file_ending", "name")):
            raise DataError(path, "declares no 'labels': cannot tell which label is the liver")
        meta = {"labels": meta}  # the labels dict itself
    labels = parse_labels(dict(meta), path)
    liver = {v for name, values in labels.items() if LIVER_NAME.search(name) for v in values}
    if not liver:
        raise DataError(path, f"no liver label: none of the label names {sorted(labels)} contains 'liver'; "
                              "pass the liver label values explicitly (e.g. --liver-labels 1,2)")
    liver |= {v for name, values in labels.items() if LESION_NAME.fullmatch(name.strip()) for v in values}
    liver.discard(0)
    return liver


def resolve_liver_labels(spec) -> set[int] | None:
    """`spec` as a set of label values: None stays None (every label > 0); ints are taken as they
    are; a dataset.json path/folder or dict is resolved by label name."""
    if spec is None:
        return None
    if isinstance(spec, (str, Path, Mapping)):
        return liver_labels_from_dataset_json(spec)
    values = set()
    for v in spec:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise DataError("liver labels", f"expected integer label values, got {v!r}")
        values.add(int(v))
    return values


def liver_mask(label: np.ndarray, spec=None) -> np.ndarray:
    """Boolean liver mask of a label map. `spec`: label values (e.g. {1, 2}), a dataset.json
    (path, folder or dict) to resolve by name, or None = every label > 0."""
    label = np.asarray(label)
    values = resolve_liver_labels(spec)
    if values is None:
        return label > 0
    return np.isin(label, np.asarray(sorted(values)))


def write_mask(path: str | Path, mask: np.ndarray, like) -> Path:
    """Write `mask` as uint8 NIfTI on the grid of `like` (a `Volume` or an affine), atomically."""
    return write_volume(path, np.asarray(mask).astype(np.uint8), like)


def write_volume(path: str | Path, array: np.ndarray, like) -> Path:
    """Write `array` as NIfTI on the grid of `like` (a `Volume` or an affine), atomically; the
    qform/sform codes of a NIfTI `like` are kept so readers see identical geometry."""
    import nibabel as nib

    array = np.ascontiguousarray(array)
    affine = np.asarray(like.affine if isinstance(like, Volume) else like, dtype=np.float64)
    header = like.header if isinstance(like, Volume) else None
    if isinstance(like, Volume) and tuple(array.shape) != tuple(like.shape):
        raise DataError(path, f"mask shape {tuple(array.shape)} != shape {tuple(like.shape)} of {like.source}")
    codes = (1, 1)
    if isinstance(header, nib.nifti1.Nifti1Header):
        codes = (int(header["qform_code"]) or 1, int(header["sform_code"]) or 1)
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=codes[0])
    img.set_sform(affine, code=codes[1])
    return save_nifti(img, path)
def save_nifti(img, path: str | Path) -> Path:
    """Save a nibabel image atomically (keeps the `.nii.gz` suffix so nibabel compresses)."""
    import nibabel as nib

    with atomic_path(path, suffix=".nii.gz" if str(path).endswith(".nii.gz") else ".nii") as tmp:
        nib.save(img, str(tmp))
    return Path(path)
