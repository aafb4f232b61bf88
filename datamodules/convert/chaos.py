"""CHAOS (CT and MR): DICOM slices + PNG ground truth per slice.

The PNG of slice k belongs to the k-th DICOM file in natural file-name order (the organisers'
rule), not to the k-th slice by position. We read the DICOM files in name order, sort them by
position for a correct affine, and reorder the PNG stack with the same permutation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.files import DataError
from datamodules.convert.dataset_writer import DatasetWriter, natural_key, visible
from datamodules.dicom import read_dicom_series
from datamodules.volumes import series_volume

MR_LIVER_BAND = (55, 70)  # MR PNG grey values: liver 63, kidneys 126/189, spleen 252
MODALITIES = ("ct", "t1in", "t1out", "t2")


def find_train_sets(src: Path) -> Path:
    """SRC may be `Train_Sets`, its parent, or the unzipped `CHAOS_Train_Sets` folder."""
    for cand in (src, src / "Train_Sets", src / "CHAOS_Train_Sets" / "Train_Sets", src / "CHAOS_Train_Sets"):
        if (cand / "CT").is_dir() or (cand / "MR").is_dir():
            return cand
    raise DataError(src, "expected CHAOS Train_Sets/ with CT/ and/or MR/ patient folders")


def read_png_mask(path: Path, mr: bool) -> np.ndarray:
    """One ground-truth PNG → bool liver mask (CT: nonzero; MR: grey band 55–70)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L") if im.mode not in ("1", "L", "I", "I;16") else im)
    except Exception as exc:
        raise DataError(path, f"not a readable PNG ({exc})") from None
    if arr.dtype == bool:
        return arr
    if mr:
        return (arr >= MR_LIVER_BAND[0]) & (arr <= MR_LIVER_BAND[1])
    return arr > 0


def convert_series(dicom_dir: Path, ground_dir: Path, mr: bool):
    """(Volume, uint8 mask) for one CHAOS series, slices sorted by position."""
    files = sorted(visible(p for p in dicom_dir.iterdir() if p.is_file()), key=natural_key)
    pngs = sorted(visible(ground_dir.glob("*.png")), key=natural_key)
    if not files:
        raise DataError(dicom_dir, "no DICOM files")
    if len(files) != len(pngs):
        raise DataError(ground_dir, f"{len(pngs)} ground-truth PNGs for {len(files)} DICOM files in {dicom_dir}")
    series = read_dicom_series(files)
    if len(series.files) != len(files):
        raise DataError(dicom_dir, f"only {len(series.files)} of {len(files)} files are DICOM images")
    nx, ny, _ = series.image.shape
    slices = []
    for k, name_index in enumerate(series.order):
        m = read_png_mask(pngs[name_index], mr)
        if m.shape != (ny, nx):
            raise DataError(pngs[name_index], f"PNG size {m.shape} != DICOM {ny}x{nx} ({files[name_index].name})")
        slices.append(m.T)
    mask = np.stack(slices, axis=-1).astype(np.uint8)
    if not mask.any():
        raise DataError(ground_dir, "ground truth has no liver pixels")
    return series_volume(series), mask


def _mr_sources(patient: Path, modality: str) -> tuple[Path, Path]:
    if modality == "t2":
        return patient / "T2SPIR" / "DICOM_anon", patient / "T2SPIR" / "Ground"
    phase = "InPhase" if modality == "t1in" else "OutPhase"
    return patient / "T1DUAL" / "DICOM_anon" / phase, patient / "T1DUAL" / "Ground"


def convert(src: str | Path, dst: str | Path, modality: str | None = "ct", **_) -> Path:
    """`modality`: ct, or a comma list of t1in,t1out,t2 (MR sequences share one dataset)."""
    wanted = [m.strip().lower() for m in (modality or "ct").split(",") if m.strip()]
    bad = [m for m in wanted if m not in MODALITIES]
    if bad or ("ct" in wanted and len(wanted) > 1):
        raise DataError(src, f"CHAOS --modality must be ct or a list of t1in,t1out,t2 (got {modality!r})")
    root = find_train_sets(Path(src))
    if wanted == ["ct"]:
        patients = sorted(visible(p for p in (root / "CT").glob("*") if p.is_dir()), key=natural_key)
        if not patients:
            raise DataError(root / "CT", "no CT patient folders")
        writer = DatasetWriter(dst, "CT", name="CHAOS_CT")
        for p in patients:
            img, mask = convert_series(p / "DICOM_anon", p / "Ground", mr=False)
            writer.add(f"chaos_ct_{p.name}", img, mask)
            print(f"  chaos_ct_{p.name}", flush=True)
        return writer.finish(source="CHAOS CT", modality="ct")
    patients = sorted(visible(p for p in (root / "MR").glob("*") if p.is_dir()), key=natural_key)
    if not patients:
        raise DataError(root / "MR", "no MR patient folders")
    writer = DatasetWriter(dst, "MRI", name="CHAOS_MR")
    for p in patients:
        for m in wanted:
            dicom_dir, ground = _mr_sources(p, m)
            img, mask = convert_series(dicom_dir, ground, mr=True)
            case = f"chaos_{p.name}_{m}"
            writer.add(case, img, mask, patient=f"chaos_{p.name}")
            print(f"  {case}", flush=True)
    return writer.finish(source="CHAOS MR", modality=",".join(wanted))
