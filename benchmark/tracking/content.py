"""What a tracker receives, described once: every backend (W&B, MLflow, CSV) logs this and only this.

A finished run is a `RunContent` (parameters, summary metrics, tags, files, tables, overlays) built from
its record and run folder; a suite's summary run is the tables below plus the report's files. The keys
of the summary metrics derive from the metric schema (`benchmark.scoring.metrics.METRICS`); docs/tracking.md's
table of keys is checked against `key_meanings()`.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from benchmark.run.records import json_safe, run_name
from benchmark.scoring.metrics import AVERAGED_KEYS, METRICS
from common.files import json_text

# summary key -> (record section, key); the metric keys come from the metric schema
SUMMARY_KEYS = {
    **{m.wandb_key: ("metrics", m.name) for m in METRICS},
    "time/volume_ms": ("timing", "volume_ms"), "time/slice_ms": ("timing", "slice_ms"),
    "time/model_volume_ms": ("timing", "model_volume_ms"), "params": (None, "params"),
    "flops": (None, "flops"), "budget/converged": ("budget", "converged"), "budget/steps": ("budget", "steps"),
    "budget/stop_reason": ("budget", "stop_reason"),
}
EXTERNAL_KEYS = (*AVERAGED_KEYS, "global_dice")  # external/<key>: the set's means, then pooled Dice
PARAM_KEYS = ("suite", "variant", "model", "modality", "seed", "preset", "data", "config")
RUN_FILES = ("per_case.csv", "external_per_case.csv")  # beside result.json in the run folder


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value))


def summary_values(record: dict) -> dict:
    """The run's summary: test/*, time/*, params, flops, budget/* (converged true/false, steps, stop_reason
    text) and the external set's means as `external/<metric>` (with `external/n`, `external/failed` and
    the set's name `external/set`)."""
    out = {}
    for key, (section, name) in SUMMARY_KEYS.items():
        value = (record.get(section) or {}).get(name) if section else record.get(name)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[key] = value
    ext = record.get("external") or {}
    if ext.get("metrics"):
        out.update({f"external/{k}": ext["metrics"][k] for k in EXTERNAL_KEYS if _number(ext["metrics"].get(k))})
        out.update({"external/n": ext["n"], "external/failed": ext["failed"], "external/set": ext["name"]})
    return out


def run_params(record: dict) -> dict:
    """The run's configuration as parameters: who/what/where, the full LightningCLI config, and every
    override of the entry's own config (`overrides/<key>` = the value used)."""
    params = {k: record.get(k) for k in PARAM_KEYS}
    params["overrides"] = {o["key"]: o.get("used") for o in record.get("overrides") or []}
    return params


def record_id(record: dict) -> str:
    """One attempt of one run (a retried run starts again): how an upload finds what is already there."""
    return f"{record.get('suite')}/{run_name(record['variant'], record['modality'], record['seed'])}/{record.get('started')}"


def run_tags(record: dict, folder: Path) -> dict[str, str]:
    """Labels: model, variant, status, the checkpoint's path (the file stays on disk), the summary's text
    values (the external set's name, budget/stop_reason)."""
    tags = {"model": str(record.get("model")), "variant": str(record["variant"]), "suite": str(record.get("suite")),
            "modality": str(record["modality"]), "status": str(record.get("status")),
            "liverbench.record": record_id(record)}
    checkpoint = (record.get("checkpoint") or {}).get("path")
    if checkpoint:
        tags["checkpoint"] = str((Path(folder) / checkpoint).resolve())
    if record.get("transfer"):
        tags["transfer"] = str(record["transfer"].get("source"))
    tags.update({k: v for k, v in summary_values(record).items() if isinstance(v, str)})  # the summary's text
    return tags


@dataclass
class RunContent:
    """Everything one run sends to a tracker (see docs/tracking.md, "What each run contains")."""

    name: str
    suite: str
    modality: str
    params: dict
    metrics: dict[str, float]
    tags: dict[str, str]
    files: dict[str, bytes]  # artifact name -> bytes: result.json and the per-case CSVs
    tables: dict[str, list[dict]] = field(default_factory=dict)  # test/per_case, external/per_case rows
    overlays: dict[str, list] = field(default_factory=dict)  # key -> [benchmark.tracking.overlays.Overlay]
    checkpoint: Path | None = None  # uploaded only when asked for (`--upload-checkpoint`)


