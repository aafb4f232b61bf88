"""File helpers shared by every writer: atomic writes and the one error type for bad input.

Atomic = write to a temporary file in the same folder, fsync, then `os.replace`, so a crash or
Ctrl-C leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


class DataError(ValueError):
    """Bad input data: the message always names the offending file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it over `path` only if the block succeeds."""
    path = Path(path)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), umask_mode())  # mkstemp's 0600 would hide shared results
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise _naming(exc, path, tmp_path) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _naming(exc: OSError, path: Path, tmp: Path | None = None) -> OSError:
    """The error as the user's output `path` (not the hidden temp file) and the problem."""
    if tmp is not None and exc.filename not in (None, str(tmp), str(path.parent)):
        return exc  # about another file (e.g. the input being read while writing): keep its name
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def umask_mode(base: int = 0o666) -> int:
    """The mode `open()` would give a new file under the process's umask (read, then restored)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return base & ~mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json_text(data))


def json_text(data: Any) -> str:
    """The text `atomic_write_json` writes (trackers upload the same bytes as result.json)."""
    return json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"


def _json_default(obj: Any) -> Any:
    """Numpy scalars/arrays and paths in JSON records."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

