"""One run, start to record: plan -> fit -> test -> external -> timing, then result.json.

Each stage is a function in `benchmark.run.stages` that returns its values; `run_stages` keeps them in a
`StageResults` as they come (so a failed run records what it got to), and
`benchmark.run.stages.record.assemble_record` turns them into the run's `RunRecord`.
"""
from __future__ import annotations

import errno
import time
from pathlib import Path

from lightning.pytorch.callbacks import LearningRateMonitor

from benchmark.run import records as rec
from benchmark.run.plan import RunSpec
from benchmark.run.progress import StepProgress, SuiteProgress
from benchmark.run.stages.budget import budget_record, ValidationCurve
from benchmark.run.stages.build import instantiate, plan, wait_for_source
from benchmark.run.stages.external_scoring import external_stage
from benchmark.run.stages.fit import ensure_checkpoint, fit, fit_stage, load_best, transfer_of
from benchmark.run.stages.interrupt import stop_if_interrupted
from benchmark.run.stages.record import assemble_record, finish_record, StageResults, start_record
from benchmark.run.stages.test import score_test_split
from benchmark.run.stages.time_per_image import measure
from benchmark.tracking import RunTracking, Tracking

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # these stop the suite after the run is recorded


class Stopwatch:
    """Wall-clock seconds per stage (result.json `durations`, for budgeting), and the run's total."""

    def __init__(self):
        self.durations: dict[str, float] = {}
        self.started = self.clock = time.perf_counter()

    def restart(self) -> None:
        self.clock = time.perf_counter()

    def lap(self, name: str) -> None:
        self.durations[name] = time.perf_counter() - self.clock
        self.restart()

    def total(self) -> dict[str, float]:
        self.durations["total_s"] = time.perf_counter() - self.started
        return self.durations


def execute_run(spec: RunSpec, tracking: Tracking, progress: SuiteProgress, command: str = "",
                external=None, where: dict | None = None, rank_zero: bool = True,
                replaces: dict | None = None) -> dict | None:
    """One run, start to record (`external`: the validated real set of its modality, or None;
    `replaces`: the finished record of a stale run re-run with --resume). Returns the record written.
    Exceptions become a `failed` record; Ctrl-C propagates. On DDP ranks >= 1: `follow_run`."""
    if not rank_zero:
        return follow_run(spec, progress)
    folder = rec.prepare_run_dir(spec.folder, replaces)
    start, done, clock = start_record(spec, command, where), StageResults(), Stopwatch()
    run_tracking, fatal = RunTracking([]), None
    try:
        done.config = plan(spec, folder)
        wait_for_source(spec)
        run_tracking = tracking.start(assemble_record(start, done, clock.durations).to_dict(), folder)
        run_stages(spec, folder, run_tracking, progress, external, done, clock)
    except KeyboardInterrupt:
        run_tracking.abort(assemble_record(start, done, clock.durations).to_dict())
        raise
    except Exception as exc:  # recorded; the suite goes on (unless the disk is full)
        done.failure = failure_of(exc, folder)
        progress.log(f"[red]{spec.name} failed[/red]: {done.failure['error'].splitlines()[0][:200]}")
        fatal = exc if isinstance(exc, OSError) and exc.errno in DISK_FULL else None
    record = assemble_record(start, done, clock.total(), finished=rec.now())
    written = finish_record(folder, record, run_tracking, done, tracking.upload_checkpoint)  # OSError: stops the suite
    if fatal is not None:
        raise fatal
    return written


def run_stages(spec: RunSpec, folder: Path, run_tracking, progress: SuiteProgress, external,
               done: StageResults, clock: Stopwatch) -> None:
    """Rank zero's stages after the plan, in order; each one's values go into `done` as it returns."""
    model, datamodule, trainer, curve = build(spec, done.config, run_tracking, progress, folder)
    done.model_name, done.transfer = getattr(model, "model_name", None), transfer_of(model)
    clock.restart()
    done.checkpoint = fit_stage(trainer, model, datamodule, folder)
    module, preprocessing = load_best(folder / "model.ckpt")
    done.world_size = trainer.world_size
    clock.lap("fit_s")
    done.budget = budget_record(trainer, datamodule.hparams.batch_size, clock.durations["fit_s"],
                                done.config["budget_limit"], curve)
    progress.set_run_stage("test")
    done.scores = score_test_split(module, preprocessing, datamodule, done.config, folder,
                                   log_images=run_tracking.wants_images)
    done.test_set = datamodule.test_set_info()
    clock.lap("test_s")
    if external is not None:
        progress.set_run_stage("external")
        settings = done.scores.evaluation  # the test split's: same post-processing, precision and layout
        done.external, done.external_rows = external_stage(
            module, preprocessing, external, folder, settings["largest_component"], settings.get("opening_mm", 0.0),
            settings["precision"], settings["channels_last"])
        if done.external.get("error"):
            progress.log(f"[red]{spec.name}: external set not scored[/red]: {done.external['error'][:200]}")
        clock.lap("external_s")
    progress.set_run_stage("timing")
    done.measured = measure(module, preprocessing, done.config, spec.modality, datamodule.test_records)
    clock.lap("timing_s")
    done.preprocessing = preprocessing
    stop_if_interrupted()
    done.ok = True


def follow_run(spec: RunSpec, progress: SuiteProgress) -> None:
    """A DDP follower (rank >= 1) trains along with rank zero and the same checkpoint logic (saving is
    collective); no folder clean-up, tracking, test, timing or record. Its failure is only logged."""
    folder = Path(spec.folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        config = plan(spec, folder)
        wait_for_source(spec)
        model, datamodule, trainer, _ = build(spec, config, RunTracking([]), progress, folder)
        fit(trainer, model, datamodule)
        ensure_checkpoint(trainer, folder / "model.ckpt")
    except Exception as exc:
        progress.log(f"{spec.name} failed on this rank: {exc}")


def build(spec: RunSpec, config: dict, run_tracking, progress: SuiteProgress, folder: Path):
    """(model, DataModule, Trainer, validation curve) with the run's callbacks: progress, the curve
    (which may drop the learning rate or stop on a plateau), and with a tracker the learning rate per
    step and validation overlays."""
    from benchmark.tracking.overlays import validation_overlays

    progress.start_run(spec.name, config["trainer"].get("max_steps"))
    curve = ValidationCurve(config["convergence"])
    callbacks = [StepProgress(progress), curve] + (
        [LearningRateMonitor("step")] if run_tracking.loggers else []) + (
        [validation_overlays(run_tracking)] if run_tracking.wants_images else [])
    model, datamodule, trainer = instantiate(config, run_tracking.loggers, callbacks, folder)
    return model, datamodule, trainer, curve


def failure_of(exc: Exception, folder: Path) -> dict:
    """A failed run's status, error and traceback; a disk error names the path and the problem."""
    fields = rec.failure_fields(exc)
    if isinstance(exc, OSError):
        fields["error"] = f"error: {rec.os_error_text(exc, folder)}"
    return fields