def describe_run(record: dict, folder: Path, per_case: list[dict] | None = None, external_rows: list[dict] | None = None,
                 overlays: list | None = None, upload_checkpoint: bool = False) -> RunContent:
    """A finished run's content, from its record and folder (per-case rows and overlays when in memory)."""
    folder = Path(folder)
    files = {"result.json": json_text(json_safe(record)).encode()}
    files.update({n: (folder / n).read_bytes() for n in RUN_FILES if (folder / n).is_file()})
    if per_case is None:  # an upload after the run: the tables from the files
        per_case, external_rows = (_rows(files.get(n)) for n in RUN_FILES)
    tables = {k: v for k, v in (("test/per_case", per_case), ("external/per_case", external_rows)) if v}
    ckpt = folder / ((record.get("checkpoint") or {}).get("path") or "model.ckpt")
    return RunContent(
        name=run_name(record["variant"], record["modality"], record["seed"]), suite=str(record.get("suite")),
        modality=str(record["modality"]), params=run_params(record),
        metrics={k: float(v) for k, v in summary_values(record).items() if _number(v) or isinstance(v, bool)},
        tags=run_tags(record, folder), files=files, tables=tables,
        overlays={"test/overlays": list(overlays)} if overlays else {},
        checkpoint=ckpt if upload_checkpoint and ckpt.is_file() else None)


def _rows(data: bytes | None) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode()))) if data else []


# ---- the suite's summary run ------------------------------------------------------------------------

def _get(*keys: str) -> Callable[[dict], Any]:
    def get(record: dict):
        value = record
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value
    return get


# The summary run's per-run table: (column, value from a result record). One line adds a column.
SUMMARY_COLUMNS: tuple[tuple[str, Callable[[dict], Any]], ...] = (
    ("variant", _get("variant")), ("model", _get("model")), ("modality", _get("modality")), ("seed", _get("seed")),
    *((k, _get("metrics", k)) for k in AVERAGED_KEYS),
    ("volume_ms", _get("timing", "volume_ms")), ("slice_ms", _get("timing", "slice_ms")),
    ("params", _get("params")), ("flops", _get("flops")), ("converged", _get("budget", "converged")),
    ("stop_reason", _get("budget", "stop_reason")), ("status", _get("status")),
)
# The ranking table (rows of `benchmark.report.ranking.rows`), then its `rank_<k>_pct` columns.
RANK_COLUMNS = ["modality", "variant", "label", "seeds", "n_cases", "dice", "ci_low", "ci_high", "rank", "mean_rank",
                "median_rank", "rank_ci_low", "rank_ci_high", "p_beats_baseline", "mean_diff", "p", "p_holm",
                "significant", "seed_std", "volume_ms", "converged"]


def cell(value):
    """NaN (no test for the baseline, one seed) becomes None: a missing value in every tracker."""
    return None if isinstance(value, float) and math.isnan(value) else value


def summary_table(records: list[dict]) -> tuple[list[str], list[list]]:
    """(columns, rows): one row per result record, failed runs included."""
    return [c for c, _ in SUMMARY_COLUMNS], [[cell(get(r)) for _, get in SUMMARY_COLUMNS] for r in records]


def ranking_table(rank_rows: list[dict]) -> tuple[list[str], list[list]]:
    """(columns, rows) of leaderboard.md's ranking: one row per modality and ranked variant."""
    n_ranks = max((int(k.split("_")[1]) for row in rank_rows for k in row
                   if k.startswith("rank_") and k.endswith("_pct")), default=0)
    columns = RANK_COLUMNS + [f"rank_{i}_pct" for i in range(1, n_ranks + 1)]
    return columns, [[cell(row.get(c)) for c in columns] for row in rank_rows]


