"""Label semantics: which label values are the liver (by name from dataset.json, or given), and
the checks every label map passes (integers, not negative, only declared values)."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.files import DataError

LIVER_NAME = re.compile(r"liver", re.IGNORECASE)
LESION_NAME = re.compile(r"(lesion|tumou?r|cancer)s?", re.IGNORECASE)  # a bare lesion class of the liver


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


def parse_label_option(text: str | None, option: str = "--liver-labels", separator: str = ",") -> list[int] | None:
    """Label values from the command line, the one parser of every command's label option: "1,2" -> [1, 2]
    (spaces and empty items ignored), None or blank -> None (= every label > 0). Anything else is a
    `DataError` naming `option`. `separator`: "+" inside `--external DIR:1+2`, where "," separates sets."""
    if text is None or not str(text).strip():
        return None
    items = [item.strip() for item in str(text).split(separator) if item.strip()]
    example = f"e.g. 1{separator}2"
    try:
        values = [int(item) for item in items]
    except ValueError:
        raise DataError(option, f"label values must be integers separated by {separator!r} ({example}), "
                                f"got {text!r}") from None
    if not values or min(values) < 0:
        raise DataError(option, f"expected label values 0 or above ({example}), got {text!r}")
    return values


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


def check_labels(label: np.ndarray, path: str | Path, declared=None) -> np.ndarray:
    """A label map as integers, refusing what would silently change the liver: non-integer float
    values, negative values, and (when `declared` label values are known) undeclared values."""
    label = np.asarray(label)
    if not np.issubdtype(label.dtype, np.integer):
        if not np.all(np.isfinite(label)):
            raise DataError(path, "label map has NaN or Inf values")
        rounded = np.rint(label)
        if not np.array_equal(rounded, label):
            bad = np.unique(label[rounded != label])[:5].tolist()
            raise DataError(path, f"label has non-integer values (e.g. {bad}): a probability map or an "
                                  "interpolated label is not a label map")
        label = rounded.astype(np.int32)
    values = np.unique(label)
    if values.size and values[0] < 0:
        raise DataError(path, f"negative label values {values[values < 0][:5].tolist()}: labels are 0 (background) or positive")
    if declared is not None:
        extra = sorted(set(values.tolist()) - {int(v) for v in declared} - {0})
        if extra:
            raise DataError(path, f"label values {extra[:10]} are not declared in dataset.json labels "
                                  f"(declared: {sorted(int(v) for v in declared)})")
    return label
