"""`liverbench predict --checkpoint CKPT --input FILE.nii.gz|DICOM_DIR|FOLDER --output FILE.nii.gz|FOLDER`.

Writes a 0/1 liver mask in the input's exact geometry and prints the liver volume (ml) and the
time taken. A FOLDER of NIfTI files and/or DICOM series folders is predicted in batch into an
output folder, one `<case>.nii.gz` per scan (`<case>_0000.nii.gz` inputs lose the `_0000`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmark.inference import Predictor, is_nifti
from datamodules.files import DataError
from datamodules.readers import case_name


def is_dicom_dir(folder: Path) -> bool:
    """A folder holding DICOM files directly (any names): the 'DICM' magic at byte 128."""
    for p in folder.iterdir():
        if p.is_file() and not p.name.startswith("."):
            with open(p, "rb") as fh:
                head = fh.read(132)
            if head[128:132] == b"DICM":
                return True
    return False


def plan(input_path: Path, output: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one scan, or every scan in a folder (batch)."""
    if input_path.is_file() or (input_path.is_dir() and is_dicom_dir(input_path)):
        if output.is_dir() or not is_nifti(output):
            output = output / f"{case_name(input_path)}.nii.gz"
        return [(input_path, output)]
    if not input_path.is_dir():
        raise DataError(input_path, "input does not exist")
    scans = sorted(p for p in input_path.iterdir() if not p.name.startswith(".")
                   and ((p.is_file() and is_nifti(p)) or (p.is_dir() and is_dicom_dir(p))))
    if not scans:
        raise DataError(input_path, "no NIfTI files or DICOM series folders to predict")
    if is_nifti(output):
        raise DataError(output, "batch input needs an output folder, not a .nii.gz file")
    return [(p, output / f"{case_name(p)}.nii.gz") for p in scans]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="liverbench predict", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="model.ckpt written by liverbench run/fit")
    p.add_argument("--input", required=True, help="NIfTI file, DICOM series folder, or a folder of them")
    p.add_argument("--output", required=True, help="output .nii.gz (single scan) or folder (batch)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--modality", choices=("ct", "mri"), default=None,
                   help="default preprocessing for a checkpoint saved without one")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        jobs = plan(Path(args.input), Path(args.output))
        start = time.perf_counter()
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, modality=args.modality)
        print(f"loaded {args.checkpoint} on {predictor.device} in {time.perf_counter() - start:.2f} s")
        for src, dst in jobs:
            r = predictor.predict_to_file(src, dst)
            print(f"{src} -> {dst}: liver {r['liver_ml']:.1f} ml, {r['seconds']:.2f} s")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(jobs) > 1:
        print(f"{len(jobs)} scans in {time.perf_counter() - start:.1f} s")
    return 0
