"""DICOM series → image + RAS affine (the masks that refer to a series: `datamodules.convert.masks`).

Array convention (as NIfTI converters do): axis 0 = DICOM column, axis 1 = DICOM row, axis 2 =
slice sorted along the slice normal (ImageOrientationPatient × ImagePositionPatient), never by
file name or InstanceNumber. The affine maps voxel indices to RAS millimetres (DICOM is LPS).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.files import DataError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"  # a DICOM SEG: never a slice of the image series


@dataclass
class DicomSeries:
    """A sorted DICOM series. `files[k]` is slice `k`; `order[k]` is its index in the input order."""

    image: np.ndarray  # float32 (X=columns, Y=rows, Z=slices), RescaleSlope/Intercept applied
    affine: np.ndarray  # 4x4 voxel → RAS mm
    files: list[Path]
    order: np.ndarray
    sop_uids: list[str] = field(default_factory=list)
    modality: str = ""


def read_dicom_header(path: Path):
    """One DICOM file's dataset (pixels included), or a `DataError` naming the file."""
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=False)
    except Exception as exc:  # pydicom raises several types for non-DICOM files
        raise DataError(path, f"not a readable DICOM file ({exc})") from None


def _list_dicom_files(source: str | Path | list) -> list[Path]:
    if isinstance(source, (list, tuple)):
        return [Path(p) for p in source]
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(folder, "DICOM series folder does not exist")
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")
             and p.name.upper() != "DICOMDIR"]
    if not files:
        raise DataError(folder, "no files in DICOM series folder")
    return files


def _pixels(ds, path: Path) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise DataError(path, f"cannot decode pixel data (transfer syntax "
                              f"{getattr(ds.file_meta, 'TransferSyntaxUID', '?')}): {exc}") from None
    if arr.ndim != 2:
        raise DataError(path, f"expected one 2D frame per file, got pixel array shape {arr.shape}")
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    return arr.astype(np.float32) * slope + intercept


def _pick_series(datasets: list, kept: list, where: Path, series: str | None) -> tuple[list, list]:
    """One SeriesInstanceUID: refuse a folder mixing several unless `series` names one of them."""
    groups: dict[str, list[int]] = {}
    for i, ds in enumerate(datasets):
        groups.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append(i)
    if series is None and len(groups) == 1:
        return datasets, kept
    listing = "; ".join(f"{uid or '(no UID)'} ({getattr(datasets[idx[0]], 'SeriesDescription', '') or 'no description'}, "
                        f"{len(idx)} slices)" for uid, idx in groups.items())
    if series is None:
        raise DataError(where, f"holds {len(groups)} DICOM series: {listing}; pick one with --series UID")
    if series not in groups:
        raise DataError(where, f"no DICOM series {series!r} here; series present: {listing}")
    return [datasets[i] for i in groups[series]], [kept[i] for i in groups[series]]


def _read_image_files(paths: list[Path]) -> tuple[list, list[Path]]:
    """The image slices among `paths` (datasets, their files): stray non-DICOM files and SEGs are skipped."""
    import pydicom

    datasets, kept = [], []
    for p in paths:
        try:
            ds = pydicom.dcmread(str(p))
        except pydicom.errors.InvalidDicomError:
            continue  # stray non-DICOM file (README, thumbnails) next to the series
        except Exception as exc:
            raise DataError(p, f"not a readable DICOM file ({exc})") from None
        if "PixelData" not in ds or getattr(ds, "SOPClassUID", "") == SEG_SOP_CLASS:
            continue
        datasets.append(ds)
        kept.append(p)
    return datasets, kept


def _check_slices(datasets: list, kept: list[Path]) -> np.ndarray:
    """Every slice placed in space, with one orientation and one size; returns ImageOrientationPatient."""
    for ds, p in zip(datasets, kept):
        for tag in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
            if tag not in ds:
                raise DataError(p, f"missing {tag}: cannot place the slice in space")
    iop0 = np.asarray(datasets[0].ImageOrientationPatient, float)
    shape0 = (datasets[0].Rows, datasets[0].Columns)
    for ds, p in zip(datasets, kept):
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, float), iop0, atol=1e-4):
            raise DataError(p, "ImageOrientationPatient differs from the other slices (several series "
                               "in one folder?)")
        if (ds.Rows, ds.Columns) != shape0:
            raise DataError(p, f"size {ds.Rows}x{ds.Columns} differs from {shape0[0]}x{shape0[1]} "
                               "(several series in one folder?)")
    return iop0


def _slice_order(datasets: list, kept: list[Path], normal: np.ndarray, where: Path) -> tuple[np.ndarray, np.ndarray]:
    """(order along the slice normal, the step vector between slices); refuses duplicates and gaps."""
    positions = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in datasets])
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    if len(order) == 1:
        ds = datasets[0]
        thick = float(getattr(ds, "SpacingBetweenSlices", 0) or getattr(ds, "SliceThickness", 0) or 1.0)
        return order, normal * thick
    steps = np.diff(dist[order])
    if np.any(steps < 1e-3):
        k = int(np.argmin(np.abs(steps)))
        raise DataError(kept[order[k + 1]], "two slices at the same position (duplicate files or "
                                            "several series in one folder)")
    if np.ptp(steps) > max(0.01, 0.05 * abs(np.median(steps))):
        raise DataError(where, f"irregular slice spacing {np.round(steps, 3).tolist()} mm: "
                               "missing slices or mixed series")
    return order, (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)


def read_dicom_series(source: str | Path | list, series: str | None = None) -> DicomSeries:
    """Read one DICOM series (a folder of any file names, or a list of files), sorted by position.
    A folder with several SeriesInstanceUIDs is an error unless `series` picks one.

    Callers pairing slices with per-file data (CHAOS PNG masks) use `order`: slice k came from
    input file `order[k]`.
    """
    paths = _list_dicom_files(source)
    datasets, kept = _read_image_files(paths)
    where = paths[0].parent if paths else Path(str(source))
    if not datasets:
        raise DataError(where, "no DICOM image files found")
    datasets, kept = _pick_series(datasets, kept, where, series)
    iop0 = _check_slices(datasets, kept)
    row_cos, col_cos = iop0[:3], iop0[3:]
    order, step = _slice_order(datasets, kept, np.cross(row_cos, col_cos), where)
    row_spacing, col_spacing = (float(v) for v in datasets[0].PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing  # axis 0 = column index, moves along the row direction
    lps[:3, 1] = col_cos * row_spacing  # axis 1 = row index
    lps[:3, 2] = step
    lps[:3, 3] = np.asarray(datasets[order[0]].ImagePositionPatient, float)
    image = np.stack([_pixels(datasets[i], kept[i]).T for i in order], axis=-1)
    return DicomSeries(
        image=image.astype(np.float32),
        affine=LPS_TO_RAS @ lps,
        files=[kept[i] for i in order],
        order=np.asarray(order),
        sop_uids=[str(getattr(datasets[i], "SOPInstanceUID", "")) for i in order],
        modality=str(getattr(datasets[0], "Modality", "")),
    )
