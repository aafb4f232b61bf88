"""Lock files: exclusive create, live holders named, stale locks (dead PID, old heartbeat) recovered."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from common import locks


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(path, **fields):
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "token": "t0", "heartbeat": time.time(),
              "started_at": "2026-12-01T00:00:00Z", "command": "liverbench run x", **fields}
    path.write_text(json.dumps(holder))
    return holder


def test_second_acquire_names_the_live_holder_and_release_frees_it(tmp_path):
    path = tmp_path / "a.lock"
    first = locks.FileLock(path, command="liverbench run --out r").acquire()
    holder = json.loads(path.read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(locks.LockHeld, match=f"locked by PID {os.getpid()} on host") as err:
        locks.FileLock(path).acquire()
    assert "liverbench run --out r" in str(err.value) and str(path) in str(err.value)
    first.release()
    assert not path.exists()
    with locks.FileLock(path):  # free again
        assert path.exists()
    assert not path.exists()


def test_heartbeat_is_renewed_and_a_broken_lock_is_not_recreated(tmp_path):
    path = tmp_path / "hb.lock"
    lock = locks.FileLock(path, heartbeat_s=0.05).acquire()
    before = json.loads(path.read_text())["heartbeat"]
    end = time.monotonic() + 10
    while json.loads(path.read_text())["heartbeat"] <= before and time.monotonic() < end:
        time.sleep(0.05)
    assert json.loads(path.read_text())["heartbeat"] > before  # the thread beats
    lock.release()
    lock = locks.FileLock(path, heartbeat_s=3600).acquire()
    path.unlink()  # someone judged it stale and broke it, then took it
    write_lock(path, token="other")
    lock.renew()
    assert lock.lost and json.loads(path.read_text())["token"] == "other"
    lock.release()
    assert path.exists()  # not ours: left alone


def test_stale_locks_are_recovered(tmp_path):
    dead = tmp_path / "dead.lock"
    write_lock(dead, pid=dead_pid())  # same host, PID gone: a killed shard
    lock = locks.FileLock(dead).acquire()
    assert lock.broke["token"] == "t0" and json.loads(dead.read_text())["token"] == lock.token
    lock.release()

    old = tmp_path / "old.lock"  # another node that stopped beating
    write_lock(old, host="node-that-died", pid=1, heartbeat=time.time() - 1000)
    with locks.FileLock(old, stale_after_s=300) as lock:
        assert lock.broke["host"] == "node-that-died"

    live = tmp_path / "live.lock"  # another node, recent heartbeat: respected
    write_lock(live, host="other-node", pid=1)
    with pytest.raises(locks.LockHeld, match="PID 1 on host other-node"):
        locks.FileLock(live, stale_after_s=300).acquire()
    assert not list(tmp_path.glob("*.stale-*"))


def test_only_one_breaker_wins(tmp_path):
    path = tmp_path / "x.lock"
    stale = write_lock(path, pid=dead_pid())
    assert locks.break_stale(path, stale) is True
    fresh = locks.FileLock(path).acquire()  # a new owner got in before the slow breaker
    assert locks.break_stale(path, stale) is False  # slow breaker moved the wrong file: put back
    assert json.loads(path.read_text())["token"] == fresh.token
    fresh.release()


def test_results_folder_plain_runs_exclusive_shards_shared(tmp_path):
    out = tmp_path / "out"
    with locks.results_folder(out, sharded=False, command="liverbench run --out out"):
        with pytest.raises(locks.LockHeld, match=rf"{out}: in use by another `liverbench run`.*PID {os.getpid()}"):
            with locks.results_folder(out, sharded=False):
                pass
        with pytest.raises(locks.LockHeld, match="plain"):
            with locks.results_folder(out, sharded=True):
                pass
    assert not list((out / ".locks").glob("*.lock"))  # the refused shard removed its own lock

    other_shard = write_lock(out / ".locks" / "shard-node7-123.lock", host="node7", pid=123)
    with locks.results_folder(out, sharded=True):  # shards share the folder
        with pytest.raises(locks.LockHeld, match="shard.*PID 123 on host node7"):
            with locks.results_folder(out, sharded=False):
                pass
    assert json.loads((out / ".locks" / "shard-node7-123.lock").read_text()) == other_shard

    write_lock(out / ".locks" / "folder.lock", pid=dead_pid())  # a killed plain run
    (out / ".locks" / "shard-node7-123.lock").unlink()
    with locks.results_folder(out, sharded=False):
        pass
