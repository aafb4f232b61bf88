"""Medical Segmentation Decathlon Task03_Liver (CT): `imagesTr/liver_N.nii.gz` + `labelsTr/`.

Liver = label 1 (liver) ∪ 2 (cancer). The official tar carries macOS `._*` files: skipped.
"""
from __future__ import annotations

from pathlib import Path

from common.files import DataError
from datamodules.convert.dataset_writer import binarize, DatasetWriter, load_label_on_image, natural_key, visible


def find_root(src: Path) -> Path:
    """`src` itself or the one `Task03_Liver*` folder inside it."""
    if (src / "imagesTr").is_dir():
        return src
    hits = [p for p in visible(src.glob("*")) if (p / "imagesTr").is_dir()]
    hits = [p for p in hits if p.name.startswith("Task03")] or hits
    if len(hits) == 1:
        return hits[0]
    raise DataError(src, "expected an MSD task folder with imagesTr/ and labelsTr/ (e.g. Task03_Liver)")


def convert(src: str | Path, dst: str | Path, liver_labels: list[int] | None = None, **_) -> Path:
    root = find_root(Path(src))
    images = sorted(visible((root / "imagesTr").glob("*.nii*")), key=natural_key)
    if not images:
        raise DataError(root / "imagesTr", "no NIfTI images")
    writer = DatasetWriter(dst, "CT", name="MSD_Task03_Liver")
    for image in images:
        case = image.name.split(".nii")[0]
        label = root / "labelsTr" / image.name
        if not label.is_file():
            raise DataError(label, f"label for {image.name} is missing")
        mask = binarize(load_label_on_image(label, image), liver_labels or [1, 2], label)
        writer.add(case, image, mask)
        print(f"  {case}", flush=True)
    return writer.finish(source="Medical Segmentation Decathlon Task03_Liver", liver_labels=liver_labels or [1, 2])