def table_csv(columns: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue().encode()


@dataclass
class SummaryContent:
    """A suite's summary run: `leaderboard` (always), `ranking` and the report's files (from `liverbench report`)."""

    suite: str
    records: list[dict]
    tables: dict[str, tuple[list[str], list[list]]]
    files: dict[str, bytes]
    rank_rows: list[dict] | None = None


def describe_summary(suite: str, records: list[dict], rank_rows: list[dict] | None = None,
                     report_files: list[Path] = ()) -> SummaryContent:
    """The summary: the per-run table; from the report also the ranking, leaderboard.md and its figures."""
    tables = {"leaderboard": summary_table(records)}
    if rank_rows:
        tables["ranking"] = ranking_table(rank_rows)
    files = {f"{name}.csv": table_csv(*table) for name, table in tables.items()}
    files.update({Path(p).name: Path(p).read_bytes() for p in report_files if Path(p).is_file()})
    return SummaryContent(suite, records, tables, files, rank_rows)


def key_meanings() -> dict[str, str]:
    """Every summary metric key and what it means, from the metric schema."""
    meanings = {m.wandb_key: f"test split: {m.name}, {m.aggregation} over cases "
                             f"({'higher' if m.direction == 'max' else 'lower'} is better)" for m in METRICS}
    meanings.update({
        "time/volume_ms": "end-to-end time per volume (read, preprocess, model, resample back), median, ms",
        "time/model_volume_ms": "model-only time per volume, ms",
        "time/slice_ms": "model-only time per slice (2D models), ms",
        "params": "trainable parameters", "flops": "FLOPs of one forward pass",
        "budget/converged": "the convergence rule held on the validation curve (docs/convergence.md): 1 or 0 "
                            "(W&B: true/false)",
        "budget/steps": "optimizer steps trained",
    })
    meanings.update({f"external/{m.name}": f"external set (`--external`): {m.name}, {m.aggregation} over its cases"
                     for m in METRICS if m.name in AVERAGED_KEYS})
    meanings["external/global_dice"] = "external set: Dice of all its voxels pooled, 2ΣTP / Σ(2TP+FP+FN)"
    meanings.update({"external/n": "external set: cases scored", "external/failed": "external set: empty predictions"})
    return meanings


OTHER_KEYS = (  # (key, kind, meaning) of what is not a summary metric; docs/tracking.md shows them all
    ("suite, variant, model, modality, seed, preset, data", "parameter", "who and what the run is"),
    ("config/<section>/...", "parameter", "the run's full LightningCLI config (model, data, trainer init args)"),
    ("overrides/<key>", "parameter", "a value the preset changed in the suite entry's config: the value used"),
    ("hparams/<name>", "parameter", "the model's and DataModule's hyperparameters as Lightning logs them "
                                    "(MLflow; W&B and CSV: at the top level)"),
    ("train/*, val/*", "curve", "training and validation curves (on the preprocessed grid), logged by Lightning"),
    ("model, variant, suite, modality, status", "tag", "labels to filter by (W&B: model and variant as tags)"),
    ("checkpoint", "tag", "absolute path of model.ckpt (uploaded only with `--upload-checkpoint`; W&B: config)"),
    ("transfer, external/set", "tag", "where the encoder's weights came from; the external set's name"),
    ("budget/stop_reason", "tag", "what ended training: plateau, max_steps, max_time or max_epochs (W&B: summary)"),
    ("liverbench.record, liverbench.complete", "tag", "one attempt of one run; set when everything was logged"),
    ("result.json, per_case.csv, external_per_case.csv", "artifact", "the run's record and per-case tables"),
    ("test/overlays/<case>.png, val/overlays/<case>.png", "artifact",
     "prediction (red) and ground truth (green outline) on the slice with most liver (W&B: masks)"),
    ("leaderboard.csv, ranking.csv", "summary artifact", "per-run table (SUMMARY_COLUMNS); leaderboard.md's ranking"),
    ("leaderboard.md, leaderboard_pareto.png, leaderboard_ranks.png", "summary artifact",
     "from `liverbench report --tracker ...`"),
)


def keys_markdown() -> str:
    """docs/tracking.md's table of keys, checked by tests/test_tracking.py; to update it, paste the output of
    `python -c "from benchmark.tracking.content import keys_markdown as k; print(k())"`."""
    rows = [*((f"`{k}`", "summary metric", v) for k, v in key_meanings().items()),
            *((", ".join(f"`{k}`" for k in key.split(", ")), kind, v) for key, kind, v in OTHER_KEYS)]
    return "\n".join(["| key | kind | meaning |", "|---|---|---|", *(f"| {k} | {kind} | {v} |" for k, kind, v in rows)])

