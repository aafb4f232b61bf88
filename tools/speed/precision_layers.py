"""How much of the 2D U-Net must stay fp32 for its bf16 mask to match the fp32 one: `Predictor` in bf16
(autocast, channels-last) with the first convolution and every convolution of at most N output channels in
fp32, for several N; each mask's Dice to the fp32 mask on the reference CT (512x512x100 at 0.8x0.8x2.5 mm)
and the network seconds, alternated in one process. Issue 10 asks for Dice >= 0.999 to fp32.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 .venv/bin/python -m tools.speed.precision_layers \\
        --checkpoint results/paper/unet_baseline__ct__seed0/model.ckpt
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

# `Predictor(fp32_max_channels=...)`: convolutions with at most that many output channels (and the first one)
# stay fp32 inside the bf16 autocast; the 2D U-Net's own choice is `models.unet2d.UNet2D.fp32_max_channels`
MAX_CHANNELS = (0, 16, 32, 64)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="a 2D U-Net (models.blocks.UNet) checkpoint")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "liverbench-speed")
    args = p.parse_args(argv)

    from benchmark.inference.predictor import Predictor
    from datamodules.volumes import read_scan
    from tools.speed.harness import alternate, machine, reference_ct

    scan = read_scan(reference_ct(args.work)[0])
    reference = Predictor.from_checkpoint(args.checkpoint, device="cpu", precision="fp32")
    x, state = reference.preprocess(scan.image, scan.affine)
    fp32_mask = reference.invert(reference.margin(x), state)
    predictors = {"fp32": reference}
    for channels in MAX_CHANNELS:
        name = f"bf16, first conv + convs <= {channels} channels fp32" if channels else "bf16, first conv fp32"
        predictors[name] = Predictor.from_checkpoint(args.checkpoint, device="cpu", precision="bf16",
                                                     fp32_max_channels=channels)
    print(machine())
    times = alternate({name: (lambda p=p: p.margin(x)) for name, p in predictors.items()}, repeats=args.repeats)
    print(f"{'network':<44} {'Dice to fp32 mask':>17} {'network s (median)':>19}")
    for name, p in predictors.items():
        print(f"{name:<44} {dice(p.invert(p.margin(x), state), fp32_mask):17.5f} {times[name]['median_s']:19.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
