"""`liverbench data download msd-liver|chaos DST`: fetch, verify, extract safely, convert.

Downloads resume through HTTP Range into `<file>.part`; a checksum mismatch deletes the bad
file and raises `DataError`. Archives are extracted with path-traversal checks.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from common.files import DataError, atomic_write_text

# MSD URL and md5 as in MONAI's DecathlonDataset resource table (monai/apps/datasets.py).
# CHAOS: Zenodo record 3431873; no published md5 was found, so the sha256 of the first
# download is recorded next to the archive and later downloads are checked against it.
SOURCES: dict[str, dict] = {
    "msd-liver": {
        "url": "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task03_Liver.tar",
        "filename": "Task03_Liver.tar",
        "hash": ("md5", "a90ec6c4aa7f6a3d087205e23d4e6397"),
        "convert": [("msd", "msd-liver", {})],
    },
    "chaos": {
        "url": "https://zenodo.org/records/3431873/files/CHAOS_Train_Sets.zip?download=1",
        "filename": "CHAOS_Train_Sets.zip",
        "hash": None,
        "convert": [("chaos", "chaos-ct", {"modality": "ct"}),
                    ("chaos", "chaos-mri", {"modality": "t1in,t1out,t2"})],
    },
}
CHUNK = 1 << 20


def file_hash(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _progress(total: int | None, start: int, name: str, enabled: bool):
    from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                               TransferSpeedColumn)

    progress = Progress("[bold]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), disable=not enabled, transient=False)
    task = progress.add_task(name, total=total, completed=start)
    return progress, task


def fetch(url: str, dest: str | Path, expected: tuple[str, str] | None = None, progress: bool = True,
          timeout: float = 60.0) -> Path:
    """Download `url` to `dest` (resuming `dest.part`), verify `expected=(algo, hex)`, return `dest`.

    An existing `dest` that verifies is kept. On a mismatch the file is deleted and a `DataError`
    says so. Without `expected`, the sha256 is recorded in `dest.sha256` on first download and
    checked on later ones (trust on first use)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    record = dest.with_name(dest.name + ".sha256")
    if expected is None and record.is_file():
        expected = ("sha256", record.read_text().split()[0])
    if dest.is_file():
        if expected is None or file_hash(dest, expected[0]) == expected[1]:
            return dest
        dest.unlink()  # stale or corrupt: fetch again
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "liverbench"})
    if done:
        request.add_header("Range", f"bytes={done}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and done:  # the part file already holds the whole file
            response = None
        else:
            raise DataError(url, f"download failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(url, f"download failed: {getattr(exc, 'reason', exc)}") from None
    if response is not None:
        with response:
            if done and response.status != 206:
                done = 0  # server ignored Range: start over
            length = response.headers.get("Content-Length")
            total = done + int(length) if length else None
            bar, task = _progress(total, done, dest.name, progress)
            with bar, open(part, "ab" if done else "wb") as out:
                try:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        out.write(block)
                        bar.advance(task, len(block))
                except (OSError, http.client.HTTPException) as exc:
                    raise DataError(url, f"download interrupted after {part.stat().st_size} bytes "
                                         f"({exc!r}); run again to resume") from None
        if total is not None and part.stat().st_size < total:
            raise DataError(url, f"download interrupted after {part.stat().st_size} of {total} bytes; "
                                 "run again to resume")
    if expected is not None:
        actual = file_hash(part, expected[0])
        if actual != expected[1]:
            part.unlink()
            raise DataError(dest, f"{expected[0]} mismatch: expected {expected[1]}, got {actual}; "
                                  "the downloaded file was deleted, run again")
    else:
        atomic_write_text(record, f"{file_hash(part, 'sha256')}  {dest.name}\n")
        print(f"note: no published checksum for {dest.name}; recorded its sha256 in {record}")
    part.replace(dest)
    return dest


def _inside(root: Path, name: str) -> bool:
    target = (root / name).resolve()
    return target == root or root in target.parents


def safe_extract(archive: str | Path, out_dir: str | Path) -> Path:
    """Extract a tar/zip, refusing absolute paths, `..`, links and devices that leave `out_dir`."""
    archive, out_dir = Path(archive), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if not _inside(root, name):
                    raise DataError(archive, f"unsafe path in archive: {name!r}")
            zf.extractall(out_dir)
        return out_dir
    try:
        tar = tarfile.open(archive)
    except tarfile.TarError as exc:
        raise DataError(archive, f"not a tar or zip archive ({exc})") from None
    with tar:
        members = tar.getmembers()
        for m in members:
            if not _inside(root, m.name) or m.issym() or m.islnk() or m.isdev():
                raise DataError(archive, f"unsafe member in archive: {m.name!r}")
        tar.extractall(out_dir, members=members, filter="data")
    return out_dir


def download(name: str, dst: str | Path, convert: bool = True, keep_archive: bool = True,
             progress: bool = True) -> list[Path]:
    """Fetch dataset `name` into DST/downloads, extract into DST/raw, convert into DST/<dataset>."""
    if name not in SOURCES:
        raise DataError(name, f"unknown dataset (choose from {', '.join(SOURCES)})")
    src = SOURCES[name]
    dst = Path(dst)
    archive = fetch(src["url"], dst / "downloads" / src["filename"], src["hash"], progress=progress)
    raw = dst / "raw" / name
    marker = raw / ".extracted"
    if not marker.is_file() or marker.read_text().strip() != archive.name:
        if raw.exists():
            shutil.rmtree(raw)
        safe_extract(archive, raw)
        atomic_write_text(marker, archive.name + "\n")
    if not keep_archive:
        archive.unlink()
    if not convert:
        return [raw]
    from datamodules.convert import convert as run_convert

    outputs = []
    for fmt, folder, options in src["convert"]:
        if (dst / folder / "dataset.json").is_file():
            print(f"already converted: {dst / folder}")
            outputs.append(dst / folder)
            continue
        outputs.append(run_convert(fmt, raw, dst / folder, **options))
    return outputs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="liverbench data download", description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=sorted(SOURCES))
    p.add_argument("dst", help="folder for downloads/, raw/ and the converted dataset(s)")
    p.add_argument("--no-convert", action="store_true", help="only download, verify and extract")
    p.add_argument("--delete-archive", action="store_true", help="remove the archive after extraction")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        outputs = download(args.dataset, args.dst, convert=not args.no_convert,
                           keep_archive=not args.delete_archive, progress=not args.quiet)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for out in outputs:
        print(f"ready: {out}" + ("" if args.no_convert else f"  (liverbench run --data {out})"))
    return 0
