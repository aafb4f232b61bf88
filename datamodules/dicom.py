"""DICOM series → image + RAS affine, and masks (NIfTI, NRRD, DICOM SEG) on that image's grid.

Array convention (as NIfTI converters do): axis 0 = DICOM column, axis 1 = DICOM row, axis 2 =
slice sorted along the slice normal (ImageOrientationPatient × ImagePositionPatient), never by
file name or InstanceNumber. The affine maps voxel indices to RAS millimetres (DICOM is LPS).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datamodules.files import DataError
from datamodules.volumes import align_to_grid, read_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass
class DicomSeries:
    """A sorted DICOM series. `files[k]` is slice `k`; `order[k]` is its index in the input order."""

    image: np.ndarray  # float32 (X=columns, Y=rows, Z=slices), RescaleSlope/Intercept applied
    affine: np.ndarray  # 4x4 voxel → RAS mm
    files: list[Path]
    order: np.ndarray
    sop_uids: list[str] = field(default_factory=list)
    modality: str = ""


def _read_header(path: Path):
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


def read_dicom_series(source: str | Path | list, series: str | None = None) -> DicomSeries:
    """Read one DICOM series (a folder of any file names, or a list of files), sorted by position.
    A folder with several SeriesInstanceUIDs is an error unless `series` picks one.

    Callers pairing slices with per-file data (CHAOS PNG masks) use `order`: slice k came from
    input file `order[k]`.
    """
    import pydicom

    paths = _list_dicom_files(source)
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
    where = paths[0].parent if paths else Path(str(source))
    if not datasets:
        raise DataError(where, "no DICOM image files found")
    datasets, kept = _pick_series(datasets, kept, where, series)
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
    row_cos, col_cos = iop0[:3], iop0[3:]
    normal = np.cross(row_cos, col_cos)
    positions = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in datasets])
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    d_sorted = dist[order]
    if len(order) > 1:
        steps = np.diff(d_sorted)
        if np.any(steps < 1e-3):
            k = int(np.argmin(np.abs(steps)))
            raise DataError(kept[order[k + 1]], "two slices at the same position (duplicate files or "
                                                "several series in one folder)")
        if np.ptp(steps) > max(0.01, 0.05 * abs(np.median(steps))):
            raise DataError(where, f"irregular slice spacing {np.round(steps, 3).tolist()} mm: "
                                   "missing slices or mixed series")
        step = (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)
    else:
        ds = datasets[0]
        thick = float(getattr(ds, "SpacingBetweenSlices", 0) or getattr(ds, "SliceThickness", 0) or 1.0)
        step = normal * thick
    row_spacing, col_spacing = (float(v) for v in datasets[0].PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing  # axis 0 = column index, moves along the row direction
    lps[:3, 1] = col_cos * row_spacing  # axis 1 = row index
    lps[:3, 2] = step
    lps[:3, 3] = positions[order[0]]
    image = np.stack([_pixels(datasets[i], kept[i]).T for i in order], axis=-1)
    return DicomSeries(
        image=image.astype(np.float32),
        affine=LPS_TO_RAS @ lps,
        files=[kept[i] for i in order],
        order=np.asarray(order),
        sop_uids=[str(getattr(datasets[i], "SOPInstanceUID", "")) for i in order],
        modality=str(getattr(datasets[0], "Modality", "")),
    )


def series_volume(series: DicomSeries, dtype=None):
    """The series as a `Volume` ready to write (int16 when the values are integral and fit, else float32)."""
    from datamodules.volumes import Volume, spacing_from_affine

    data = series.image
    if dtype is None:
        integral = np.all(np.mod(data, 1) == 0) and data.min() >= -32768 and data.max() <= 32767
        dtype = np.int16 if integral else np.float32
    return Volume(data.astype(dtype), series.affine, spacing_from_affine(series.affine), series,
                  series.files[0].parent if series.files else Path("."))


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
    ds = _read_header(path)
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
    ds = _read_header(Path(path))
    labels = [str(getattr(s, "SegmentLabel", "")).lower() for s in ds.SegmentSequence]
    for i, lab in enumerate(labels, start=1):
        if "liver" in lab:
            return i
    if len(labels) == 1:
        return 1
    raise DataError(path, f"no segment named 'liver' among {labels}; pass --liver-labels")
