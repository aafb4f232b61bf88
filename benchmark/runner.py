"""`liverbench run`: every suite entry x modality x seed: plan -> fit -> test -> external -> timing -> one record.

Runs are sequential, each in its own folder (see `benchmark.records`). Finished runs are skipped,
killed runs restart clean, a failing run is recorded and the suite goes on. Each stage is a small
function in `benchmark.stages`; `execute_run` reads top to bottom.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import socket
import sys
import time
import warnings
from pathlib import Path

from lightning.pytorch.callbacks import LearningRateMonitor
from rich.console import Console

from benchmark import records as rec
from benchmark.plan import RunSpec, load_preset, load_suite, plan_runs
from benchmark.shard import claim, finished, is_rank_zero, parse_shard, shard_runs
from benchmark.progress import StepProgress, SuiteProgress, failures, summary_table
from benchmark.external import resolve_external
from benchmark.stages.external import external_stage, needs_scoring, score_finished_run
from benchmark.stages.budget import ValidationCurve, budget_record
from benchmark.stages.fit import ensure_checkpoint, fit, fit_stage, load_best  # noqa: F401 (public names)
from benchmark.stages.interrupt import STOP as _STOP, interruptible, stop_if_interrupted
from benchmark.stages.plan import instantiate, plan
from benchmark.stages.record import finish_record, new_record
from benchmark.stages.test import evaluate, score_test_split  # noqa: F401
from benchmark.stages.timing import measure
from benchmark.tracking import Tracking, add_arguments as add_tracking_arguments, tracking_from_args
from common import locks
from common.files import DataError
from datamodules.volumes import NAN_POLICIES, nan_policy_env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liverbench run", description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="paper", help="paper | smoke | path to a suite YAML (default: paper)")
    p.add_argument("--data", default="phantom",
                   help="phantom (generated, default) | DIR in nnU-Net raw layout | ct=DIR,mri=DIR")
    p.add_argument("--modalities", default="ct,mri", help="comma list of ct, mri (default: ct,mri)")
    p.add_argument("--external", default=None,
                   help="also score each run on a real set of its modality: ct=DIR,mri=DIR or one DIR "
                        "(nnU-Net raw layout; DIR:N sets the liver label, default by name from dataset.json)")
    p.add_argument("--seeds", default="0", help="comma list of integer seeds (default: 0)")
    p.add_argument("--preset", default="cpu", help="cpu | gpu | path to a preset YAML (default: cpu)")
    p.add_argument("--out", default="results", help="results folder (default: results)")
    p.add_argument("--wandb", default=None, choices=["disabled", "offline", "online"],
                   help="W&B mode (default: online with an API key, else offline; WANDB_MODE is honoured)")
    p.add_argument("--project", default=os.environ.get("WANDB_PROJECT", "liverbench"), help="W&B project")
    add_tracking_arguments(p)
    p.add_argument("--upload-checkpoint", action="store_true",
                   help="also upload each run's model.ckpt to the trackers (default: its path only, as a tag)")
    p.add_argument("--resume", action="store_true",
                   help="also retry runs recorded as failed (finished runs are always skipped)")
    p.add_argument("--report", action="store_true", help="refresh OUT/leaderboard.md after the suite")
    p.add_argument("--strict", action="store_true", help="exit 1 if any run failed (default: only if all failed)")
    p.add_argument("--shard", default=None, metavar="K/N|auto",
                   help="run part K of N (0 <= K < N) of the plan, split by expected cost; auto: from the "
                        "SLURM array (SLURM_ARRAY_TASK_ID/COUNT). Shards share --out; see docs/cluster.md")
    p.add_argument("--dry-run", action="store_true",
                   help="the preset on one CPU process for a few steps (checks e.g. the gpu preset without a GPU)")
    p.add_argument("--nan-policy", choices=NAN_POLICIES, default=None,
                   help="NaN/Inf voxels in a scan: error (default) or fill (minimum finite value)")
    return p.parse_args(argv)


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in _csv(text)]
    except ValueError:
        raise DataError("--seeds", f"expected comma-separated integers, e.g. 0,1,2; got {text!r}") from None


def _os_error(exc: OSError, folder: Path | None = None) -> str:
    """`<path>: <problem>` for disk-full and permission errors (the commands print `error: ` first).
    A file outside the run's `folder` (a library's temp file) is named after the folder it was for."""
    name = exc.filename
    if folder is not None and (not name or not Path(str(name)).resolve().is_relative_to(Path(folder).resolve())):
        return f"{folder}: {exc.strerror or exc}" + (f" (writing {name})" if name else "")
    return f"{name or '?'}: {exc.strerror or exc}"


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    with nan_policy_env(args.nan_policy):
        return run_suite(args, argv)


def run_suite(args: argparse.Namespace, argv: list[str]) -> int:
    command = " ".join(["liverbench", "run", *argv])
    try:
        suite = load_suite(args.suite)
        preset = load_preset(args.preset)
        seeds = parse_seeds(args.seeds)
        shard = parse_shard(args.shard)
        runs = plan_runs(suite, preset, _csv(args.modalities), seeds, args.data, args.out, args.dry_run)
        planned = len(runs)
        runs = shard_runs(runs, *shard) if shard else runs
        external = resolve_external(args.external, _csv(args.modalities))  # checked before any training
        tracking = tracking_from_args(args.tracker, args.wandb, args.project, args.mlflow_uri, args.out,
                                      args.upload_checkpoint)
    except ValueError as exc:  # DataError included: names the file and the problem
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rank_zero = is_rank_zero()  # ranks >= 1 of a DDP run train along, nothing else (see benchmark.shard)
    with contextlib.ExitStack() as held:
        try:  # a plain run alone in --out, shard processes together (docs/cluster.md)
            if rank_zero:
                held.enter_context(locks.results_folder(args.out, shard is not None, command))
        except locks.LockHeld as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # --out not creatable (a file in the way, read-only, disk full)
            print(f"error: {_os_error(exc, Path(args.out))}", file=sys.stderr)
            return 2
        return _run_suite(args, suite, preset, runs, planned, shard, rank_zero, command, external, tracking)


def _run_suite(args, suite: dict, preset: dict, runs: list[RunSpec], planned: int, shard, rank_zero: bool,
               command: str, external: dict, tracking: Tracking) -> int:
    results: list[dict] = []
    interrupted = disk_error = False
    where = {"shard": f"{shard[0]}/{shard[1]}" if shard else None, "host": socket.gethostname(), "pid": os.getpid()}
    since = rec.now()
    with SuiteProgress(len(runs)) as progress, interruptible():
        part = f" (shard {where['shard']} of {planned} planned)" if shard else ""
        progress.log(f"suite {suite['name']}: {len(runs)} runs{part}, preset {preset['name']}, "
                     f"tracking: {tracking.describe()}, out {args.out}")
        for ext in external.values():
            progress.log(f"external {ext.modality}: {ext.name}, {ext.n} cases, liver labels {ext.liver_labels}")
        for spec in runs:
            if rank_zero:
                lock, previous, note = claim(spec, args.out, args.resume, command, since)
                skip = lock is None
            else:  # a DDP follower: rank zero decides from the same records
                lock, previous, note = None, rec.read_result(spec.folder), "already done"
                skip = finished(previous, args.resume, spec=spec)
            if skip and rank_zero and previous and needs_scoring(previous, external.get(spec.modality)):
                progress.log(f"{spec.name}: finished earlier; scoring its model.ckpt on the external set")
                previous = score_finished_run(spec.folder, previous, external[spec.modality])
            if skip:
                progress.log(f"skip {spec.name}: {note}")
                if previous:
                    results.append(previous)
                progress.finish_run()
                continue
            if rank_zero:
                progress.log(f"start {spec.name}" + (f" ({note})" if note else ""))
            try:
                record = execute_run(spec, tracking, progress, command, external.get(spec.modality),
                                     where=where, rank_zero=rank_zero, replaces=previous)
                results.extend([record] if record else [])
            except KeyboardInterrupt:
                interrupted = True
                progress.log(f"interrupted during {spec.name}; finished results are kept, "
                             "re-run the same command to continue")
                break
            except DataError as exc:  # the run folder holds a finished or unreadable record: left as it is
                progress.log(f"[red]error[/red]: {exc}")
                results.append({"suite": spec.suite, "variant": spec.variant, "modality": spec.modality,
                                "seed": spec.seed, "status": "failed", "error": str(exc)})
                progress.finish_run()
                continue
            except OSError as exc:  # disk full or results folder not writable: stop cleanly
                progress.log(f"stopping the suite: cannot write results ({exc.strerror or exc})")
                disk_error = f"error: {_os_error(exc, spec.folder)}"  # printed once the progress display is gone
                break
            finally:
                if lock is not None:
                    lock.release()
                    if lock.lost:
                        warnings.warn(f"{spec.name}: its lock {lock.path} was broken by another process "
                                      f"(heartbeat older than {lock.stale_after_s:.0f} s)")
            progress.finish_run()
            if _STOP.is_set():  # Ctrl-C after the run's record was written: stop before the next
                interrupted = True
                progress.log("interrupted; finished results are kept, re-run the same command to continue")
                break
    if disk_error:
        print(disk_error, file=sys.stderr)
    if not rank_zero:
        return 0
    console = Console(stderr=False, width=max(Console().width, 130))
    console.print(summary_table(results, title=f"LiverBench: suite {suite['name']} ({args.out})"))
    for line in failures(results):
        console.print(f"[red]failed[/red] {line}", highlight=False)
    suite_dir = Path(args.out) / suite["name"]
    if not interrupted and not disk_error:  # a full or read-only disk: write nothing more
        if shard:  # the summary run is made once, from every shard's records, by `report --tracker`
            if tracking.backends:
                names = ",".join(b.name for b in tracking.backends)
                console.print(f"shard {where['shard']}: once every shard is done, `liverbench report --results "
                              f"{args.out} --tracker {names}` makes the suite's summary run", highlight=False)
        else:
            tracking.summary(suite["name"], results, suite_dir)  # a failing tracker is warned about
        if args.report:
            from benchmark import report

            report.main(["--results", str(args.out), "--out", str(Path(args.out) / "leaderboard.md")])
    for hint in tracking.hints():
        console.print(hint, highlight=False)
    if interrupted:
        return 130
    if disk_error:
        return 2
    ok = [r.get("status") == "ok" for r in results]
    if not runs:  # more shards than runs: this one has nothing to do
        return 0
    return 0 if (all(ok) if args.strict else any(ok)) else 1


def execute_run(spec: RunSpec, tracking: Tracking, progress: SuiteProgress, command: str = "",
                external=None, where: dict | None = None, rank_zero: bool = True,
                replaces: dict | None = None) -> dict | None:
    """One run, start to record (`external`: the validated real set of its modality, or None;
    `replaces`: the finished record of a stale run re-run with --resume).
    Exceptions become a `failed` record; Ctrl-C propagates.

    On DDP ranks >= 1 (`rank_zero=False`) only the fit runs, with the same checkpoint logic (its
    saving is collective): no folder clean-up, tracking, test, timing or record; returns None."""
    from benchmark.tracking import RunTracking
    from benchmark.tracking.overlays import validation_overlays

    folder = rec.prepare_run_dir(spec.folder, replaces) if rank_zero else spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    record = new_record(spec, command, where)
    durations = record["durations"]  # wall-clock seconds per stage, for budgeting
    run_tracking, per_case, overlays, external_rows = RunTracking([]), [], [], []
    started = clock = time.perf_counter()
    fatal = None

    def lap(name: str) -> None:
        nonlocal clock
        durations[name] = time.perf_counter() - clock
        clock = time.perf_counter()

    try:
        config = plan(spec, folder, record)
        if rank_zero:
            run_tracking = tracking.start(record, folder)
        progress.start_run(spec.name, config["trainer"].get("max_steps"))
        curve = ValidationCurve(config["convergence"])
        images = run_tracking.wants_images
        # with a tracker: the learning rate per step too (where the convergence rule dropped it)
        callbacks = [StepProgress(progress), curve] + (
            [LearningRateMonitor("step")] if run_tracking.loggers else []) + (
            [validation_overlays(run_tracking)] if images else [])
        model, datamodule, trainer = instantiate(config, run_tracking.loggers, callbacks, folder)
        record["model"] = getattr(model, "model_name", None) or record["model"]
        clock = time.perf_counter()
        if not rank_zero:  # a DDP follower: train along; saving a checkpoint is collective
            fit(trainer, model, datamodule)
            ensure_checkpoint(trainer, folder / "model.ckpt")
            return None
        module, preprocessing = fit_stage(trainer, model, datamodule, folder, record)
        record["world_size"] = trainer.world_size
        lap("fit_s")
        record["budget"] = budget_record(trainer, datamodule.hparams.batch_size, durations["fit_s"],
                                         config["budget_limit"], curve)
        progress.set_run_stage("test")
        per_case, overlays = score_test_split(module, preprocessing, datamodule, config, folder, record,
                                              log_images=images)
        record["test_set"] = datamodule.test_set_info()
        lap("test_s")
        if external is not None:
            progress.set_run_stage("external")
            settings = record["evaluation"]  # the test split's: same post-processing and precision
            record["external"], external_rows = external_stage(module, preprocessing, external, folder,
                                                               settings["largest_component"], settings["precision"])
            if record["external"].get("error"):
                progress.log(f"[red]{spec.name}: external set not scored[/red]: {record['external']['error'][:200]}")
            lap("external_s")
        progress.set_run_stage("timing")
        record.update(measure(module, preprocessing, config, spec.modality, datamodule.test_records))
        lap("timing_s")
        record["preprocessing"] = preprocessing
        stop_if_interrupted()
        record["status"] = "ok"
    except KeyboardInterrupt:
        run_tracking.abort(record)
        raise
    except Exception as exc:  # recorded; the suite goes on (unless the disk is full)
        if not rank_zero:
            progress.log(f"{spec.name} failed on this rank: {exc}")
            return None
        record.update(rec.failure_fields(exc))
        if isinstance(exc, OSError):
            record["error"] = f"error: {_os_error(exc, folder)}"
        progress.log(f"[red]{spec.name} failed[/red]: {record['error'].splitlines()[0][:200]}")
        fatal = exc if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else None
    durations["total_s"] = time.perf_counter() - started
    finish_record(folder, record, run_tracking, per_case, overlays, external_rows,
                  tracking.upload_checkpoint)  # OSError: stops the suite
    if fatal is not None:
        raise fatal
    return record
