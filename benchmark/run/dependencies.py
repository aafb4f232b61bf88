"""Runs that start from another run (a suite entry with `init_from: {variant, modality}`, e.g. CT->MRI).

- `order`: in one invocation a source runs before the runs that start from it;
- `chains`: `--shard K/N` keeps a source and its dependents in one shard (deterministic, no waiting
  across shards);
- `source_checkpoint`: before a dependent run trains, its source must be `ok`; if the source is
  running in another process (its run lock is live) it waits for it, polling, up to a timeout.
  A missing or failed source is a DataError naming the source folder, recorded as the run's failure.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from common.files import DataError

WAIT_S = float(os.environ.get("LIVERBENCH_SOURCE_WAIT", 3600))
POLL_S = 5.0


def _depth(runs: list) -> list[int]:
    index = {r.folder: i for i, r in enumerate(runs)}

    def depth(i: int, seen: frozenset = frozenset()) -> int:
        src = index.get(getattr(runs[i], "source", None))
        if src is None or src in seen:
            return 0
        return 1 + depth(src, seen | {i})

    return [depth(i) for i in range(len(runs))]


def order(runs: list) -> list:
    """The plan with every source before its dependents (otherwise in plan order)."""
    depth = _depth(runs)
    return [runs[i] for i in sorted(range(len(runs)), key=lambda i: (depth[i], i))]


def chains(runs: list) -> list[list[int]]:
    """Plan indices grouped so a source and all runs starting from it share a group; groups and their
    members in plan order (no dependencies: one group per run)."""
    index = {r.folder: i for i, r in enumerate(runs)}
    root = list(range(len(runs)))

    def find(i: int) -> int:
        while root[i] != i:
            i = root[i]
        return i

    for i, r in enumerate(runs):
        src = index.get(getattr(r, "source", None))
        if src is not None:
            a, b = find(i), find(src)
            root[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(runs)):
        groups.setdefault(find(i), []).append(i)
    return [groups[k] for k in sorted(groups)]


def source_checkpoint(source: Path, suite: str, wait_s: float | None = None, poll_s: float = POLL_S) -> Path:
    """The source run's `model.ckpt` once its result.json is `ok`; DataError(source folder) otherwise."""
    from benchmark.run.records import read_result
    from common import locks

    source = Path(source)
    lock = locks.locks_dir(source.parent.parent) / suite / f"{source.name}.lock"
    deadline = time.monotonic() + (WAIT_S if wait_s is None else wait_s)
    while True:
        record = read_result(source)
        if record and record.get("status") == "ok":
            ckpt = source / "model.ckpt"
            if not ckpt.is_file():
                raise DataError(source, "source run is ok but its model.ckpt is missing")
            return ckpt
        holder = locks.read_lock(lock)
        running = holder is not None and not locks.is_stale(lock, holder)
        if not running:
            if record:
                error = str(record.get("error") or "no error recorded").splitlines()[0][:300]
                raise DataError(source, f"source run failed ({error}); fix and re-run it (--resume), then this run")
            raise DataError(source, "source run not found (no result.json): run its entry and modality "
                                    "in the same suite and seed first")
        if time.monotonic() > deadline:
            raise DataError(source, f"source run still running elsewhere (PID {holder.get('pid')} on host "
                                    f"{holder.get('host')}) after waiting {wait_s if wait_s is not None else WAIT_S:.0f} s")
        time.sleep(poll_s)
