"""`python -m tools.ceiling DIR [DIR ...] [--preset cpu] [--spacing X Y Z]`: the Dice a resampling grid allows.

Each case's own ground truth is taken to the training grid by the Predictor's preprocessing (re-orientation,
linear resampling: the best margin a network could output there), brought back exactly as the Predictor
inverts a prediction, and scored against the original mask. No model trained on that grid can beat it, so
it is the ceiling to read a preset's real-scan Dice against.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from common.files import DataError


def oracle_mask(mask: np.ndarray, affine: np.ndarray, config: dict) -> np.ndarray:
    """The ground truth after a round trip through the grid of `config` (0/1 uint8, the input's shape)."""
    from benchmark.inference.predictor import Predictor

    identity = {**config, "intensity": {"method": "ct_window", "a_min": 0.0, "a_max": 1.0}, "crop_to_body": None}
    predictor = Predictor(torch.nn.Identity(), identity, "cpu", "fp32")
    grid, state = predictor.preprocess(mask.astype(np.float32), affine)
    return predictor.invert(grid[0, 0] - 0.5, state)  # margin > 0 where more than half the voxel is liver


def ceiling(folder: Path, preset: str, spacing: list[float] | None) -> list[dict]:
    from benchmark.scoring.metrics import case_metrics
    from datamodules.readers import load_case, read_dataset
    from datamodules.transforms import preprocessing_config

    config = preprocessing_config("ct", preset, spacing)  # only its grid matters: the intensity step is replaced
    rows = []
    for record in read_dataset(folder, None):
        case = load_case(record)
        metrics = case_metrics(oracle_mask(case.mask, case.affine, config) > 0, case.mask, case.spacing)
        rows.append({"case": record.case, "spacing": [round(float(s), 3) for s in case.spacing],
                     "grid": config["target_spacing"], "dice": metrics["dice"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.ceiling", description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="+", type=Path, help="folders in nnU-Net raw layout (liver label named)")
    p.add_argument("--preset", default="cpu", help="preprocessing preset whose grid is tested (default: cpu)")
    p.add_argument("--spacing", type=float, nargs=3, default=None, help="explicit grid spacing in mm instead")
    args = p.parse_args(argv)
    try:
        for folder in args.datasets:
            rows = ceiling(folder, args.preset, args.spacing)
            for r in rows:
                print(f"{folder.name}\t{r['case']}\tspacing {r['spacing']}\tgrid {r['grid']}\tDice {r['dice']:.4f}")
            print(f"{folder.name}\tmean Dice ceiling {np.mean([r['dice'] for r in rows]):.4f} over {len(rows)} cases")
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
