"""Lock files that work on shared filesystems (NFS, Lustre, GPFS): one per run, one per results folder.

A lock is a small JSON file created with `O_CREAT | O_EXCL` (atomic on local disks and on NFSv3+)
holding the owner's host, PID, a random token and a heartbeat timestamp that a background thread
renews every `heartbeat_s`. A lock is *stale* when its owner is gone:

- same host and the PID is no longer alive (a killed or crashed process), or
- its heartbeat is older than `stale_after_s` (an owner on another node that died or lost the disk).

A stale lock is broken by renaming it to a unique name (only one process can win that rename),
checking that the renamed file is the one judged stale, and deleting it. See docs/cluster.md.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from common.files import DataError, atomic_write_text

HEARTBEAT_S = float(os.environ.get("LIVERBENCH_LOCK_HEARTBEAT", 30))
STALE_AFTER_S = float(os.environ.get("LIVERBENCH_LOCK_STALE_AFTER", 300))  # 10 missed heartbeats


class LockHeld(DataError):
    """Another live process holds the lock; `holder` is its JSON content (host, pid, ...)."""

    def __init__(self, path: str | os.PathLike, holder: dict, what: str = "locked"):
        self.holder = holder
        super().__init__(path, f"{what} by PID {holder.get('pid')} on host {holder.get('host')} "
                               f"(since {holder.get('started_at', '?')}, command: {holder.get('command') or '?'})")


def read_lock(path: str | os.PathLike) -> dict | None:
    """The lock's content; None when there is no lock; `{}` when it is being written right now."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        data = json.loads(text)
        return data if isinstance(data, dict) else {}
    except json.JSONDecodeError:
        return {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(path: str | os.PathLike, holder: dict, stale_after_s: float | None = None, now: float | None = None) -> bool:
    """Owner dead on this host, or no heartbeat for `stale_after_s` (a half-written lock: by its mtime)."""
    stale_after_s = STALE_AFTER_S if stale_after_s is None else stale_after_s
    now = time.time() if now is None else now
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        if not pid_alive(holder["pid"]):
            return True
    beat = holder.get("heartbeat")
    if not isinstance(beat, (int, float)):
        try:
            beat = os.stat(path).st_mtime
        except FileNotFoundError:
            return False  # gone already: nothing to break
    return now - beat > stale_after_s


class FileLock:
    """`with FileLock(path): ...`; `acquire()` raises `LockHeld` naming the live owner.

    Stale locks are broken and taken over. While held, a daemon thread renews the heartbeat;
    `lost` turns True if someone else broke the lock (our heartbeat stalled past `stale_after_s`).
    """

    def __init__(self, path: str | os.PathLike, command: str = "", kind: str = "run",
                 heartbeat_s: float | None = None, stale_after_s: float | None = None):
        self.path = Path(path)
        self.command, self.kind = command, kind
        self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.stale_after_s = STALE_AFTER_S if stale_after_s is None else stale_after_s
        self.token = secrets.token_hex(8)
        self.lost = False
        self.broke: dict | None = None  # the stale holder we took over from, if any
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> str:
        now = time.time()
        started = getattr(self, "_started", now)
        self._started = started
        return json.dumps({"kind": self.kind, "host": socket.gethostname(), "pid": os.getpid(),
                           "token": self.token, "command": self.command,
                           "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                           "started": started, "heartbeat": now}) + "\n"

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(self._content())
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def acquire(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # create; else break a stale lock and try again
            if self._try_create():
                self._start_heartbeat()
                return self
            holder = read_lock(self.path)
            if holder is None:
                continue  # released between our two calls
            if not is_stale(self.path, holder, self.stale_after_s):
                raise LockHeld(self.path, holder)
            if break_stale(self.path, holder):
                self.broke = holder
        raise LockHeld(self.path, read_lock(self.path) or {}, "could not take over the lock (contended)")

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lock-heartbeat {self.path.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.renew()

    def renew(self) -> None:
        """Refresh the heartbeat, only while the file is still ours (never recreate a broken lock)."""
        if (read_lock(self.path) or {}).get("token") != self.token:
            self.lost = True
            return
        with contextlib.suppress(OSError):  # a full or flaky disk: the next beat tries again
            atomic_write_text(self.path, self._content())

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if (read_lock(self.path) or {}).get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def break_stale(path: Path, holder: dict) -> bool:
    """Remove the stale lock `holder` read from `path`; False when another process got there first.

    Renaming is atomic, so only one breaker wins. If the file we moved is not the stale one
    (a new owner created a fresh lock in between), it is linked back unless a third lock exists.
    """
    aside = path.with_name(f"{path.name}.stale-{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = read_lock(aside) or {}
    if moved.get("token") != holder.get("token"):
        with contextlib.suppress(FileExistsError, OSError):
            os.link(aside, path)  # give the fresh owner its lock back
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True


def live_locks(folder: str | os.PathLike, pattern: str = "*.lock", stale_after_s: float | None = None) -> list[dict]:
    """The live (non-stale) locks in `folder`; stale ones are removed on the way."""
    out = []
    for path in sorted(Path(folder).glob(pattern)) if Path(folder).is_dir() else []:
        holder = read_lock(path)
        if holder is None:
            continue
        if is_stale(path, holder, stale_after_s):
            break_stale(path, holder)
        else:
            out.append({**holder, "path": str(path)})
    return out


# ---- the results folder: plain runs exclusive, shard processes shared -------------------------------
def locks_dir(out: str | os.PathLike) -> Path:
    return Path(out) / ".locks"


def run_lock(out: str | os.PathLike, suite: str, name: str, command: str = "") -> FileLock:
    """The per-run lock `OUT/.locks/<suite>/<run>.lock` (outside the run folder, which a retry empties)."""
    return FileLock(locks_dir(out) / suite / f"{name}.lock", command, kind="run")


@contextlib.contextmanager
def results_folder(out: str | os.PathLike, sharded: bool, command: str = ""):
    """Hold `OUT` for this process: a plain run alone (`OUT/.locks/folder.lock`), shard processes
    together (one `OUT/.locks/shard-<host>-<pid>.lock` each). Either kind refuses while a live
    process of the other kind works there: `LockHeld` naming `OUT` and the holder's PID.
    Each side writes its own lock before looking for the other's, so two starting together never
    both go ahead (at worst both refuse)."""
    folder = locks_dir(out)
    exclusive = folder / "folder.lock"
    if sharded:
        mine = FileLock(folder / f"shard-{socket.gethostname()}-{os.getpid()}.lock", command, kind="shard").acquire()
        holder = read_lock(exclusive)
        others = [holder] if holder is not None and not is_stale(exclusive, holder) else []
        what = "in use by a plain (non-shard) `liverbench run`"
    else:
        try:
            mine = FileLock(exclusive, command, kind="folder").acquire()
        except LockHeld as exc:
            raise LockHeld(out, exc.holder, "in use by another `liverbench run`") from None
        others = [h for h in live_locks(folder, "shard-*.lock")]
        what = "in use by `liverbench run --shard` processes; one is"
    if others:
        mine.release()
        raise LockHeld(out, others[0], what)
    try:
        yield mine
    finally:
        mine.release()
