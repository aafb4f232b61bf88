"""Record stage: the one place where a run's stage results become its `RunRecord`, and the end of a
run: tracking, then the atomic write of result.json (written last: its presence marks the run finished).

The stages never touch the record: each returns its values, `execute_run` keeps them in a
`StageResults`, and `assemble_record` maps them onto result.json's fields. A run that fails keeps
what the stages before the failure returned, exactly as result.json has always recorded it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmark.run import records as rec
from benchmark.run.plan import RunSpec
from benchmark.run.run_config import model_name
from benchmark.run.run_record import ABSENT, Absent, RunRecord
from benchmark.run.stages.test import SplitScores


@dataclass
class RunStart:
    """What is known before the first stage: which run, the command and checkout, where and when."""

    spec: RunSpec
    command: str
    where: dict  # shard, host, pid; empty outside a suite invocation
    versions: dict
    git_commit: str | None
    started: str


def start_record(spec: RunSpec, command: str = "", where: dict | None = None) -> RunStart:
    return RunStart(spec, command, dict(where or {}), rec.package_versions(), rec.git_commit(), rec.now())


@dataclass
class StageResults:
    """What the stages returned so far, in run order. A field stays at its default while its stage has
    not run: None for fields every record has, ABSENT for fields only a run that got that far has."""

    config: dict | None = None  # plan: the run config
    model_name: str | None = None  # instantiate: the built module's own name
    transfer: dict | Absent = ABSENT  # instantiate: where the pretrained weights came from
    checkpoint: dict | Absent = ABSENT  # fit: how model.ckpt was selected
    world_size: int | Absent = ABSENT  # fit: DDP processes
    budget: dict | None = None  # fit: steps, samples, learning curve
    scores: SplitScores | None = None  # test: metrics, evaluation settings, per-case rows
    test_set: dict | None = None  # test: which patients
    external: dict | None = None  # external: the summary block
    external_rows: list = field(default_factory=list)  # external: per-case rows, for the trackers
    measured: dict = field(default_factory=dict)  # timing: timing, params, flops, device
    preprocessing: dict | Absent = ABSENT  # the checkpoint's preprocessing, kept once every stage passed
    ok: bool = False  # every stage passed
    failure: dict = field(default_factory=dict)  # a failed run's status, error and traceback


def assemble_record(start: RunStart, done: StageResults, durations: dict, finished: str | Absent = ABSENT) -> RunRecord:
    """result.json's content from the run's start and what its stages returned."""
    spec, config, scores, failure = start.spec, done.config, done.scores, done.failure
    registry_name = model_name(config["model"]["class_path"]) if config is not None else None
    return RunRecord(
        status="ok" if done.ok else failure.get("status"), error=failure.get("error"),
        suite=spec.suite, entry=spec.index, variant=spec.variant, label=spec.label,
        model=done.model_name or registry_name, modality=spec.modality, seed=spec.seed,
        preset=spec.preset_name, data=spec.data, config=config,
        metrics=scores.metrics if scores else None, external=done.external,
        timing=done.measured.get("timing"), params=done.measured.get("params"),
        flops=done.measured.get("flops"), device=done.measured.get("device"),
        test_set=done.test_set, budget=done.budget, overrides=config["overrides"] if config is not None else None,
        versions=start.versions, git_commit=start.git_commit, command=start.command,
        shard=start.where.get("shard", ABSENT), host=start.where.get("host", ABSENT),
        pid=start.where.get("pid", ABSENT), started=start.started, durations=durations,
        transfer=done.transfer, checkpoint=done.checkpoint, world_size=done.world_size,
        postprocessing=scores.postprocessing if scores else ABSENT,
        evaluation=scores.evaluation if scores else ABSENT,
        metrics_convention=scores.convention if scores else ABSENT,
        preprocessing=done.preprocessing, traceback=failure.get("traceback", ABSENT), finished=finished)


def finish_record(folder: Path, record: RunRecord, tracking, done: StageResults,
                  upload_checkpoint: bool = False) -> dict:
    """Send the run to its trackers (`RunTracking`: an ok run's content, or a failed run closed), then
    write result.json. Tracking trouble is warned about inside and never loses the record."""
    content = record.to_dict()
    per_case, overlays = (done.scores.per_case, done.scores.overlays) if done.scores else ([], [])
    tracking.finish(content, folder, per_case, overlays, done.external_rows, upload_checkpoint)
    rec.write_result(folder, content)
    return content
