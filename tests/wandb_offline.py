"""Read what an *offline* W&B run logged, so tests can assert on it without a server.

wandb >= 0.2x offline runs write no `wandb-summary.json`: everything logged lives in the run's
`run-<id>.wandb` file, a LevelDB-style log (32 KiB blocks of checksummed chunks, after a 7-byte
`:W&B` header) of protobuf `Record`s (`wandb.proto.wandb_internal_pb2`). `wandb.sdk.internal.
datastore` is gone from 0.31, so this module reads the log itself (~40 lines) and folds the
records into plain dicts: config, summary, history rows, tags/group/job_type, media files.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = struct.Struct("<4sHB")  # ident, magic, version
CHUNK = struct.Struct("<IHB")  # crc32, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_records(path: str | Path):
    """Yield every protobuf `Record` in a `.wandb` file, checking each chunk's crc32."""
    data = Path(path).read_bytes()
    ident, magic, _version = HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a W&B transaction log (header {ident!r} {magic:#x})")
    pos, pending = HEADER.size, b""
    while pos + CHUNK.size <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK.size:  # block trailer padding
            pos += left_in_block
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        if crc == 0 and length == 0 and kind == 0:  # zero padding / preallocated tail
            pos += left_in_block
            continue
        body = data[pos + CHUNK.size: pos + CHUNK.size + length]
        if zlib.crc32(bytes([kind]) + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: corrupt chunk at byte {pos}")
        pos += CHUNK.size + length
        if kind == FULL:
            yield _parse(body)
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE:
            pending += body
        elif kind == LAST:
            yield _parse(pending + body)
            pending = b""


def _parse(blob: bytes) -> pb.Record:
    record = pb.Record()
    record.ParseFromString(blob)
    return record


def _assign(target: dict, item) -> None:
    """Set `item`'s value in `target`; a `nested_key` (media, tables) becomes nested dicts."""
    path = [item.key] if item.key else list(item.nested_key)
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = json.loads(item.value_json)


def _remove(target: dict, item) -> None:
    target.pop(item.key if item.key else item.nested_key[0], None)


def _folded(items) -> dict:
    out: dict = {}
    for item in items:
        _assign(out, item)
    return out


@dataclass
class OfflineRun:
    """What one offline run logged, folded into plain Python values."""

    dir: Path
    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    exit_code: int | None = None

    def files(self, pattern: str = "**/*") -> list[Path]:
        return sorted(p for p in (self.dir / "files").glob(pattern) if p.is_file())

    def table(self, key: str) -> dict:
        """The JSON of a logged `wandb.Table` (`{"columns": [...], "data": [[...], ...]}`)."""
        ref = self.summary.get(key) or next((row[key] for row in reversed(self.history) if key in row), None)
        if not isinstance(ref, dict) or "path" not in ref:
            raise KeyError(f"no table logged under {key!r} in {self.dir}")
        return json.loads((self.dir / "files" / ref["path"]).read_text())

    def images(self) -> list[Path]:
        return self.files("media/images/**/*.png")


def _settled_records(path: Path, timeout_s: float = 60.0) -> list:
    """All records, once wandb-core (a separate process that may still be flushing after `finish()`
    returns) has written the file's tail: a half-written last chunk fails its crc, so read again."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        size = path.stat().st_size
        time.sleep(0.5)
        try:
            records = list(iter_records(path))
            if path.stat().st_size == size:  # nothing appended meanwhile: the writer is done
                return records
        except ValueError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return list(iter_records(path))


def read_offline_run(run_dir: str | Path) -> OfflineRun:
    """Parse `run_dir/run-<id>.wandb` (an `offline-run-...` folder) into an `OfflineRun`."""
    run_dir = Path(run_dir)
    logs = sorted(run_dir.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"{run_dir}: no run-*.wandb file")
    out = OfflineRun(dir=run_dir)
    for record in _settled_records(logs[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            out.run_id, out.project, out.group, out.job_type = r.run_id, r.project, r.run_group, r.job_type
            out.tags = list(r.tags)
            out.config.update(_folded(r.config.update))
        elif kind == "config":
            out.config.update(_folded(record.config.update))
            for item in record.config.remove:
                _remove(out.config, item)
        elif kind == "history":
            row = _folded(record.history.item)
            out.history.append(row)
            # wandb's default summary is the last logged value of each key.
            out.summary.update({k: v for k, v in row.items() if not k.startswith("_")})
        elif kind == "summary":
            out.summary.update(_folded(record.summary.update))
            for item in record.summary.remove:
                _remove(out.summary, item)
        elif kind == "exit":
            out.exit_code = record.exit.exit_code
    return out


def find_offline_runs(root: str | Path) -> list[OfflineRun]:
    """Every `offline-run-*` folder below `root`, parsed, in creation order."""
    return [read_offline_run(d) for d in sorted(Path(root).rglob("offline-run-*")) if d.is_dir()]
