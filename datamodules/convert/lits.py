"""LiTS (CT): `volume-N.nii` / `segmentation-N.nii` anywhere under SRC (labels 1 liver, 2 tumour)."""
from __future__ import annotations

import re
from pathlib import Path

from common.files import DataError
from datamodules.convert.dataset_writer import binarize, DatasetWriter, load_label_on_image, visible

VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")


def convert(src: str | Path, dst: str | Path, liver_labels: list[int] | None = None, **_) -> Path:
    src = Path(src)
    volumes = {}
    for p in visible(src.rglob("volume-*.nii*")):
        m = VOLUME.match(p.name)
        if m:
            volumes[int(m.group(1))] = p
    if not volumes:
        raise DataError(src, "no LiTS volume-N.nii files found")
    segs = {}
    for p in visible(src.rglob("segmentation-*.nii*")):
        m = re.match(r"^segmentation-(\d+)\.nii(\.gz)?$", p.name)
        if m:
            segs[int(m.group(1))] = p
    writer = DatasetWriter(dst, "CT", name="LiTS")
    for n in sorted(volumes):
        if n not in segs:
            raise DataError(volumes[n], f"segmentation-{n}.nii is missing")
        mask = binarize(load_label_on_image(segs[n], volumes[n]), liver_labels or [1, 2], segs[n])
        case = f"lits_{n:03d}"
        writer.add(case, volumes[n], mask)
        print(f"  {case}", flush=True)
    return writer.finish(source="LiTS", liver_labels=liver_labels or [1, 2])
