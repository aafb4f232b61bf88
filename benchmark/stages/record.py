"""Record stage: the run's `result.json` skeleton, and at the end tracking then the atomic write
(written last: a result.json marks the run as finished)."""
from __future__ import annotations

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


def finish_record(folder: Path, record: dict, tracking, per_case: list, overlays: list,
                  external_rows: list | None = None, upload_checkpoint: bool = False) -> dict:
    """Send the run to its trackers (`RunTracking`: an ok run's content, or a failed run closed), then
    write result.json. Tracking trouble is warned about inside and never loses the record."""
    record["finished"] = rec.now()
    tracking.finish(record, folder, per_case, overlays, external_rows, upload_checkpoint)
    rec.write_result(folder, record)
    return record
