"""`liverbench data convert --format msd|lits|chaos|amos|dicom SRC DST` → nnU-Net raw layout.

Each format lives in its own module with `convert(src, dst, **options) -> Path`.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import time
from pathlib import Path

from common.files import DataError

FORMATS = {"msd": "msd", "lits": "lits", "chaos": "chaos", "amos": "amos", "dicom": "dicom_series"}


def convert(fmt: str, src: str | Path, dst: str | Path, **options) -> Path:
    """Convert SRC (format `fmt`) into the nnU-Net raw layout at DST; returns the dataset folder."""
    if fmt not in FORMATS:
        raise DataError(src, f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if not Path(src).exists():
        raise DataError(src, "source does not exist")
    if Path(src).resolve().is_relative_to(Path(dst).resolve()):  # a DST beside the task inside SRC is fine
        raise DataError(dst, f"output folder is, or holds, the source {src}: choose another DST")
    module = importlib.import_module(f"datamodules.convert.{FORMATS[fmt]}")
    try:
        return module.convert(src, dst, **options)
    except BaseException:  # a failed conversion leaves no partial dataset (see DatasetWriter)
        from datamodules.staging import PARTIAL

        dst = Path(dst)
        for partial in [*dst.parent.glob(f".{dst.name}{PARTIAL}{os.getpid()}"), *dst.glob(f".*{PARTIAL}{os.getpid()}")]:
            shutil.rmtree(partial, ignore_errors=True)
        raise


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="liverbench data convert", description=__doc__.splitlines()[0])
    p.add_argument("--format", required=True, choices=sorted(FORMATS))
    p.add_argument("src", help="dataset folder as downloaded (or a DICOM series folder)")
    p.add_argument("dst", help="output folder (nnU-Net raw layout)")
    p.add_argument("--modality", default=None,
                   help="amos: ct|mri (default both, as DST/ct and DST/mri); chaos: ct or t1in,t1out,t2; "
                        "dicom: ct|mri (default from the DICOM Modality tag)")
    p.add_argument("--mask", help="dicom: mask file (NIfTI, NRRD or DICOM SEG)")
    p.add_argument("--case", help="dicom: case name (default: the series folder name)")
    p.add_argument("--series", help="dicom: SeriesInstanceUID to convert when the folder holds several")
    p.add_argument("--liver-labels", help="label values that are liver, e.g. 1,2 (default per format)")
    return p


def main(argv: list[str] | None = None) -> int:
    from datamodules.labels import parse_label_option

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    try:
        options = {"liver_labels": parse_label_option(args.liver_labels), "modality": args.modality}
        if args.format == "dicom":
            options.update(mask=args.mask, case=args.case, series=args.series)
        elif args.format == "chaos" and args.modality is None:
            options["modality"] = "ct"
        out = convert(args.format, args.src, args.dst, **options)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only destination
        from datamodules.staging import os_error

        print(f"error: {os_error(exc, args.dst)}", file=sys.stderr)
        return 2
    print(f"converted {args.format} → {out} in {time.perf_counter() - start:.1f} s")
    return 0
