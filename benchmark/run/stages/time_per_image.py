"""Timing stage: time per volume end to end (read -> preprocess -> model -> invert) and model-only
(the same network pass: for a 2D model the axial slices the inversion reads), per slice for 2D models,
peak memory and FLOPs (see `benchmark.inference.timing` for the clocks)."""
from __future__ import annotations

from pathlib import Path


def _timing_input(timing: dict, modality: str, test_records) -> tuple[Path, str]:
    """The volume timed end to end: a reference phantom of a fixed size (so numbers compare across
    datasets, e.g. CT 512x512x100 at 0.8 mm; made once into the cache) or the first test case."""
    ref = (timing.get("reference") or {}).get(modality)
    if timing.get("volume", "reference") != "reference" or not ref:
        return Path(test_records[0].image_path), "first test case"
    import numpy as np

    from datamodules.datasets import default_cache_root
    from datamodules.phantom import generate_case
    from datamodules.volumes import write_volume

    shape, spacing, seed = [int(v) for v in ref["shape"]], [float(v) for v in ref["spacing"]], int(ref.get("seed", 1000))
    tag = "x".join(map(str, shape)) + "_" + "x".join(f"{v:g}" for v in spacing)
    path = default_cache_root() / "timing" / f"{modality}_{tag}_seed{seed}.nii.gz"
    label = f"reference phantom {tag} mm"
    if path.is_file():
        return path, label
    case = generate_case(seed, "ct" if modality == "ct" else "t1", spacing=spacing)
    image = case.image
    for axis, size in enumerate(shape):  # centre crop / pad to the exact reference shape
        have = image.shape[axis]
        if have > size:
            start = (have - size) // 2
            image = np.take(image, range(start, start + size), axis=axis)
        elif have < size:
            pad = [(0, 0)] * 3
            pad[axis] = ((size - have) // 2, size - have - (size - have) // 2)
            image = np.pad(image, pad, mode="constant", constant_values=image.min())
    write_volume(path, image, case.affine)
    return path, label


def measure(module, preprocessing: dict, config: dict, modality: str, test_records) -> dict:
    """Time per volume end to end (Predictor on a file) and model-only, per slice (2D), FLOPs.
    The result records precision (resolved: `auto` -> bf16/fp32), channels-last, torch threads and
    the spread of the repeats; a spread > 20 % is warned about (the timing was disturbed)."""
    import warnings

    import torch

    from benchmark.inference import timing as T
    from benchmark.inference.predictor import Predictor
    from datamodules.volumes import read_scan

    t = config.get("timing") or {}
    accelerator = config["trainer"].get("accelerator", "cpu")
    device = "cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"
    warmup, repeats = int(t.get("warmup", 1)), int(t.get("repeats", 3))
    path, what = _timing_input(t, modality, test_records)
    module = module.to(device).eval()
    predictor = Predictor(module, preprocessing, device=device, precision=t.get("precision", "fp32"),
                          channels_last=t.get("channels_last"))
    precision = predictor.precision
    scan = read_scan(path)  # through the volume layer, like every read
    preprocessed, state = predictor.preprocess(scan.image, scan.affine)
    slices = predictor.slices_read(state)  # a 2D model's model-only pass: the slices end to end computes

    with T.quiet_process() as process, T.track_peak_memory(device) as mem:
        e2e = T.time_callable(lambda: predictor.predict_file(path), device=device, warmup=warmup, repeats=repeats)
        model = T.time_model(predictor.module, tuple(preprocessed.shape[2:]), device=device, precision=precision,
                             warmup=warmup, repeats=repeats, flops=bool(t.get("flops", True)), slices=slices)
    input_shape = list(scan.image.shape)
    timing = {
        "volume_ms": e2e["median_ms"], "volume_ms_iqr": e2e["iqr_ms"], "volume_ms_min": e2e["min_ms"],
        "volume_ms_spread": e2e["spread"],
        "model_volume_ms": model["model_volume_ms"], "model_volume_ms_iqr": model["model_volume_ms_iqr"],
        "model_volume_ms_spread": model["model_volume_ms_spread"], "model_slices": model["model_slices"],
        "slice_ms": model["slice_ms"], "slice_ms_iqr": model["slice_ms_iqr"], "device": e2e["device"],
        "precision": precision, "channels_last": predictor.channels_last, "batch_size": 1,
        "peak_memory_mb": max(mem["peak_memory_mb"], model["peak_memory_mb"]),
        "repeats": repeats, "warmup": warmup, "input": what, "input_path": str(path),
        "input_shape": input_shape, "preprocessed_shape": list(preprocessed.shape[2:]),
        "threads": torch.get_num_threads(), "process_threads": process["process_threads"],
    }
    noisy = {k: v for k, v in (("end to end", e2e["spread"]), ("model only", model["model_volume_ms_spread"]))
             if v > T.SPREAD_WARN}
    timing["spread_warning"] = bool(noisy)
    if noisy:
        warnings.warn("timing spread between repeats above 20 % (" + ", ".join(f"{k} {v:.0%}" for k, v in noisy.items())
                      + "): the machine was busy; rerun the timing on a quiet machine", stacklevel=2)
    return {"timing": timing, "params": model["params"], "flops": model.get("flops"), "device": e2e["device"]}
