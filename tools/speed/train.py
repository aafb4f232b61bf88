"""Training throughput of the cpu preset's 2D, 3D and ResNet steps: fp32 and bf16 autocast, each NCHW and channels-last,
alternated in one process (forward, CE loss, backward, Adam), at the preset's batch and patch sizes.

Each step's FLOPs (forward + backward, `torch.utils.flop_counter`) over its time is compared with this machine's own
limit: the GFLOP/s of one wide 3x3 convolution (64 -> 64 channels, forward + backward, the fastest layout), so a
step's figure reads as "x % of what this CPU can do", the same on any machine kind.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 .venv/bin/python -m tools.speed.train
"""
from __future__ import annotations

import argparse
import copy


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timed steps per candidate")
    p.add_argument("--preset", default="cpu", help="preset (name or YAML) whose batch and patch sizes are timed")
    args = p.parse_args(argv)
    import torch

    from benchmark.inference.predictor import cpu_has_bf16
    from benchmark.run.plan import load_preset
    from benchmark.run.run_config import budget
    from models import create_model
    from tools.speed.harness import alternate, machine, report

    preset = load_preset(args.preset)
    has_bf16 = cpu_has_bf16()
    print(machine(), f"| AVX-512 BF16/AMX: {has_bf16}")
    limit = {bf16: conv_limit_gflops(bf16, args.repeats) for bf16 in ((False, True) if has_bf16 else (False,))}
    print("machine limit (64->64 3x3 convolution, 8 x 96x96, forward + backward, fastest layout): "
          + ", ".join(f"{'bf16' if k else 'fp32'} {v:.0f} GFLOP/s" for k, v in limit.items()))
    # (label, bf16 autocast, channels-last); bf16 only where the CPU has it (elsewhere it is emulated, and the
    # preset trains fp32 there): an AVX2-only CPU compares fp32 in both layouts
    candidates = [("fp32", False, False), ("fp32 channels-last", False, True)]
    if has_bf16:
        candidates += [("bf16 autocast", True, False), ("bf16 autocast channels-last", True, True)]
    # the paper suite's sizes (benchmark/suites/paper/*.yaml): U-Net Baseline, 3D CNN, ResNet + Transfer
    nets = (("unet2d", 2, {"features": 16, "depth": 4}), ("unet3d", 3, {"features": 8, "depth": 3}),
            ("resnet_unet", 2, {"pretrained": "none"}))
    for name, dims, kw in nets:
        data = budget(preset, dims, smoke=False)["data"]
        batch, patch = int(data["batch_size"]), list(data["patch_size"])
        x = torch.randn(batch, 1, *patch)
        y = (torch.rand(batch, *patch) > 0.5).long()
        base = create_model(name, **kw).train()
        fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
        steps = {}
        # "bf16 autocast" is what the preset's `trainer.precision: bf16-mixed` does (Lightning: autocast, NCHW)
        for label, bf16, last in candidates:
            module = copy.deepcopy(base)
            inp = x.contiguous(memory_format=fmt) if last else x
            if last:
                module = module.to(memory_format=fmt)
            opt = torch.optim.Adam(module.parameters(), lr=1e-3)

            def step(module=module, opt=opt, inp=inp, bf16=bf16):
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = torch.nn.functional.cross_entropy(module(inp).float(), y)
                loss.backward()
                opt.step()
            steps[label] = step
        res = alternate(steps, repeats=args.repeats)
        gflop = step_gflop(base, x, y)
        report(f"{name}: batch {batch} x {'x'.join(map(str, patch))}, {args.repeats} steps alternated, "
               f"{gflop:.1f} GFLOP per step (forward + backward)", res)
        for (label, bf16, _), r in zip(candidates, res.values()):
            rate = gflop / r["median_s"]
            print(f"  {label}: {1 / r['median_s']:.2f} steps/s ({r['median_s'] / res['fp32']['median_s']:.2f}x fp32 time), "
                  f"{rate:.0f} GFLOP/s = {rate / limit[bf16]:.0%} of the machine limit")
    return 0


def step_gflop(module, x, y) -> float:
    """GFLOPs of one training step's forward and backward (a multiply-add counts 2; the optimiser is not counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module = copy.deepcopy(module)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(module(x), y).backward()
    return counter.get_total_flops() / 1e9


def conv_limit_gflops(bf16: bool, repeats: int) -> float:
    """This CPU's convolution throughput: the best of NCHW and channels-last for a 64 -> 64-channel 3x3 convolution on
    8 x 96x96, forward + backward, the kind of layer a U-Net spends its time in."""
    import torch

    from tools.speed.harness import alternate

    x0 = torch.randn(8, 64, 96, 96)
    conv0 = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
    gflop = 3 * 2 * 9 * 64 * 64 * 96 * 96 * 8 / 1e9   # forward, input gradient, weight gradient
    runs = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        conv = copy.deepcopy(conv0).to(memory_format=fmt)
        x = x0.contiguous(memory_format=fmt).requires_grad_()

        def run(conv=conv, x=x):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = conv(x)
            out.float().sum().backward()
        runs[str(fmt)] = run
    return gflop / min(r["median_s"] for r in alternate(runs, repeats=repeats).values())


if __name__ == "__main__":
    raise SystemExit(main())
