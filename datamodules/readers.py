"""Read liver datasets in the nnU-Net raw / MSD Task03 layout into validated cases.

`read_dataset` lists cases without decoding voxels; `load_case` decodes one case and checks
everything that would otherwise fail late and obscurely inside a DataLoader worker (missing
label, label on another grid, unreadable file, no liver).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from common.files import DataError
from datamodules.grid import check_same_grid
from datamodules.labels import check_labels, liver_labels_from_dataset_json, liver_mask, parse_labels
from datamodules.volumes import NIFTI_SUFFIXES, check_stream, read_geometry, read_volume


@dataclass(frozen=True)
class CaseRecord:
    """One labelled case on disk; `patient` groups cases that must share a split; `liver_labels`
    the label values that are liver (from dataset.json by name; None = every label > 0)."""

    case: str
    patient: str
    image_path: Path
    label_path: Path | None
    liver_labels: tuple[int, ...] | None = None
    declared_labels: tuple[int, ...] | None = None  # every value dataset.json declares (None: unknown)


@dataclass
class LoadedCase:
    """A decoded, validated case: `image` (X,Y,Z) as stored, `mask` bool liver mask."""

    record: CaseRecord
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    label_values: list[int]


def dataset_liver_labels(root: str | Path, meta: dict[str, Any] | None = None) -> tuple[int, ...] | None:
    """Liver label values of a dataset, by name from its dataset.json `labels` (liver, lesion,
    tumour...); None when dataset.json declares no labels (then every label > 0 is liver)."""
    meta = read_dataset_json(root) if meta is None else meta
    if "labels" not in meta:
        return None
    try:
        return tuple(sorted(liver_labels_from_dataset_json(meta)))
    except DataError as exc:
        raise DataError(Path(root) / "dataset.json", exc.problem) from None


def read_dataset_json(root: str | Path) -> dict[str, Any]:
    """`dataset.json` as a dict ({} when absent); a clear error when it is not valid JSON."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(path, "expected a JSON object")
    return data


def dataset_modality(root: str | Path) -> str | None:
    """'ct' or 'mri' from `channel_names` (nnU-Net) or `modality` (MSD); None when unknown."""
    meta = read_dataset_json(root)
    names = meta.get("channel_names") or meta.get("modality") or {}
    if not isinstance(names, dict) or not names:
        return None
    first = str(names.get("0", next(iter(names.values())))).upper()
    return "ct" if first == "CT" else "mri"


def _strip_nifti(name: str) -> str | None:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def case_name(path: str | Path) -> str:
    """Case id of a NIfTI file name: `liver_3_0000.nii.gz` -> `liver_3`, `amos_0001.nii.gz` -> `amos_0001`
    (only nnU-Net's channel-0 tag `_0000` is a channel; other 4-digit suffixes are part of the id)."""
    name = Path(path).name
    name = _strip_nifti(name) or name
    return name[: -len("_0000")] if name.endswith("_0000") else name


def _visible_niftis(folder: Path) -> dict[str, Path]:
    """stem -> path for NIfTI files, skipping macOS `._*` and other hidden files."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", "_")) or not path.is_file():
            continue
        stem = _strip_nifti(path.name)
        if stem is not None:
            out[stem] = path
    return out


def read_dataset(root: str | Path, liver_labels: Sequence[int] | None = None) -> list[CaseRecord]:
    """All labelled training cases of `root` (imagesTr/labelsTr), sorted by case id.

    Both `<case>_0000.nii.gz` (nnU-Net) and `<case>.nii.gz` (MSD) image names work; only
    channel 0 is used. Each record carries its liver labels: `liver_labels` when given, else
    those named in dataset.json (`dataset_liver_labels`). An image without a label raises
    `DataError` naming the image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder does not exist")
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise DataError(images_dir, "missing: expected the nnU-Net raw layout imagesTr/ + labelsTr/")
    meta = read_dataset_json(root)
    parse_labels(meta, root / "dataset.json")  # validate early, with the file name
    liver = tuple(sorted({int(v) for v in liver_labels})) if liver_labels is not None \
        else dataset_liver_labels(root, meta)
    declared = tuple(sorted({v for vs in parse_labels(meta).values() for v in vs})) if "labels" in meta else None
    patient_ids = meta.get("patient_ids") or {}
    if not isinstance(patient_ids, dict):
        raise DataError(root / "dataset.json", "'patient_ids' must map case -> patient")
    labels = _visible_niftis(labels_dir)
    records: list[CaseRecord] = []
    for stem, image_path in _visible_niftis(images_dir).items():
        match = re.fullmatch(r"(.+)_(\d{4})", stem)
        if match and match.group(2) != "0000" and stem not in labels:
            continue  # extra channels of a multi-channel case
        case = match.group(1) if match and stem not in labels else stem  # MSD: liver_7 -> liver_7
        label_path = labels.get(case)
        if label_path is None:
            raise DataError(image_path, f"no label: expected {labels_dir / (case + '.nii.gz')}")
        records.append(CaseRecord(case, str(patient_ids.get(case, case)), image_path, label_path, liver, declared))
    if not records:
        raise DataError(images_dir, "no NIfTI images (*.nii.gz) found")
    return sorted(records, key=lambda r: r.case)


def load_case(record: CaseRecord, liver_labels: Sequence[int] | None = None,
              require_liver: bool = True) -> LoadedCase:
    """Decode image and label; validate label presence, geometry and liver content.
    `liver_labels` overrides the record's own (dataset.json) liver labels."""
    if record.label_path is None or not Path(record.label_path).is_file():
        raise DataError(record.image_path, f"no label file (expected {record.label_path})")
    image = read_volume(record.image_path)
    label_vol = read_volume(record.label_path, nan="error")
    check_same_grid(label_vol, image, record.label_path, Path(record.image_path).name, "label ")
    label = check_labels(label_vol.array, record.label_path, record.declared_labels)
    labels = liver_labels if liver_labels is not None else record.liver_labels
    mask = liver_mask(label, labels)
    if require_liver and not mask.any():
        which = "labels > 0" if labels is None else f"labels {sorted(int(v) for v in labels)}"
        raise DataError(record.label_path, f"no liver voxels ({which}); values present: "
                                           f"{np.unique(label).tolist()}")
    return LoadedCase(record, image.array, mask, image.affine, image.spacing,
                      [int(v) for v in np.unique(label)])


def check_headers(records: Sequence[CaseRecord], grid: bool = True, whole: Iterable[str] = ()) -> None:
    """Every image and label as far as headers and file sizes tell (a truncated file, a label on another
    grid, or only of another shape with `grid=False`), and the whole compressed stream of the `whole`
    cases (those not decoded before training: the test split, external sets), so a bad case stops a
    run before training instead of after it."""
    whole = set(whole)
    for r in records:
        image, label = read_geometry(r.image_path), read_geometry(r.label_path)
        if grid:
            check_same_grid(label, image, r.label_path, Path(r.image_path).name, "label ")
        elif image.shape != label.shape:
            raise DataError(r.label_path, f"label shape {label.shape} differs from image shape {image.shape}")
        if r.case in whole:
            check_stream(r.image_path)
            check_stream(r.label_path)
