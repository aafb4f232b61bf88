"""One DICOM series + its mask (NIfTI, NRRD or DICOM SEG) → one case; appends to DST."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.files import DataError
from datamodules.convert.dataset_writer import binarize, DatasetWriter
from datamodules.convert.masks import read_mask, seg_liver_value
from datamodules.dicom import read_dicom_series
from datamodules.volumes import series_volume


def _is_seg(path: Path) -> bool:
    return not path.name.lower().endswith((".nii", ".nii.gz", ".nrrd", ".nhdr"))


def convert(src: str | Path, dst: str | Path, mask: str | Path | None = None, case: str | None = None,
            modality: str | None = None, liver_labels: list[int] | None = None, series: str | None = None,
            **_) -> Path:
    """`modality` ct|mri overrides the DICOM Modality tag; `liver_labels` picks values of the mask
    (default: every value > 0; a SEG's segment named "liver")."""
    if mask is None:
        raise DataError(src, "the dicom format needs --mask FILE (NIfTI, NRRD or DICOM SEG)")
    src, mask = Path(src), Path(mask)
    series = read_dicom_series(src, series=series)
    channel = (modality or {"CT": "ct", "MR": "mri"}.get(series.modality.upper(), "")).lower()
    if channel not in ("ct", "mri"):
        raise DataError(src, f"DICOM Modality {series.modality!r}: pass --modality ct|mri")
    labels = read_mask(mask, series.image.shape, series.affine, series)
    if liver_labels is None and _is_seg(mask):
        liver_labels = [seg_liver_value(mask)]
    liver = binarize(labels, liver_labels, mask)
    writer = DatasetWriter(dst, channel, name="DICOM", append=True)
    name = case or src.resolve().name
    writer.add(name, series_volume(series), liver)
    print(f"  {name}: {series.image.shape}, {int(np.sum(liver))} liver voxels", flush=True)
    return writer.finish(source="DICOM series")
