"""Patient-level train/val/test splits and k-fold cross-validation.

Splitting is over patients, never cases: the T1 and T2 scans of one patient (or CHAOS in/out
phase) always land in the same split, so slices of one patient cannot leak into evaluation.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from common.files import DataError, atomic_write_json
from datamodules.readers import CaseRecord

SPLITS = ("train", "val", "test")


def patients_of(records: Sequence[CaseRecord]) -> "OrderedDict[str, list[str]]":
    """patient -> its case ids, patients in sorted order (deterministic before shuffling)."""
    groups: dict[str, list[str]] = {}
    for r in records:
        groups.setdefault(r.patient, []).append(r.case)
    return OrderedDict((p, sorted(groups[p])) for p in sorted(groups))


def _count(fraction: float, n: int) -> int:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fractions must be in [0, 1), got {fraction}")
    return 0 if fraction == 0 else max(1, int(round(fraction * n)))


def split_patients(records: Sequence[CaseRecord], val_fraction: float = 0.2, test_fraction: float = 0.2,
                   seed: int = 0, num_folds: int | None = None, fold: int = 0) -> dict[str, list[str]]:
    """{"train", "val", "test"} -> case ids, split by patient with a seeded shuffle.

    `num_folds`: hold out the test patients first, then cut the rest into `num_folds` folds;
    fold `fold` is validation, the others train (`val_fraction` is then unused).
    """
    groups = patients_of(records)
    patients = list(groups)
    np.random.default_rng(seed).shuffle(patients)
    n = len(patients)
    n_test = _count(test_fraction, n)
    test, rest = patients[:n_test], patients[n_test:]
    if num_folds is not None:
        if num_folds < 2 or num_folds > len(rest):
            raise ValueError(f"num_folds={num_folds} needs 2..{len(rest)} (patients left after the test split)")
        if not 0 <= fold < num_folds:
            raise ValueError(f"fold must be in 0..{num_folds - 1}, got {fold}")
        folds = np.array_split(np.asarray(rest, dtype=object), num_folds)
        val = list(folds[fold])
        train = [p for i, f in enumerate(folds) if i != fold for p in f]
    else:
        n_val = _count(val_fraction, n)
        val, train = rest[:n_val], rest[n_val:]
    if not train:
        raise ValueError(f"{n} patient(s) are too few for val_fraction={val_fraction}, "
                         f"test_fraction={test_fraction}: no training patient left")
    return {name: sorted(c for p in part for c in groups[p]) for name, part in zip(SPLITS, (train, val, test))}


def check_split(split: dict[str, list[str]], records: Sequence[CaseRecord], path: str | Path = "split") -> None:
    """Raise `DataError` when a split names unknown cases, repeats a case or shares a patient."""
    patient = {r.case: r.patient for r in records}
    seen: dict[str, str] = {}
    for name in SPLITS:
        for case in split.get(name, []):
            if case not in patient:
                raise DataError(path, f"case {case!r} in {name!r} is not in the dataset")
            owner = seen.setdefault(patient[case], name)
            if owner != name:
                raise DataError(path, f"patient {patient[case]!r} is in both {owner!r} and {name!r}")
    if not split.get("train"):
        raise DataError(path, "no training case")


VAL_ON_TRAIN = "train"


def load_split(path: str | Path, records: Sequence[CaseRecord]) -> dict[str, list[str]]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"unreadable split file ({exc})") from exc
    # "val": "train" validates on the training cases: a few-patient cross-validation, where a held-out
    # validation patient would cost a quarter of the training data and give a one-patient curve
    val_on_train = isinstance(data, dict) and data.get("val") == VAL_ON_TRAIN
    if val_on_train:
        data = {**data, "val": []}
    if not isinstance(data, dict) or not all(isinstance(data.get(k, []), list) for k in SPLITS):
        raise DataError(path, f'expected {{"train": [...], "val": [...] or "{VAL_ON_TRAIN}", "test": [...]}}')
    split = {k: [str(c) for c in data.get(k, [])] for k in SPLITS}
    check_split(split, records, path)
    if val_on_train:
        split["val"] = list(split["train"])
    return split


def save_split(path: str | Path, split: dict[str, list[str]]) -> Path:
    return atomic_write_json(path, {k: list(split[k]) for k in SPLITS})
