"""Result records: one folder per run, `result.json` written last and atomically.

A run folder without `result.json` is stale (the run was killed): it is emptied and rerun.
`result.json` with `status: ok` means finished; `status: failed` carries the error and traceback.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import subprocess
import traceback
from datetime import datetime, timezone
from pathlib import Path

from benchmark.scoring.metrics import METRIC_KEYS
from common.files import DataError, atomic_write_json, atomic_write_text

METRICS = METRIC_KEYS  # per_case.csv columns, from the metric schema (benchmark.scoring.metrics.METRICS)
REPO_ROOT = Path(__file__).resolve().parents[2]


def run_name(variant: str, modality: str, seed: int) -> str:
    return f"{variant}__{modality}__seed{seed}"


def run_dir(out: str | os.PathLike, suite: str, variant: str, modality: str, seed: int) -> Path:
    return Path(out) / suite / run_name(variant, modality, seed)


def read_result(folder: str | os.PathLike) -> dict | None:
    """The run's record, or None when it has none (never run, or killed mid-way)."""
    path = Path(folder) / "result.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:  # cannot happen with atomic writes; treat as stale anyway
        return None


def prepare_run_dir(folder: str | os.PathLike, replaces: dict | None = None) -> Path:
    """Empty a stale or retried run folder so a restart begins clean. A finished run is never
    cleared (re-checked here, just before deleting): neither an `ok` record nor one that cannot be read,
    except the `ok` record `replaces`, found stale (another config) and re-run with --resume."""
    folder = Path(folder)
    result = folder / "result.json"
    if result.is_file():
        previous = read_result(folder)
        if previous is None:
            raise DataError(result, "unreadable run record; the run's files are kept (remove the folder to re-run it)")
        if previous.get("status") == "ok" and previous != replaces:
            raise DataError(result, "run already finished (status ok); its files are kept")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def write_per_case(folder: str | os.PathLike, rows: list[dict], name: str = "per_case.csv") -> Path:
    buf = io.StringIO()
    extra = [k for k in ("tp", "fp", "fn") if rows and k in rows[0]]
    writer = csv.DictWriter(buf, fieldnames=["case", "patient", *METRICS, *extra], extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(Path(folder) / name, buf.getvalue())


def json_safe(value):
    """NaN/inf (e.g. HD95 of an empty prediction) become null: strict JSON readers reject NaN."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_result(folder: str | os.PathLike, record: dict) -> Path:
    return atomic_write_json(Path(folder) / "result.json", json_safe(record))


def failure_fields(exc: BaseException) -> dict:
    return {
        "status": "failed",
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def os_error_text(exc: OSError, folder: Path | None = None) -> str:
    """`<path>: <problem>` for disk-full and permission errors (the commands print `error: ` first).
    A file outside the run's `folder` (a library's temp file) is named after the folder it was for."""
    name = exc.filename
    if folder is not None and (not name or not Path(str(name)).resolve().is_relative_to(Path(folder).resolve())):
        return f"{folder}: {exc.strerror or exc}" + (f" (writing {name})" if name else "")
    return f"{name or '?'}: {exc.strerror or exc}"


def package_versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("liverbench", "torch", "lightning", "monai", "torchmetrics", "numpy", "nibabel", "wandb"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """HEAD of the checkout the code runs from, `+dirty` when it has local changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
