"""`liverbench run`: every suite entry x modality x seed: plan -> fit -> test -> external -> timing -> one record.

Runs are sequential, each in its own folder (see `benchmark.run.records`). Finished runs are skipped,
killed runs restart clean, a failing run is recorded and the suite goes on. This module is the suite:
arguments, which runs to do (claim or skip), the DDP follower's view, the summary at the end;
one run is `benchmark.run.execute.execute_run`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

# Lightning before rich, always: typing caches Unions as equal whatever their order, so once rich.console
# has built an `Optional[Union[float, int]]`, the Trainer's `limit_val_batches: Optional[Union[int, float]]`
# comes out (float, int) and LightningCLI reads the smoke budget's `limit_val_batches: 1` as 1.0 (every
# validation batch instead of one). tests/test_runner.py checks this in a fresh process.
import lightning.pytorch  # noqa: F401, I001
from rich.console import Console

from benchmark.run import records as rec
from benchmark.run.execute import execute_run
from benchmark.run.plan import load_preset, load_suite, plan_runs, RunSpec
from benchmark.run.progress import failures, SuiteProgress, summary_table
from benchmark.run.shard import claim, finished, is_rank_zero, parse_shard, shard_runs
from benchmark.run.stages.external_scoring import needs_scoring, score_finished_run
from benchmark.run.stages.interrupt import interruptible, STOP
from benchmark.scoring.external import resolve_external
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
    rank_zero = is_rank_zero()  # ranks >= 1 of a DDP run train along, nothing else (see benchmark.run.shard)
    with contextlib.ExitStack() as held:
        try:  # a plain run alone in --out, shard processes together (docs/cluster.md)
            if rank_zero:
                held.enter_context(locks.results_folder(args.out, shard is not None, command))
        except locks.LockHeld as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # --out not creatable (a file in the way, read-only, disk full)
            print(f"error: {rec.os_error_text(exc, Path(args.out))}", file=sys.stderr)
            return 2
        where = {"shard": f"{shard[0]}/{shard[1]}" if shard else None, "host": socket.gethostname(), "pid": os.getpid()}
        ctx = SuiteRun(args, suite, runs, shard, rank_zero, command, external, tracking, where, rec.now())
        return _run_suite(ctx, preset, planned)


INTERRUPTED = "interrupted"  # why a suite stopped early; any other reason is the error line to print


@dataclass(frozen=True)
class SuiteRun:
    """What every run of one `liverbench run` invocation shares."""

    args: argparse.Namespace
    suite: dict
    runs: list[RunSpec]
    shard: tuple[int, int] | None
    rank_zero: bool  # False on DDP ranks >= 1: they train along, nothing else (see benchmark.run.shard)
    command: str
    external: dict  # modality -> ExternalSet
    tracking: Tracking
    where: dict  # shard, host, pid: recorded in every result.json
    since: str  # when this invocation started: records written later were written by another process


def _run_suite(ctx: SuiteRun, preset: dict, planned: int) -> int:
    """The runs in order, until the last or a reason to stop (Ctrl-C, a disk error); then the summary."""
    results: list[dict] = []
    stop = None
    with SuiteProgress(len(ctx.runs)) as progress, interruptible():
        part = f" (shard {ctx.where['shard']} of {planned} planned)" if ctx.shard else ""
        progress.log(f"suite {ctx.suite['name']}: {len(ctx.runs)} runs{part}, preset {preset['name']}, "
                     f"tracking: {ctx.tracking.describe()}, out {ctx.args.out}")
        for ext in ctx.external.values():
            progress.log(f"external {ext.modality}: {ext.name}, {ext.n} cases, liver labels {ext.liver_labels}")
        for spec in ctx.runs:
            stop = _next_run(ctx, spec, progress, results)
            if stop:
                break
    if stop and stop != INTERRUPTED:
        print(stop, file=sys.stderr)  # once the progress display is gone
    if not ctx.rank_zero:
        return 0
    return _summary(ctx, results, stop)


def _next_run(ctx: SuiteRun, spec: RunSpec, progress: SuiteProgress, results: list[dict]) -> str | None:
    """Skip or run `spec`, adding its record to `results`; why the suite must stop now, else None."""
    lock, previous, note, skip = _claim(ctx, spec, progress) if ctx.rank_zero else _follow(ctx, spec)
    if skip:
        progress.log(f"skip {spec.name}: {note}")
        results.extend([previous] if previous else [])
        progress.finish_run()
        return None
    if ctx.rank_zero:
        progress.log(f"start {spec.name}" + (f" ({note})" if note else ""))
    try:
        record = execute_run(spec, ctx.tracking, progress, ctx.command, ctx.external.get(spec.modality),
                             where=ctx.where, rank_zero=ctx.rank_zero, replaces=previous)
        results.extend([record] if record else [])
    except KeyboardInterrupt:
        progress.log(f"interrupted during {spec.name}; finished results are kept, re-run the same command to continue")
        return INTERRUPTED
    except DataError as exc:  # the run folder holds a finished or unreadable record: left as it is
        progress.log(f"[red]error[/red]: {exc}")
        results.append({"suite": spec.suite, "variant": spec.variant, "modality": spec.modality,
                        "seed": spec.seed, "status": "failed", "error": str(exc)})
        progress.finish_run()
        return None
    except OSError as exc:  # disk full or results folder not writable: stop cleanly
        progress.log(f"stopping the suite: cannot write results ({exc.strerror or exc})")
        return f"error: {rec.os_error_text(exc, spec.folder)}"
    finally:
        _release(lock, spec)
    progress.finish_run()
    if STOP.is_set():  # Ctrl-C after the run's record was written: stop before the next
        progress.log("interrupted; finished results are kept, re-run the same command to continue")
        return INTERRUPTED
    return None


def _claim(ctx: SuiteRun, spec: RunSpec, progress: SuiteProgress):
    """Rank zero: `(lock, previous, note, skip)` from `shard.claim`. A finished run skipped here that
    lacks the scores of this invocation's external set is scored now, from its model.ckpt."""
    lock, previous, note = claim(spec, ctx.args.out, ctx.args.resume, ctx.command, ctx.since)
    skip = lock is None
    ext = ctx.external.get(spec.modality)
    if skip and previous and needs_scoring(previous, ext):
        progress.log(f"{spec.name}: finished earlier; scoring its model.ckpt on the external set")
        previous = score_finished_run(spec.folder, previous, ext)
    return lock, previous, note, skip


