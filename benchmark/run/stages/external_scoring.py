"""External stage (`liverbench run --external`): after the test split, score the same module on the real
set of the run's modality; `external_per_case.csv` beside result.json, the `external` block in it."""
from __future__ import annotations

from pathlib import Path

from benchmark.run.records import failure_fields, write_per_case
from benchmark.scoring.external import ExternalSet, score, summary_block


def external_stage(module, preprocessing: dict, ext: ExternalSet, folder: Path,
                   largest_component: bool = False, opening_mm: float = 0.0, precision: str = "fp32",
                   channels_last: bool | None = None) -> tuple[dict, list[dict]]:
    """The runner's external stage: score, write `external_per_case.csv` (atomic), return the block.
    A failure here is recorded in the block and keeps the run's own results (training is not lost)."""
    try:
        rows, _ = score(module, preprocessing, ext, largest_component, opening_mm, precision, channels_last)
    except Exception as exc:  # the set was checked before training; a late surprise is recorded
        return {**ext.describe(), "error": failure_fields(exc)["error"]}, []
    write_per_case(folder, rows, "external_per_case.csv")
    return summary_block(ext, rows), rows


def score_finished_run(folder: Path, record: dict, ext: ExternalSet) -> dict:
    """A run finished earlier without this set's scores (e.g. `make bench` first, `EXTERNAL=...` later):
    score its `model.ckpt` now and rewrite result.json (atomic) with the new `external` block, without
    retraining. Returns the new record; `record` (as read from disk) is left as it was."""
    from benchmark.run.records import write_result
    from benchmark.run.stages.fit import load_best

    folder = Path(folder)
    post = record.get("postprocessing") or {}
    largest, opening_mm = bool(post.get("largest_component")), float(post.get("opening_mm") or 0.0)
    evaluation = record.get("evaluation") or {}  # as the test split was scored; a record without
    precision = evaluation.get("precision", "fp32")  # `channels_last` gets the precision's default layout
    try:
        module, preprocessing = load_best(folder / "model.ckpt")
    except Exception as exc:
        block = {**ext.describe(), "error": failure_fields(exc)["error"]}
    else:
        block, _ = external_stage(module, preprocessing, ext, folder, largest, opening_mm, precision,
                                  evaluation.get("channels_last"))
    rescored = {**record, "external": block}
    write_result(folder, rescored)
    return rescored


def needs_scoring(record: dict, ext: ExternalSet | None) -> bool:
    """True for an ok record that has no scores for `ext` (none, an error, or another set's)."""
    if ext is None or record.get("status") != "ok":
        return False
    done = record.get("external") or {}
    return not (done.get("metrics") and done.get("path") == str(ext.path) and done.get("liver_labels") == ext.liver_labels)
