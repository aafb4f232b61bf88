"""Result records -> groups: every run under a results folder, and per (variant, modality) its seed
statistics (every metric of the schema), per-case Dice pooled over seeds and a bootstrap CI."""
from __future__ import annotations

import csv
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.report.stats import bootstrap_ci, mean_std
from benchmark.scoring import metrics as schema
from common.files import DataError

BASELINE = "unet_baseline"
TIMING = ("volume_ms", "model_volume_ms", "slice_ms", "peak_memory_mb")


@dataclass
class Run:
    path: Path
    record: dict
    cases: dict = field(default_factory=dict)  # case -> {"dice": float, ..., "patient": str}
    external_cases: dict = field(default_factory=dict)  # the same for the external set

    def get(self, *keys, default=None):
        value = self.record
        for key in keys:
            if not isinstance(value, dict) or key not in value or value[key] is None:
                return default
            value = value[key]
        return value

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "ok"

    def variant_key(self) -> tuple[str, str]:
        return str(self.get("suite", default="")), self.get("variant") or self.path.name


def _float(text) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_per_case(path: Path) -> dict:
    """per_case.csv -> {case: {"dice", "jaccard", ..., "patient"}}; empty when the file is absent."""
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "case" not in reader.fieldnames or "dice" not in reader.fieldnames:
            raise DataError(path, "per-case CSV needs at least the columns case,dice")
        return {row["case"]: {**{k: _float(v) for k, v in row.items() if k not in ("case", "patient")},
                              "patient": row.get("patient") or row["case"]} for row in reader}


TRACKER_FOLDERS = {"wandb", "csv", "mlartifacts"}  # trackers' copies of result.json (benchmark.tracking)


def load_runs(results: Path) -> list[Run]:
    """Every `result.json` under `results` (not the trackers' copies); an unreadable one becomes a failed
    run naming its error."""
    runs = []
    for path in sorted(results.rglob("result.json")):
        if TRACKER_FOLDERS & set(path.relative_to(results).parts[:-1]):
            continue
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            record = {"status": "failed", "error": f"unreadable result.json: {exc}"}
        problem = malformed(record)
        if problem:  # never counted, tabulated or ranked as ok: failed, and said so
            print(f"warning: {path}: {problem}; counted as failed", file=sys.stderr)
            record = {**{k: record.get(k) for k in IDENTITY}, "status": "failed",
                      "error": f"malformed result.json: {problem}"}
        run = Run(path.parent, record)
        if run.ok:
            run.cases = read_per_case(path.parent / "per_case.csv")
            if (record.get("external") or {}).get("metrics"):
                run.external_cases = read_per_case(path.parent / "external_per_case.csv")
        runs.append(run)
    return runs


IDENTITY = ("suite", "variant", "label", "modality", "seed", "entry")


def malformed(record: dict) -> str | None:
    """What makes a record unusable by the report (None: fine): the status, and for an ok run its
    identity and metrics (numbers or null), the fields every table and test reads."""
    status = record.get("status")
    if status not in ("ok", "failed"):
        return f"`status` must be ok or failed, got {status!r}"
    for key, kind in (("variant", str), ("modality", str), ("seed", int)):
        if record.get(key) is not None and not isinstance(record[key], kind):
            return f"`{key}` must be {kind.__name__}, got {record[key]!r}"
    if status != "ok":
        return None
    for key in ("timing", "external", "budget"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            return f"`{key}` must be a mapping or null, got {record[key]!r}"
    metrics = record.get("metrics")
    if not isinstance(metrics, dict) or "dice" not in metrics:
        return f"`metrics` must be a mapping with at least dice, got {metrics!r}"
    bad = [k for k, v in metrics.items() if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))]
    return f"`metrics.{bad[0]}` must be a number or null, got {metrics[bad[0]]!r}" if bad else None


def label_of(run: Run) -> str:
    return run.get("label") or run.get("variant") or run.path.name


