"""`liverbench predict --checkpoint CKPT --input FILE.nii.gz|DICOM_DIR|FOLDER --output FILE.nii.gz|FOLDER`.

Writes a 0/1 liver mask in the input's exact geometry and prints the liver volume (ml) and the
time taken. A FOLDER of NIfTI files and/or DICOM series folders is predicted in batch into an
output folder, one `<case>.nii.gz` per scan (`<case>_0000.nii.gz` inputs lose the `_0000`).
The mask gets the post-processing the benchmark scored the checkpoint with (the run's result.json
`postprocessing`, beside the checkpoint), so it is the mask the leaderboard's numbers describe;
`--largest-component` / `--no-largest-component` and `--opening-mm` override it.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.files import DataError
from datamodules.readers import case_name
from datamodules.volumes import NAN_POLICIES, is_nifti, nan_policy_env, read_scan

PRECISION_CHOICES = ("auto", "fp32", "bf16")  # = benchmark.inference.predictor.PRECISION_CHOICES (not imported: torch)


def is_dicom_dir(folder: Path) -> bool:
    """A folder holding DICOM files directly (any names): the 'DICM' magic at byte 128."""
    for p in folder.iterdir():
        if p.is_file() and not p.name.startswith("."):
            with open(p, "rb") as fh:
                head = fh.read(132)
            if head[128:132] == b"DICM":
                return True
    return False


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def plan(input_path: Path, output: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one scan, or every scan in a folder (batch). Refuses an output that
    would overwrite an input or land inside a DICOM series folder, and a non-NIfTI output name."""
    single = input_path.is_file() or (input_path.is_dir() and is_dicom_dir(input_path))
    if output.suffix and not is_nifti(output) and not output.is_dir():
        raise DataError(output, "output must be a .nii.gz / .nii file (or a folder for batch input)")
    if single:
        if output.is_dir() or not is_nifti(output):
            output = output / f"{case_name(input_path)}.nii.gz"
        jobs = [(input_path, output)]
    elif not input_path.is_dir():
        raise DataError(input_path, "input does not exist")
    else:
        scans = sorted(p for p in input_path.iterdir() if not p.name.startswith(".")
                       and ((p.is_file() and is_nifti(p)) or (p.is_dir() and is_dicom_dir(p))))
        if not scans:
            raise DataError(input_path, "no NIfTI files or DICOM series folders to predict")
        if is_nifti(output):
            raise DataError(output, "batch input needs an output folder, not a .nii.gz file")
        jobs = [(p, output / f"{case_name(p)}.nii.gz") for p in scans]
    inputs = {src.resolve() for src, _ in jobs}
    for src, dst in jobs:
        if dst.resolve() in inputs or any(_inside(dst, s) for s, _ in jobs if s.is_dir()):
            raise DataError(dst, f"output would overwrite or write into the input {src}: choose another --output")
    return jobs


