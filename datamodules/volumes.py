"""The one way in and out for volumes: read NIfTI / DICOM series, compare grids, pick the liver, write masks.

Every reader, converter, `predict`, `evaluate` and the runner go through here, so a volume has
one 4D rule, one geometry tolerance, one spacing (always from the affine) and one liver rule.
"""
from __future__ import annotations

import contextlib
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from common.files import DataError, atomic_path
from datamodules.dicom import DicomSeries, read_dicom_series

try:  # ISA-L's inflate/deflate: the same gzip streams, 2-5x faster than zlib (read 0.27 -> 0.13 s per CT)
    from isal import igzip as _gzip
except ImportError:  # a platform without its wheels
    import gzip as _gzip

GZIP_LEVEL = 1  # nibabel's default for .nii.gz: fast, and masks compress well anyway

NIFTI_SUFFIXES = (".nii.gz", ".nii")
MAX_VOXELS = 2**31  # a header declaring more (e.g. 2048 x 2048 x 512) is refused before allocating
NAN_POLICIES = ("error", "fill")  # non-finite voxels: refuse the file, or replace them by the minimum finite value


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
    """nibabel's proxy image, after the checks that must come before any voxel is allocated."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for truncated/corrupt files
        raise DataError(path, f"unreadable NIfTI ({type(exc).__name__}: {exc})") from exc
    _check_declared_size(img, path)
    _check_spacing(img, path)
    return img


def _check_declared_size(img, path: Path) -> None:
    """Header-declared dimensions against a sane maximum and against the bytes in the file
    (`.nii`: file size; `.nii.gz`: the gzip ISIZE trailer, the uncompressed size mod 2**32)."""
    shape = tuple(int(s) for s in img.shape)
    if any(s <= 0 for s in shape):
        raise DataError(path, f"header declares an empty volume, shape {shape}")
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > MAX_VOXELS:
        raise DataError(path, f"header declares {voxels:,} voxels (shape {shape}), more than the "
                              f"{MAX_VOXELS:,} a scan can have: corrupt header")
    header = img.header
    needed = int(getattr(img.dataobj, "offset", 0)) + voxels * int(np.dtype(header.get_data_dtype()).itemsize)
    if str(path).endswith(".gz"):
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", fh.read(4))[0]
        if needed < 2**32 and isize < needed:
            raise DataError(path, f"header declares {needed:,} bytes (shape {shape}) but the gzip stream "
                                  f"holds {isize:,}: truncated file or wrong header")
    else:
        have = os.path.getsize(path)
        if have < needed:
            raise DataError(path, f"header declares {needed:,} bytes (shape {shape}) but the file holds "
                                  f"{have:,}: truncated file or wrong header")


def check_stream(path: str | Path) -> None:
    """A `.nii.gz` read to its end without keeping the voxels: gzip's own length and CRC find a
    truncated or damaged file that the header checks cannot (a `.nii`'s size is checked exactly)."""
    if not str(path).endswith(".gz"):
        return
    try:
        with _gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except (OSError, EOFError) as exc:
        raise DataError(path, f"truncated or damaged gzip stream ({type(exc).__name__}: {exc})") from None


def _check_spacing(img, path: Path) -> None:
    """Zero, negative or non-finite voxel sizes make every mm wrong. nibabel silently turns a zero
    pixdim into 1 mm and a negative one into its absolute value, so the raw header is read too."""
    import nibabel as nib
    from nibabel.openers import Opener

    with Opener(str(path)) as fh:
        raw = type(img.header).from_fileobj(fh, check=False) if isinstance(img.header, nib.Nifti1Header) else img.header
    pixdim = np.asarray(raw["pixdim"][1:4], dtype=float) if "pixdim" in raw else np.ones(3)
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim == 0) or (int(raw.get("sform_code", 0)) == 0 and np.any(pixdim < 0)):
        raise DataError(path, f"zero or negative voxel spacing in the header (pixdim {pixdim.tolist()})")
    spacing = np.asarray(spacing_from_affine(img.affine))
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 1e-6)):
        raise DataError(path, f"zero voxel spacing in the affine ({spacing.tolist()} mm)")


def _spatial_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """The 4D rule: (X, Y, Z) or (X, Y, Z, 1); anything else is refused."""
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(path, f"expected a 3D volume, got shape {tuple(shape)} ({len(shape)}D is not supported)")
    return tuple(int(s) for s in shape)


def nan_policy(policy: str | None = None) -> str:
    """The policy for non-finite voxels: `policy`, else $LIVERBENCH_NAN_POLICY (set by `--nan-policy`,
    so DataLoader workers see it too), else "error"."""
    policy = policy or os.environ.get("LIVERBENCH_NAN_POLICY") or "error"
    if policy not in NAN_POLICIES:
        raise DataError("--nan-policy", f"unknown policy {policy!r} (choose {', '.join(NAN_POLICIES)})")
    return policy


@contextlib.contextmanager
def nan_policy_env(policy: str | None):
    """`--nan-policy` for the duration of a command (an environment variable, so DataLoader worker
    processes inherit it); restored afterwards."""
    old = os.environ.get("LIVERBENCH_NAN_POLICY")
    if policy:
        os.environ["LIVERBENCH_NAN_POLICY"] = nan_policy(policy)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LIVERBENCH_NAN_POLICY", None)
        else:
            os.environ["LIVERBENCH_NAN_POLICY"] = old


