"""Where the 2D U-Net's bf16 mask parts from its fp32 one: keep some blocks in fp32 (the rest bf16 autocast,
channels-last, as `Predictor` runs it) and report each mask's Dice to the fp32 mask on the reference CT
(512x512x100 at 0.8x0.8x2.5 mm) and the network seconds, alternated in one process. Issue 10 asks for
Dice >= 0.999 to fp32; this shows what each fp32 block buys and costs.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 .venv/bin/python -m benchmark.speed.precision_layers \\
        --checkpoint results/paper/unet_baseline__ct__seed0/model.ckpt
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Fp32Block(nn.Module):
    """Runs `block` in fp32 inside a bf16 autocast region (inputs cast up; the weights are fp32 already)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(xs[0].device.type, enabled=False):
            return self.block(*[x.float() for x in xs])


def _fp32(container, index) -> None:
    container[index] = Fp32Block(container[index])


# name -> what stays fp32 in `models.blocks.UNet` (down = encoder levels, decode/up = decoder, head = 1x1 conv)
VARIANTS = {
    "bf16 (as Predictor runs it)": lambda net: None,
    "head fp32": lambda net: setattr(net, "head", Fp32Block(net.head)),
    "first conv fp32": lambda net: _fp32(net.down[0], 0),
    "first level fp32": lambda net: _fp32(net.down, 0),
    "last decoder level + head fp32": lambda net: (_fp32(net.decode, -1), _fp32(net.up, -1),
                                                  setattr(net, "head", Fp32Block(net.head))),
    "first + last level fp32": lambda net: (_fp32(net.down, 0), _fp32(net.decode, -1), _fp32(net.up, -1),
                                           setattr(net, "head", Fp32Block(net.head))),
    "first two levels fp32": lambda net: (_fp32(net.down, 0), _fp32(net.down, 1)),
}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="a 2D U-Net (models.blocks.UNet) checkpoint")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "liverbench-speed")
    args = p.parse_args(argv)

    from benchmark.inference import Predictor, read_scan
    from benchmark.speed.common import alternate, machine, reference_ct

    scan = read_scan(reference_ct(args.work)[0])
    reference = Predictor.from_checkpoint(args.checkpoint, device="cpu", precision="fp32")
    x, state = reference.preprocess(scan.image, scan.affine)
    fp32_mask = reference.invert(reference.labels(x), state)
    predictors = {"fp32": reference}
    for name, keep_fp32 in VARIANTS.items():
        predictor = Predictor.from_checkpoint(args.checkpoint, device="cpu", precision="bf16")
        keep_fp32(predictor.module.net)
        predictors[name] = predictor
    print(machine())
    times = alternate({name: (lambda p=p: p.labels(x)) for name, p in predictors.items()}, repeats=args.repeats)
    print(f"{'network in':<34} {'Dice to fp32 mask':>17} {'network s (median)':>19}")
    for name, p in predictors.items():
        print(f"{name:<34} {dice(p.invert(p.labels(x), state), fp32_mask):17.5f} {times[name]['median_s']:19.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
