"""AMOS 2022 (CT id < 500, MRI id >= 500; liver = label 6) from imagesTr/labelsTr and imagesVa/labelsVa."""
from __future__ import annotations

import re
from pathlib import Path

from common.files import DataError
from datamodules.convert.dataset_writer import binarize, DatasetWriter, load_label_on_image, visible

CASE = re.compile(r"^amos_(\d+)\.nii(\.gz)?$")
LIVER = 6


def modality_of(case_id: int) -> str:
    return "ct" if case_id < 500 else "mri"


def find_pairs(src: Path) -> list[tuple[int, Path, Path]]:
    pairs = []
    for images, labels in (("imagesTr", "labelsTr"), ("imagesVa", "labelsVa")):
        for img in visible(sorted(src.rglob(f"{images}/amos_*.nii*"))):
            m = CASE.match(img.name)
            lab = img.parent.parent / labels / img.name
            if m and lab.is_file():
                pairs.append((int(m.group(1)), img, lab))
    if not pairs:
        raise DataError(src, "no AMOS imagesTr/amos_XXXX.nii.gz with a matching labelsTr file")
    return sorted(pairs)


def convert(src: str | Path, dst: str | Path, modality: str | None = None,
            liver_labels: list[int] | None = None, **_) -> Path:
    """`modality` ct|mri writes that subset to DST; None writes DST/ct and DST/mri."""
    pairs = find_pairs(Path(src))
    wanted = [modality.lower()] if modality else ["ct", "mri"]
    for m in wanted:
        if m not in ("ct", "mri"):
            raise DataError(src, f"AMOS modality must be ct or mri, got {m!r}")
    out = None
    for m in wanted:
        subset = [p for p in pairs if modality_of(p[0]) == m]
        if not subset:
            print(f"  no {m.upper()} cases in {src}")
            continue
        root = Path(dst) if modality else Path(dst) / m
        writer = DatasetWriter(root, m, name=f"AMOS22_{m.upper()}")
        for case_id, img, lab in subset:
            case = f"amos_{case_id:04d}"
            writer.add(case, img, binarize(load_label_on_image(lab, img), liver_labels or [LIVER], lab))
            print(f"  {case}", flush=True)
        out = writer.finish(source="AMOS 2022", liver_labels=liver_labels or [LIVER])
    if out is None:
        raise DataError(src, f"no AMOS cases of modality {modality}")
    return out if modality else Path(dst)