def check_finite(array: np.ndarray, path: str | Path, policy: str | None = None) -> np.ndarray:
    """NaN/Inf voxels: a `DataError` ("error") or replaced by the minimum finite value ("fill", warned)."""
    if not np.issubdtype(array.dtype, np.floating):
        return array
    bad = ~np.isfinite(array)
    if not bad.any():
        return array
    n = int(bad.sum())
    if nan_policy(policy) == "error" or n == array.size:
        raise DataError(path, f"{n:,} NaN/Inf voxels of {array.size:,}"
                              + ("" if n == array.size else " (use --nan-policy fill to replace them)"))
    fill = float(np.min(array[~bad]))
    warnings.warn(f"{path}: {n:,} NaN/Inf voxels replaced by the minimum finite value {fill:g} (--nan-policy fill)",
                  stacklevel=2)
    array = np.array(array, copy=True)
    array[bad] = fill
    return array


def read_geometry(path: str | Path) -> Volume:
    """Shape, affine and spacing from the NIfTI header only (`array` is None): no voxel decoding."""
    path = Path(path)
    img = _open_nifti(path)
    affine = np.asarray(img.affine, dtype=np.float64)
    return Volume(None, affine, spacing_from_affine(affine), img.header, path, _spatial_shape(img.shape, path))


def read_volume(path: str | Path, dtype=None, series: str | None = None, nan: str | None = None) -> Volume:
    """A NIfTI file or a DICOM series folder as a validated `Volume` (`dtype` None keeps the stored
    type; `series` picks one SeriesInstanceUID of a folder holding several; `nan` see `check_finite`)."""
    path = Path(path)
    if path.is_dir():
        s = read_dicom_series(path, series=series)
        spacing = np.asarray(spacing_from_affine(s.affine))
        if not (np.all(np.isfinite(spacing)) and np.all(spacing > 1e-6)):
            raise DataError(path, f"zero voxel spacing ({spacing.tolist()} mm): PixelSpacing or slice positions")
        array = check_finite(s.image if dtype is None else s.image.astype(dtype), path, nan)
        return Volume(array, s.affine, spacing_from_affine(s.affine), s, path)
    if not path.is_file():
        raise DataError(path, "does not exist")
    if not is_nifti(path):
        raise DataError(path, "expected a .nii/.nii.gz file or a DICOM series folder")
    img = _open_nifti(path)
    shape = _spatial_shape(img.shape, path)
    try:
        if str(path).endswith(".gz"):  # inflate the whole stream at once (nibabel reads it through GzipFile)
            img = type(img).from_bytes(_gzip.decompress(path.read_bytes()))
        array = np.asanyarray(img.dataobj) if dtype is None else np.asarray(img.dataobj, dtype=dtype)
    except Exception as exc:
        raise DataError(path, f"unreadable NIfTI ({type(exc).__name__}: {exc})") from exc
    array = check_finite(array.reshape(shape), path, nan)
    affine = np.asarray(img.affine, dtype=np.float64)
    return Volume(array, affine, spacing_from_affine(affine), img.header, path)


def series_volume(series: DicomSeries, dtype=None) -> Volume:
    """A DICOM series as a `Volume` ready to write (int16 when the values are integral and fit, else float32)."""
    data = series.image
    if dtype is None:
        integral = np.all(np.mod(data, 1) == 0) and data.min() >= -32768 and data.max() <= 32767
        dtype = np.int16 if integral else np.float32
    return Volume(data.astype(dtype), series.affine, spacing_from_affine(series.affine), series,
                  series.files[0].parent if series.files else Path("."))


@dataclass
class Scan:
    """A scan as `predict` reads it: `image` (X, Y, Z) float32, `affine` voxel -> RAS mm, and the
    `Volume` it came from (its header is kept for writing the mask). Here, not next to the torch
    code, so `liverbench predict` can read the scan while torch is still being imported."""

    image: np.ndarray
    affine: np.ndarray
    path: Path
    volume: Any = None


def read_scan(path: str | Path, series: str | None = None) -> Scan:
    """A NIfTI file or a DICOM series folder (sorted by position, RAS affine), via `read_volume`
    (validated there: NaN/Inf per --nan-policy, spacing, size, one DICOM series or `series`)."""
    path = Path(path)
    if not path.is_dir() and path.is_file() and not is_nifti(path):
        raise DataError(path, "input must be a .nii/.nii.gz file or a DICOM series folder")
    if not path.exists():
        raise DataError(path, "input does not exist")
    vol = read_volume(path, dtype=np.float32, series=series)
    return Scan(vol.array, vol.affine, path, vol)


def write_mask(path: str | Path, mask: np.ndarray, like) -> Path:
    """Write `mask` as uint8 NIfTI on the grid of `like` (a `Volume` or an affine), atomically."""
    return write_volume(path, np.asarray(mask, dtype=np.uint8), like)  # no copy when already uint8


def write_volume(path: str | Path, array: np.ndarray, like) -> Path:
    """Write `array` as NIfTI on the grid of `like` (a `Volume` or an affine), atomically; the
    qform/sform codes of a NIfTI `like` are kept so readers see identical geometry."""
    import nibabel as nib

    array = np.asarray(array)  # any layout: nibabel writes X-fastest, a straight copy for a NIfTI-ordered array
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
    """Save a nibabel image atomically; `.nii.gz` as one gzip member with mtime 0 (same image, same bytes)."""
    import nibabel as nib

    gz = str(path).endswith(".gz")
    with atomic_path(path, suffix=".nii.gz" if gz else ".nii") as tmp:
        if gz and isinstance(img, nib.Nifti1Image):  # Nifti2Image is a subclass
            Path(tmp).write_bytes(_gzip.compress(img.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0))  # mtime 0: same bytes
        else:
            nib.save(img, str(tmp))
    return Path(path)
