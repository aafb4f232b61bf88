"""Evaluation speed: `case_metrics` (fast surface band) vs the previous MONAI-based path on the
reference CT's liver mask (512x512x100 at 0.8x0.8x2.5 mm) against a shifted, dilated prediction
with a far-away island, alternated in one process.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 .venv/bin/python -m tools.speed.evaluate_speed
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "liverbench-speed")
    args = p.parse_args(argv)
    from scipy import ndimage

    from benchmark.scoring.metrics import case_metrics
    from datamodules.volumes import read_volume
    from tools.speed.harness import alternate, machine, reference_ct, report
    from tools.speed.reference import monai_case_metrics

    _, label_path = reference_ct(args.work)
    label = read_volume(label_path)
    gt, spacing = label.array > 0, label.spacing
    pred = ndimage.binary_dilation(np.roll(gt, 3, axis=0))
    pred[100:110, 400:410, 10:15] = True
    pred = np.asfortranarray(pred)  # as read from a NIfTI file, like the ground truth
    new, old = case_metrics(pred, gt, spacing), monai_case_metrics(pred, gt, spacing)
    worst = max(abs(new[k] - old[k]) for k in old)
    print(machine())
    print(f"case {gt.shape} at {tuple(round(s, 3) for s in spacing)} mm; metrics {new}")
    print(f"largest |new - previous| over all metrics: {worst:.3g}")
    report(f"case_metrics, {args.repeats} repeats alternated", alternate({
        "fast (surface band)": lambda: case_metrics(pred, gt, spacing),
        "previous (MONAI KD-tree)": lambda: monai_case_metrics(pred, gt, spacing),
    }, repeats=args.repeats))
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    raise SystemExit(main())
