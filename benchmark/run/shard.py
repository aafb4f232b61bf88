"""Spreading one suite over processes: `--shard K/N` (or `auto`), a cost-balanced split, DDP ranks.

The split is a pure function of the plan and N: runs are sorted by expected cost (largest first,
ties by plan position) and each goes to the shard with the least total so far (LPT greedy), then
every shard runs its share in plan order. Same plan + same N = same split, on every node.

Cost model (relative units, roughly CPU seconds on the cpu preset, see docs/cluster.md):
`cost = OVERHEAD + steps x STEP[dims] x MODALITY[modality]`, where `steps` is the run's
`trainer.max_steps` (or `max_epochs x EPOCH_STEPS` when training is epoch-based).
"""
from __future__ import annotations

import os
from pathlib import Path

from common.files import DataError

OVERHEAD = 20.0  # test + timing + start-up of one run, in step-units of a 2D step
STEP = {2: 0.3, 3: 0.45}  # measured seconds per optimiser step on the cpu preset (docs/runner.md)
MODALITY = {"ct": 1.0, "mri": 1.0}  # same patch budget for both; kept as a knob
EPOCH_STEPS = 50  # assumed steps per epoch when only max_epochs is known (the gpu preset)


def parse_shard(text: str | None, environ: dict | None = None) -> tuple[int, int] | None:
    """`"K/N"` (0 <= K < N) -> (K, N); `"auto"` from the SLURM array; None -> not sharded.

    `auto` uses `SLURM_ARRAY_TASK_ID` - `SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`
    (so `--array=1-8` works as well as `0-7`); outside a SLURM array it is `0/1`. torchrun's and
    Lightning's RANK/LOCAL_RANK are *not* shard numbers: those processes are the DDP ranks of one
    run and must all take the same runs (see `is_rank_zero`).
    """
    if text is None:
        return None
    env = os.environ if environ is None else environ
    if text == "auto":
        if "SLURM_ARRAY_TASK_ID" not in env:
            return 0, 1
        try:
            task, low = int(env["SLURM_ARRAY_TASK_ID"]), int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            count = int(env.get("SLURM_ARRAY_TASK_COUNT") or int(env["SLURM_ARRAY_TASK_MAX"]) - low + 1)
        except (KeyError, ValueError):
            raise ValueError("--shard auto: SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT are not integers") from None
        k, n = task - low, count
    else:
        try:
            k, n = (int(p) for p in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard must be K/N (e.g. 0/4) or auto, got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"--shard {k}/{n}: need 0 <= K < N (shards are numbered from 0)")
    return k, n


def expected_cost(spec) -> float:
    """The run's expected cost from its final config (preset layers applied); 1 step if unreadable."""
    from benchmark.run.run_config import build_config

    try:
        config = build_config(spec, spec.folder)
    except (ValueError, OSError):  # a broken entry fails fast when it runs
        return OVERHEAD
    trainer = config.get("trainer") or {}
    dims = int((config["data"].get("init_args") or {}).get("dims", 2))
    steps = trainer.get("max_steps") or -1
    if steps < 0:
        epochs = trainer.get("max_epochs") or 1
        steps = (epochs if epochs > 0 else 1) * EPOCH_STEPS
    return OVERHEAD + steps * STEP.get(dims, STEP[3]) * MODALITY.get(spec.modality, 1.0)


