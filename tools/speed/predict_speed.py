"""End-to-end predict speed: `Predictor.predict_to_file` (fp32 and bf16/auto) against a plain MONAI
pipeline on the same weights (LoadImaged, Orientationd, Spacingd, ScaleIntensityRanged, slice-wise
network, Invertd, AsDiscreted, SaveImaged, as MONAI's tutorials post-process; and the faster variant that
takes the argmax before Invertd), alternated in one process on the reference CT (512x512x100 at
0.8x0.8x2.5 mm, the timing stage's phantom), with the masks' Dice to each other.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 .venv/bin/python -m tools.speed.predict_speed \\
        --checkpoint results/paper/unet_baseline__ct__seed0/model.ckpt
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def monai_pipeline(module, config: dict, out_dir: Path, invert: str = "logits"):
    """The plain MONAI way to run the same network on a file and save the mask in its geometry.

    `invert="logits"` is MONAI's tutorial post-processing (Invertd on the network's output with
    bilinear interpolation, then AsDiscreted argmax, then SaveImaged); `invert="labels"` takes the
    argmax at the network's resolution and inverts that with nearest neighbour (faster, but its mask
    differs at the edges; kept as a second reference)."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import (AsDiscreted, Compose, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd,
                                  SaveImaged, ScaleIntensityRanged, Spacingd)

    window = config["intensity"]
    pre = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image"),
                   Orientationd("image", axcodes=config.get("orientation", "RAS")),
                   Spacingd("image", pixdim=config["target_spacing"], mode="bilinear"),
                   ScaleIntensityRanged("image", a_min=window["a_min"], a_max=window["a_max"], b_min=0.0, b_max=1.0,
                                        clip=True)])
    if invert not in ("logits", "labels"):
        raise ValueError(f"invert must be 'logits' or 'labels', got {invert!r}")
    save = SaveImaged("pred", output_dir=str(out_dir), output_postfix=f"monai_{invert}", separate_folder=False,
                      output_dtype=np.uint8, resample=False, print_log=False)
    if invert == "logits":
        post = Compose([Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False),
                        AsDiscreted("pred", argmax=True), save])
    else:
        post = Compose([Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True), save])

    def run(path: Path):
        data = pre({"image": str(path)})
        with torch.inference_mode():
            logits = module.predict_volume(data["image"][None])[0]  # (classes, X, Y, Z)
        pred = logits if invert == "logits" else torch.argmax(logits, dim=0, keepdim=True).float()
        data["pred"] = MetaTensor(pred, meta=data["image"].meta)
        return post(data)
    return run


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float(2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="a cpu-preset CT checkpoint (e.g. the 2D U-Net Baseline)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-monai", action="store_true", help="only our paths (fp32 vs bf16)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "liverbench-speed")
    args = p.parse_args(argv)

    from benchmark.inference.predictor import cpu_has_bf16, Predictor
    from datamodules.volumes import read_volume
    from models import load_module
    from tools.speed.harness import alternate, machine, reference_ct, report

    image, _ = reference_ct(args.work)
    out = args.work / "out"
    out.mkdir(exist_ok=True)
    module, config = load_module(args.checkpoint)
    fp32 = Predictor(module, config, "cpu", precision="fp32")
    import copy

    fast = Predictor(copy.deepcopy(module), config, "cpu", precision="auto")
    candidates = {
        "ours fp32": lambda: fp32.predict_to_file(image, out / "fp32.nii.gz"),
        f"ours auto={fast.precision}" + (" channels-last" if fast.channels_last else ""):
            lambda: fast.predict_to_file(image, out / "auto.nii.gz"),
    }
    monai_runs = {} if args.no_monai else {
        "plain MONAI fp32 (tutorial: Invertd on the logits, then argmax)": ("logits", "image_monai_logits.nii.gz"),
        "MONAI fp32, argmax before Invertd (nearest)": ("labels", "image_monai_labels.nii.gz")}
    for name, (invert, _) in monai_runs.items():
        candidates[name] = (lambda run: lambda: run(image))(monai_pipeline(module, config, out, invert))
    print(machine(), f"| AVX-512 BF16/AMX: {cpu_has_bf16()}")
    results = alternate(candidates, repeats=args.repeats)
    report(f"predict_to_file on {image} ({args.repeats} repeats alternated, after 1 warm-up each)", results)
    masks = {"fp32": read_volume(out / "fp32.nii.gz").array, "auto": read_volume(out / "auto.nii.gz").array}
    print(f"Dice ours auto vs ours fp32: {dice(masks['auto'], masks['fp32']):.5f}")
    for name, (invert, file) in monai_runs.items():
        masks[f"monai_{invert}"] = monai_mask = read_volume(out / file).array
        print(f"{name}: Dice to ours fp32 {dice(masks['fp32'], monai_mask):.5f}, "
              f"to ours auto {dice(masks['auto'], monai_mask):.5f}")
        monai_s = results[name]["median_s"]
        for ours in list(candidates)[:2]:
            print(f"  {ours}: x{results[ours]['median_s'] / monai_s:.3f} of it")
    print(f"liver voxels: { {k: int(np.count_nonzero(v)) for k, v in masks.items()} }")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
