"""External validation: score every run also on a real dataset of its modality (`run --external`).

An external set is any folder in the nnU-Net raw layout (e.g. `liverbench data convert` output).
It is checked completely *before* any training starts (folder, dataset.json, modality in
`channel_names`, a liver label, a label file on each image's grid), so a typo costs seconds, not
a suite. Scoring uses the test stage's own function (original geometry, same metrics); the liver
label comes from the label *names* in dataset.json (multi-organ maps such as AMOS, BTCV, CHAOS MR
and TotalSegmentator work) or is given per set as `DIR:N` (several: `DIR:N+M`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from common.files import DataError
from datamodules.labels import parse_label_option

MODALITIES = ("ct", "mri")
_LABELS_SUFFIX = re.compile(r"^(.*):(\d+(?:\+\d+)*)$")


@dataclass
class ExternalSet:
    """A validated external dataset: which cases, which modality, which label values are liver."""

    name: str
    path: Path
    modality: str
    liver_labels: list[int]
    records: list = field(default_factory=list)  # datamodules.readers.CaseRecord

    @property
    def n(self) -> int:
        return len(self.records)

    def describe(self) -> dict:
        return {"name": self.name, "path": str(self.path), "modality": self.modality,
                "liver_labels": self.liver_labels, "n": self.n}


def _split_labels(text: str) -> tuple[str, list[int] | None]:
    """`DIR:5` -> (DIR, [5]); `DIR:1+2` -> (DIR, [1, 2]); `DIR` -> (DIR, None)."""
    match = _LABELS_SUFFIX.match(text)
    if not match:
        return text, None
    return match.group(1), parse_label_option(match.group(2), "--external", separator="+")


def parse_external(text: str | None) -> dict[str | None, tuple[str, list[int] | None]]:
    """`ct=DIR[:N],mri=DIR[:N]` -> {modality: (DIR, labels)}; a bare `DIR[:N]` -> {None: ...}
    (its modality is read from its dataset.json)."""
    if not text:
        return {}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) == 1 and "=" not in parts[0]:
        return {None: _split_labels(parts[0])}
    out: dict = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in MODALITIES or not value.strip():
            raise ValueError(f"--external: expected ct=DIR,mri=DIR or one DIR, got {part!r}")
        if key in out:
            raise ValueError(f"--external names {key} twice")
        out[key] = _split_labels(value.strip())
    return out


def liver_labels_by_name(meta: dict, path: Path) -> list[int]:
    """Liver label values by name (`datamodules.labels.liver_labels_from_dataset_json`: names with
    "liver", plus bare lesion/tumour classes); a map without a liver is an error naming dataset.json."""
    from datamodules.labels import liver_labels_from_dataset_json

    if "labels" not in meta:
        raise DataError(path, "declares no 'labels': cannot tell which label is the liver; give it as DIR:N")
    try:
        return sorted(liver_labels_from_dataset_json(meta))
    except DataError as exc:
        raise DataError(path, exc.problem.split(";")[0] + "; give the liver value as DIR:N (e.g. ct=DIR:5)") from None


def load_external_set(directory: str | Path, modality: str | None = None,
                      liver_labels: list[int] | None = None) -> ExternalSet:
    """Check one external set without decoding voxels; every problem is a `DataError` naming the file."""
    from datamodules.labels import parse_labels
    from datamodules.readers import check_headers, dataset_modality, read_dataset, read_dataset_json

    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DataError(root, "external dataset folder not found")
    root = root.resolve()
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DataError(meta_path, "missing: an external set needs dataset.json (channel_names, labels)")
    meta = read_dataset_json(root)
    found = dataset_modality(root)
    if found is None:
        raise DataError(meta_path, "no channel_names: cannot tell whether the set is CT or MRI")
    if modality is not None and found != modality:
        raise DataError(meta_path, f"channel_names {meta.get('channel_names') or meta.get('modality')} is "
                                   f"{found.upper()}, but the set was given for {modality.upper()}")
    if liver_labels is None:
        liver_labels = liver_labels_by_name(meta, meta_path)
    else:
        known = {v for vals in parse_labels(meta, meta_path).values() for v in vals}
        unknown = sorted(set(liver_labels) - known) if known else []
        if unknown or 0 in liver_labels:
            raise DataError(meta_path, f"liver label(s) {unknown or [0]} given on the command line are not "
                                       f"foreground labels of this set ({sorted(known)})")
    if not (root / "labelsTr").is_dir():
        raise DataError(root / "labelsTr", "missing: external cases need labels")
    records = read_dataset(root, liver_labels)  # an image without a label raises, naming the image
    check_headers(records, grid=False, whole=[r.case for r in records])  # scored after training
    name = str(meta.get("name") or root.name)
    return ExternalSet(name, root, found, [int(v) for v in liver_labels], records)


def resolve_external(text: str | None, modalities: list[str]) -> dict[str, ExternalSet]:
    """The validated external set of each requested modality (runs of other modalities get none)."""
    sets: dict[str, ExternalSet] = {}
    for modality, (directory, labels) in parse_external(text).items():
        ext = load_external_set(directory, modality, labels)
        sets[ext.modality] = ext
    missing = [m for m in sets if m not in modalities]
    if missing:
        raise ValueError(f"--external gives a {', '.join(missing)} set but --modalities is {','.join(modalities)}")
    return sets


def score(module, preprocessing: dict, ext: ExternalSet, largest_component: bool = False, opening_mm: float = 0.0,
          precision: str = "fp32", channels_last: bool | None = None, overlays: bool = False) -> tuple[list[dict], list]:
    """Per-case metrics on every external case, with the test stage's own scoring function; with `overlays`,
    each case's overlay image too (`benchmark.tracking.overlays`: the scored prediction over the label)."""
    from benchmark.run.stages.test import evaluate

    return evaluate(module, preprocessing, ext.records, ext.liver_labels, log_images=overlays, n_images=ext.n,
                    largest_component=largest_component, opening_mm=opening_mm, precision=precision,
                    channels_last=channels_last)


def summary_block(ext: ExternalSet, rows: list[dict]) -> dict:
    """result.json `external`: the set, n, failed cases and per-metric means."""
    from benchmark.scoring.metrics import summarise

    metrics = {k: v for k, v in summarise(rows).items() if k not in ("convention", "cases")}
    return {**ext.describe(), "n": len(rows), "failed": int(metrics["failed"]), "metrics": metrics,
            "per_case": "external_per_case.csv"}