def summarise_group(runs: list[Run]) -> dict:
    """One (variant, modality): seed statistics of run metrics and timings, per-case Dice pooled over seeds."""
    g: dict = {"seeds": sorted({r.get("seed") for r in runs}, key=str), "runs": runs}
    for m in schema.METRICS:
        g[m.name] = mean_std([r.get("metrics", m.name, default=math.nan) for r in runs])
    for key in TIMING:
        g[key] = mean_std([r.get("timing", key, default=math.nan) for r in runs])
    per_case: dict[str, list[float]] = defaultdict(list)
    patient: dict[str, str] = {}
    for run in runs:
        for case, row in run.cases.items():
            per_case[case].append(row["dice"])
            patient[case] = row["patient"]
    g["case_dice"] = {c: sum(v) / len(v) for c, v in per_case.items()}
    g["patient"] = patient
    cases = sorted(g["case_dice"])
    g["ci"] = bootstrap_ci([g["case_dice"][c] for c in cases], [patient[c] for c in cases]) if cases else (math.nan, math.nan)
    g["n_patients"] = len({patient[c] for c in cases})
    g["external"] = summarise_external(runs)
    first = runs[0]
    for key in ("params", "flops", "preset", "data", "device"):
        g[key] = first.get(key)
    g["device"] = g["device"] or first.get("timing", "device")
    g["compute_precision"] = first.get("timing", "precision")
    return g


def summarise_external(runs: list[Run]) -> dict | None:
    """External set of one (variant, modality): seed statistics of its Dice, per-case Dice averaged over
    seeds with a bootstrap CI over cases, failed cases (mean over seeds); None when no run has one."""
    scored = [r for r in runs if r.get("external", "metrics")]
    errors = [r.get("external", "error") for r in runs if r.get("external", "error")]
    if not scored and not errors:
        return None
    per_case: dict[str, list[float]] = defaultdict(list)
    for run in scored:
        for case, row in run.external_cases.items():
            per_case[case].append(row["dice"])
    case_dice = {c: sum(v) / len(v) for c, v in per_case.items()}
    cases = sorted(case_dice)
    names = sorted({str(r.get("external", "name")) for r in runs if r.get("external", "name")})
    return {"name": ", ".join(names) or "–", "n": len(cases), "runs": len(scored), "errors": errors,
            "dice": mean_std([r.get("external", "metrics", "dice", default=math.nan) for r in scored]),
            "case_mean": sum(case_dice.values()) / len(cases) if cases else math.nan,
            "min": min(case_dice.values()) if cases else math.nan,
            "ci": bootstrap_ci([case_dice[c] for c in cases]) if cases else (math.nan, math.nan),
            "failed": mean_std([r.get("external", "failed", default=math.nan) for r in scored])}


def build_groups(runs: list[Run], baseline: str = BASELINE) -> tuple[list, dict, dict]:
    """Variant keys `(suite, variant)` in run order (each suite's baseline first), their labels
    (suffixed with the suite when several suites are present), and {(key, modality): summary}.
    Variants whose runs all failed get a key and a label too (the ranking names them as not ranked)."""
    by_key: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.ok or run.get("variant"):
            by_key[(run.variant_key(), run.get("modality", default="?"))].append(run)
    start: dict = {}
    for (vkey, _), rs in by_key.items():  # a failed record may lack `started`: order by the ok ones
        first = min(str(r.get("started", default="")) for r in ([r for r in rs if r.ok] or rs))
        start[vkey] = min(start.get(vkey, first), first)
    suite_start: dict = {}
    for (suite, _), t in start.items():
        suite_start[suite] = min(suite_start.get(suite, t), t)
    # Within a suite: the suite file's entry order (`entry`), so sharded and single-process runs give
    # the same tables; records without it (older runs) by start time.
    entry: dict = {}
    for (vkey, _), rs in by_key.items():
        for r in rs:
            if isinstance(r.get("entry"), int):
                entry[vkey] = min(entry.get(vkey, r.get("entry")), r.get("entry"))
    position = {k: (0, entry[k], "") if k in entry else (1, 0, start[k]) for k in start}
    order = sorted(start, key=lambda k: (suite_start[k[0]], k[0], k[1] != baseline, position[k], k[1]))
    several = len(suite_start) > 1
    labels = {}
    for k in order:
        rs = sorted((r for (kk, _), rr in by_key.items() if kk == k for r in rr), key=lambda r: (not r.ok, str(r.path)))
        labels[k] = f"{label_of(rs[0])} [{k[0]}]" if several else label_of(rs[0])
    groups = {key: summarise_group(ok) for key, rs in by_key.items() if (ok := [r for r in rs if r.ok])}
    return order, labels, groups


def modalities_of(groups: dict) -> list[str]:
    present = {m for _, m in groups}
    return [m for m in ("ct", "mri") if m in present] + sorted(present - {"ct", "mri"})
