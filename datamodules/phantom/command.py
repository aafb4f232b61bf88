"""`liverbench data phantom`: write the phantom dataset from the command line."""
from __future__ import annotations

import argparse
import sys
import time

from .writer import write_phantom_dataset


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="liverbench data phantom",
                                description="Generate the abdominal CT/MRI liver phantom (nnU-Net raw layout).")
    p.add_argument("--modality", choices=("ct", "mri"), default="ct")
    p.add_argument("--cases", type=int, default=20, help="number of patients (MRI: 2 scans each)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spacing", type=float, nargs="+", metavar="MM",
                   help="voxel spacing in mm: 1 value (isotropic) or 3 (x y z); default: native, random per case")
    p.add_argument("--phase", choices=("random", "native", "arterial", "portal", "delayed"), default="random",
                   help="CT contrast phase (random: drawn per case)")
    p.add_argument("--noise", type=float, default=1.0, help="noise multiplier (0 = none)")
    p.add_argument("--lesions", type=int, default=6, help="maximum lesions per case (0 = none)")
    p.add_argument("--sequences", default="t1,t2", help="MRI sequences to write")
    p.add_argument("--fov", choices=("random", "full"), default="random",
                   help="'random': some scans start or stop inside the liver; 'full': whole liver")
    p.add_argument("--bias", type=float, default=1.0, help="MRI bias-field multiplier (0 = none)")
    p.add_argument("--randomised", action="store_true",
                   help="domain-randomised intensities (SynthSeg-style) instead of CT/MRI contrast")
    p.add_argument("--randomised-share", type=float, default=0.0, metavar="P",
                   help="render this share of the scans (0..1, drawn per case) domain-randomised in the modality's "
                        "own scale (HU for CT)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.spacing is not None and len(args.spacing) not in (1, 3):
        print("error: --spacing takes 1 or 3 values (mm)", file=sys.stderr)
        return 2
    if args.spacing is not None and min(args.spacing) <= 0:
        print("error: --spacing values must be > 0", file=sys.stderr)
        return 2
    if args.cases < 1:
        print("error: --cases must be >= 1", file=sys.stderr)
        return 2
    start = time.perf_counter()
    progress = None if args.quiet else (lambda name: print(f"wrote {name}", flush=True))
    try:
        out = write_phantom_dataset(args.out, args.modality, args.cases, args.seed, args.spacing,
                                    sequences=args.sequences, progress=progress, phase=args.phase,
                                    noise=args.noise, lesions=args.lesions, fov=args.fov, bias=args.bias,
                                    randomised=args.randomised, randomised_share=args.randomised_share)
    except ValueError as exc:  # DataError included: names the file and the problem
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # read-only or full output folder: nothing of it is left behind
        from datamodules.staging import os_error

        print(f"error: {os_error(exc, args.out)}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"phantom dataset in {out} ({time.perf_counter() - start:.1f} s)")
    return 0