def _follow(ctx: SuiteRun, spec: RunSpec):
    """A DDP follower (rank >= 1) takes no lock: it decides from the same records as rank zero."""
    previous = rec.read_result(spec.folder)
    return None, previous, "already done", finished(previous, ctx.args.resume, spec=spec)


def _release(lock, spec: RunSpec) -> None:
    if lock is not None:
        lock.release()
        if lock.lost:
            warnings.warn(f"{spec.name}: its lock {lock.path} was broken by another process "
                          f"(heartbeat older than {lock.stale_after_s:.0f} s)")


def _summary(ctx: SuiteRun, results: list[dict], stop: str | None) -> int:
    """Rank zero, after the runs: the table and failures, the trackers' summary run and the report
    (unless the suite stopped early), closing hints; the exit code."""
    args, name = ctx.args, ctx.suite["name"]
    console = Console(stderr=False, width=max(Console().width, 130))
    console.print(summary_table(results, title=f"LiverBench: suite {name} ({args.out})"))
    for line in failures(results):
        console.print(f"[red]failed[/red] {line}", highlight=False)
    if not stop:  # interrupted, or a full or read-only disk: write nothing more
        if not ctx.shard:
            ctx.tracking.summary(name, results, Path(args.out) / name)  # a failing tracker is warned about
        elif ctx.tracking.backends:  # the summary run is made once, from every shard's records
            trackers = ",".join(b.name for b in ctx.tracking.backends)
            console.print(f"shard {ctx.where['shard']}: once every shard is done, `liverbench report --results "
                          f"{args.out} --tracker {trackers}` makes the suite's summary run", highlight=False)
        if args.report:
            from benchmark import report

            report.main(["--results", str(args.out), "--out", str(Path(args.out) / "leaderboard.md")])
    for hint in ctx.tracking.hints():
        console.print(hint, highlight=False)
    return _exit_code(ctx, results, stop)


def _exit_code(ctx: SuiteRun, results: list[dict], stop: str | None) -> int:
    """130 after Ctrl-C, 2 after a disk error; 1 when no run is ok (with --strict: when any failed)."""
    if stop:
        return 130 if stop == INTERRUPTED else 2
    ok = [r.get("status") == "ok" for r in results]
    if not ctx.runs:  # more shards than runs: this one has nothing to do
        return 0
    return 0 if (all(ok) if ctx.args.strict else any(ok)) else 1
