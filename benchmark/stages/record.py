"""Record stage: the run's `result.json` skeleton, and at the end W&B logging then the atomic write
(written last: a result.json marks the run as finished)."""
from __future__ import annotations

import warnings
from pathlib import Path

from benchmark import records as rec
from benchmark.plan import RunSpec


def new_record(spec: RunSpec, command: str = "", where: dict | None = None) -> dict:
    """Every field of result.json, unset until its stage fills it; `where`: shard, host, pid."""
    return {"status": None, "error": None, "suite": spec.suite, "entry": spec.index, "variant": spec.variant,
            "label": spec.label, "model": None, "modality": spec.modality, "seed": spec.seed,
            "preset": spec.preset_name, "data": spec.data, "config": None, "metrics": None,
            "external": None, "timing": None, "params": None, "flops": None, "device": None,
            "test_set": None, "budget": None, "overrides": None,
            "versions": rec.package_versions(), "git_commit": rec.git_commit(), "command": command,
            **(where or {}), "started": rec.now(), "durations": {}}


def finish_record(folder: Path, record: dict, logger, per_case: list, overlays: list, name: str,
                  external_rows: list | None = None) -> dict:
    """Log an ok run to W&B (or abort its W&B run), then write result.json. W&B trouble never loses it."""
    from benchmark.wandb_logging import abort_run, log_result

    record["finished"] = rec.now()
    try:
        if record["status"] == "ok":
            log_result(logger, record, per_case, overlays, external_rows)
        else:
            abort_run(logger)
    except Exception as exc:
        warnings.warn(f"W&B logging failed for {name}: {exc}")
    rec.write_result(folder, record)
    return record