def check_device(device: str | None) -> None:
    """`--device cuda` on a machine without a usable GPU: a clear error instead of a CUDA traceback."""
    import torch

    if device and device.startswith("cuda") and not torch.cuda.is_available():
        raise DataError("--device", f"{device} requested but no CUDA GPU is available "
                                    "(torch.cuda.is_available() is False); use --device cpu")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="liverbench predict", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="model.ckpt written by liverbench run/fit")
    p.add_argument("--input", required=True, help="NIfTI file, DICOM series folder, or a folder of them")
    p.add_argument("--output", required=True, help="output .nii.gz (single scan) or folder (batch)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--modality", choices=("ct", "mri"), default=None,
                   help="default preprocessing for a checkpoint saved without one")
    p.add_argument("--series", default=None, help="SeriesInstanceUID to use when a DICOM folder holds several")
    p.add_argument("--nan-policy", choices=NAN_POLICIES, default=None,
                   help="NaN/Inf voxels in a scan: error (default) or fill (minimum finite value)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                   help="network precision: auto (default, the fastest: bf16 on a GPU or a CPU with AVX-512 "
                        "BF16/AMX, else fp32, channels-last on a CPU), fp32 (NCHW, the exact reference) or bf16 "
                        "(autocast, channels-last)")
    p.add_argument("--largest-component", action=argparse.BooleanOptionalAction, default=None,
                   help="keep only the largest connected component (default: as the checkpoint's run scored it)")
    p.add_argument("--opening-mm", type=float, default=None,
                   help="with --largest-component: choose it after an opening by a ball of this radius, cutting off "
                        "what hangs on by a thinner bridge (default: as the checkpoint's run scored it)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    with nan_policy_env(args.nan_policy):
        return _predict(args)


def postprocessing_of(checkpoint: Path, largest_component: bool | None = None,
                      opening_mm: float | None = None) -> tuple[dict, str]:
    """(post-processing, where it came from): the run's result.json `postprocessing` beside the checkpoint,
    each value overridden by the command line; none for a checkpoint without a run record."""
    from benchmark.run.records import read_result
    from benchmark.scoring.postprocessing import check_postprocessing

    path, record = checkpoint.parent / "result.json", read_result(checkpoint.parent)
    stored, source = {}, "no result.json beside the checkpoint"
    if path.is_file():
        if not isinstance(record, dict):
            raise DataError(path, "not a valid result.json: pass --largest-component / --no-largest-component")
        stored, source = record.get("postprocessing") or {}, f"as {path} records"
    post = {"largest_component": bool(stored.get("largest_component")),
            "opening_mm": float(stored.get("opening_mm") or 0.0)}
    if largest_component is not None or opening_mm is not None:
        source = "command line"
    if largest_component is not None:
        post["largest_component"] = largest_component
        if not largest_component:
            post["opening_mm"] = 0.0
    if opening_mm is not None:
        post["opening_mm"] = opening_mm
    try:
        check_postprocessing(**post)
    except ValueError as exc:
        raise DataError("--opening-mm", f"{exc} (--largest-component)") from None
    return post, source


def describe_postprocessing(post: dict) -> str:
    if not post["largest_component"]:
        return "none"
    return "largest component" + (f" after an opening of {post['opening_mm']:g} mm" if post["opening_mm"] else "")


def _predict(args) -> int:
    try:
        jobs = plan(Path(args.input), Path(args.output))
        with ThreadPoolExecutor(max_workers=1) as reader:
            # the first scan is read on the other core while torch is imported and the checkpoint loads
            # (0.2-0.3 s of a 2 s predict: `read_scan` is torch-free); then each next one while this one computes
            pending = reader.submit(read_scan, jobs[0][0], args.series)
            post, source = postprocessing_of(Path(args.checkpoint), args.largest_component, args.opening_mm)
            check_device(args.device)
            from benchmark.inference.predictor import Predictor

            start = time.perf_counter()
            predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, modality=args.modality,
                                                  precision=args.precision)
            s = predictor.settings
            print(f"loaded {args.checkpoint} on {predictor.device} ({s['precision']}"
                  f"{', channels-last' if s['channels_last'] else ''}, {s['threads']} threads) "
                  f"in {time.perf_counter() - start:.2f} s")
            print(f"post-processing: {describe_postprocessing(post)} ({source})")
            return _run_jobs(jobs, predictor, pending, reader, read_scan, args, start, post)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run_jobs(jobs, predictor, pending, reader, read_scan, args, start, post) -> int:
    failed = 0
    for k, (src, dst) in enumerate(jobs):
        try:
            scan = pending.result()
        except (DataError, OSError) as exc:  # reported below, like an error while predicting
            scan = exc
        if k + 1 < len(jobs):
            pending = reader.submit(read_scan, jobs[k + 1][0], args.series)
        try:
            if isinstance(scan, Exception):
                raise scan
            r = predictor.predict_to_file(src, dst, series=args.series, scan=scan, postprocessing=post)
        except DataError as exc:  # batch: report the bad scan and go on
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        except OSError as exc:  # disk full, read-only output
            print(f"error: {exc.filename or dst}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"{src} -> {dst}: liver {r['liver_ml']:.1f} ml, {r['seconds']:.2f} s")
    if len(jobs) > 1:
        print(f"{len(jobs) - failed} of {len(jobs)} scans in {time.perf_counter() - start:.1f} s"
              + (f"; {failed} failed (see errors above)" if failed else ""))
    return 2 if failed else 0
