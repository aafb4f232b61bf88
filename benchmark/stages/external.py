"""External stage (`liverbench run --external`): after the test split, score the same module on the real
set of the run's modality; `external_per_case.csv` beside result.json, the `external` block in it."""
from __future__ import annotations

from pathlib import Path

from benchmark.external import ExternalSet, score, summary_block
from benchmark.records import failure_fields, write_per_case


def external_stage(module, preprocessing: dict, ext: ExternalSet, folder: Path,
                   largest_component: bool = False) -> tuple[dict, list[dict]]:
    """The runner's external stage: score, write `external_per_case.csv` (atomic), return the block.
    A failure here is recorded in the block and keeps the run's own results (training is not lost)."""
    try:
        rows = score(module, preprocessing, ext, largest_component)
    except Exception as exc:  # the set was checked before training; a late surprise is recorded
        return {**ext.describe(), "error": failure_fields(exc)["error"]}, []
    write_per_case(folder, rows, "external_per_case.csv")
    return summary_block(ext, rows), rows