def split(costs: list[float], n: int) -> list[list[int]]:
    """Plan indices per shard: longest-processing-time-first greedy, deterministic, each in plan order."""
    loads, parts = [0.0] * n, [[] for _ in range(n)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        k = min(range(n), key=lambda k: (loads[k], k))
        loads[k] += costs[i]
        parts[k].append(i)
    return [sorted(p) for p in parts]


def shard_runs(runs: list, k: int, n: int) -> list:
    """This shard's runs, in plan order. A run and the runs that start from it (`init_from` entries)
    are split as one unit, so a dependent run always finds its source in its own shard."""
    from benchmark.run.dependencies import chains

    if n == 1:
        return list(runs)
    groups = chains(runs)
    costs = [sum(expected_cost(runs[i]) for i in g) for g in groups]
    return [runs[i] for i in sorted(i for g in split(costs, n)[k] for i in groups[g])]


RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def is_rank_zero(environ: dict | None = None) -> bool:
    """True unless a launcher (torchrun, Lightning's DDP launcher, srun) made this a non-zero rank.

    Lightning's own DDP launcher re-runs `liverbench run` for ranks >= 1 with LOCAL_RANK set;
    those processes train with rank zero but never lock, test, time, record or log to W&B.
    """
    env = os.environ if environ is None else environ
    for key in RANK_VARS:
        value = env.get(key)
        if value not in (None, ""):
            try:
                if int(value) != 0:
                    return False
            except ValueError:
                raise DataError(key, f"environment variable is not an integer rank: {value!r}") from None
    return True


def finished(record: dict | None, resume: bool, since: str | None = None, spec=None) -> bool:
    """Skip a run whose record is ok, or failed without --resume, or written by another process
    after `since` (this invocation's start: it was just retried elsewhere). With `spec`, an ok record
    whose config differs from what would run now (`benchmark.run.reuse`) is not finished under --resume."""
    if not record:
        return False
    if record.get("status") == "ok":
        return not (resume and spec is not None and stale(record, spec))
    if not resume:
        return True
    return since is not None and str(record.get("finished") or "") > since


def stale(record: dict, spec) -> list[str]:
    """The config changes that make an ok record stale for `spec` ([] = reusable)."""
    from benchmark.run.reuse import config_changes

    if record.get("status") != "ok":
        return []
    try:
        return config_changes(record, spec)
    except ValueError as exc:  # the entry cannot be built now: the old result is not what would run
        return [f"the config now fails: {exc}"]


def refusal(spec, changes: list[str]) -> dict:
    """What a plain re-run reports for a stale finished run: failed in this invocation, its files kept."""
    path = Path(spec.folder) / "result.json"
    return {"suite": spec.suite, "variant": spec.variant, "modality": spec.modality, "seed": spec.seed,
            "status": "failed", "error": f"error: {path}: finished with another config ({'; '.join(changes)}); "
                                         "its result is not reused; --resume re-runs it"}


def claim(spec, out, resume: bool, command: str, since: str | None = None):
    """`(lock, None, note)` when this process should run `spec` now (holding its run lock);
    `(None, record_or_None, reason)` when it should skip it (finished, or running elsewhere). A
    finished run whose config changed is refused without --resume; with it, `(lock, stale record,
    note saying why)`: the runner re-runs it, replacing that record (`records.prepare_run_dir`)."""
    from benchmark.run.records import read_result
    from common import locks

    previous = read_result(spec.folder)
    changes = stale(previous, spec) if previous else []
    if changes and not resume:
        return None, refusal(spec, changes), f"finished with another config ({'; '.join(changes)}); " \
                                                       "not reused: --resume re-runs it"
    if not changes and finished(previous, resume):
        return None, previous, f"already {previous.get('status')}" + (
            "" if previous.get("status") == "ok" else " (use --resume to retry)")
    lock = locks.run_lock(out, spec.suite, spec.name, command)
    try:
        lock.acquire()
    except locks.LockHeld as exc:
        h = exc.holder
        return None, None, f"running elsewhere (PID {h.get('pid')} on host {h.get('host')})"
    again = read_result(spec.folder)  # finished by another process between our check and the lock
    if finished(again, resume, since, spec):
        lock.release()
        return None, again, f"already {again.get('status')} (finished by another process)"
    note = f"re-run: config changed since it finished ({'; '.join(changes)})" if changes else None
    if lock.broke:
        note = f"took over the stale lock of PID {lock.broke.get('pid')} on host {lock.broke.get('host')}"
    return lock, (previous if changes else None), note
