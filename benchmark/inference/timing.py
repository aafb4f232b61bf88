"""Timing helpers: what "time per image" means here, measured the same way for every model.

- `time_callable`: warm-up, then repeats; CUDA events (synchronised) on GPU, `time.perf_counter`
  on CPU; median and spread, never a single run.
- `time_model`: model-only time per volume (the module's `predict_volume`; for 2D models on the
  axial slices the end-to-end pass computes) and, for 2D models, per slice; parameters, FLOPs
  per volume, peak memory, device and precision recorded with it.
  End-to-end time per volume (read -> preprocess -> model -> invert) is `time_callable` around
  `Predictor.predict_file` (done by the runner).
"""
from __future__ import annotations

import contextlib
import os
import resource
import time
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def device_name(device="cpu") -> str:
    """`"NVIDIA H100 80GB HBM3"` or `"AMD EPYC (2 cores)"`: what a timing was measured on."""
    device = _device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        import platform

        model = platform.processor() or model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({cores} cores)"


def autocast_context(device, precision: str = "fp32"):
    """Autocast for `bf16`/`fp16`, nothing for `fp32` (weights stay fp32 in every case)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=_device(device).type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_callable(fn: Callable[[], object], *, device="cpu", warmup: int = 2, repeats: int = 10,
                  sync: bool = True) -> dict:
    """Run `fn` `warmup` times untimed, then `repeats` timed; return median and spread in ms."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    device = _device(device)
    for _ in range(warmup):
        fn()
    if sync:
        _sync(device)
    times = []
    if device.type == "cuda":
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            if sync:
                _sync(device)
            times.append((time.perf_counter() - t0) * 1000.0)
    arr = np.asarray(times, dtype=float)
    p25, median, p75 = np.percentile(arr, [25, 50, 75])
    return {"median_ms": float(median), "p25_ms": float(p25), "p75_ms": float(p75),
            "iqr_ms": float(p75 - p25), "min_ms": float(arr.min()), "max_ms": float(arr.max()),
            "spread": spread(arr), "repeats": int(repeats), "warmup": int(warmup), "device": device_name(device),
            "times_ms": times}


SPREAD_WARN = 0.20  # (max - min) / median above this: the timing was disturbed (shared machine?)


def spread(times) -> float:
    """(max - min) / median of repeated timings: 0 for one repeat."""
    arr = np.asarray(times, dtype=float)
    med = float(np.median(arr)) if arr.size else 0.0
    return float((arr.max() - arr.min()) / med) if arr.size > 1 and med > 0 else 0.0


@contextlib.contextmanager
def quiet_process() -> Iterator[dict]:
    """Timed code runs with nothing else of ours in the process: garbage collected first and the
    collector paused; yields what else was alive (threads), to record with the timing."""
    import gc
    import threading

    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield {"process_threads": threading.active_count()}
    finally:
        if was_enabled:
            gc.enable()


def _read_vm_hwm_kb() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_memory(device="cpu") -> None:
    """CUDA: reset the allocator's peak. CPU (Linux): reset the process's peak RSS (VmHWM)."""
    device = _device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")


def peak_memory_mb(device="cpu") -> float:
    """CUDA: max memory allocated by tensors. CPU: peak resident set size of this process."""
    device = _device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    hwm = _read_vm_hwm_kb()
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, never reset
    return hwm / 1024.0


@contextlib.contextmanager
def track_peak_memory(device="cpu") -> Iterator[dict]:
    """`with track_peak_memory(dev) as mem: ...` then `mem["peak_memory_mb"]`."""
    result: dict = {}
    reset_peak_memory(device)
    try:
        yield result
    finally:
        _sync(_device(device))
        result["peak_memory_mb"] = peak_memory_mb(device)


def count_params(module: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen = {id(p): p for p in module.parameters() if p.requires_grad or not trainable_only}
    return int(sum(p.numel() for p in seen.values()))


def count_flops(module: torch.nn.Module, example_input: torch.Tensor, *, call: Callable | None = None) -> int:
    """FLOPs of one call (`module(example_input)` or `call(example_input)`), counted by
    `torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts as 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    fn = call if call is not None else module
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(example_input)
    return int(counter.get_total_flops())


def time_model(module: torch.nn.Module, volume_shape: Sequence[int], *, device="cpu", precision: str = "fp32",
               warmup: int = 1, repeats: int = 5, flops: bool = True, seed: int = 0,
               slices: Sequence[int] | None = None) -> dict:
    """Model-only timing of `module.predict_volume` on a random `(1, 1, X, Y, Z)` volume and,
    for 2D models (`spatial_dims == 2`), of one `(1, 1, X, Y)` slice through `module(...)`.
    `slices`: a 2D model's axial slices that the end-to-end pass computes (`Predictor.slices_read`),
    so that the model-only time and FLOPs are the network's share of the end-to-end ones; None: all."""
    if len(volume_shape) != 3:
        raise ValueError(f"volume_shape must be (X, Y, Z), got {tuple(volume_shape)}")
    two_d = getattr(module, "spatial_dims", 3) == 2
    if slices is not None and not two_d:
        raise ValueError("slices: only a 2D model (spatial_dims == 2) can skip axial slices")
    device = _device(device)
    module = module.to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    volume = torch.randn((1, 1, *volume_shape), generator=gen).to(device)
    if slices is not None:
        volume = volume[..., torch.as_tensor(slices, dtype=torch.long, device=device)].contiguous()
    out: dict = {"device": device_name(device), "precision": precision, "batch_size": 1,
                 "volume_shape": list(volume_shape), "model_slices": int(volume.shape[-1]) if two_d else None,
                 "params": count_params(module)}

    def run_volume():
        with torch.inference_mode(), autocast_context(device, precision):
            return module.predict_volume(volume)

    with track_peak_memory(device) as mem:
        vol = time_callable(run_volume, device=device, warmup=warmup, repeats=repeats)
    out.update(model_volume_ms=vol["median_ms"], model_volume_ms_iqr=vol["iqr_ms"], model_volume_ms_spread=vol["spread"],
               repeats=repeats,
               peak_memory_mb=mem["peak_memory_mb"], slice_ms=None, slice_ms_iqr=None)
    if two_d:
        slice_ = volume[..., 0].contiguous()

        def run_slice():
            with torch.inference_mode(), autocast_context(device, precision):
                return module(slice_)

        sl = time_callable(run_slice, device=device, warmup=warmup, repeats=repeats)
        out.update(slice_ms=sl["median_ms"], slice_ms_iqr=sl["iqr_ms"])
    if flops:
        with autocast_context(device, precision):
            out["flops"] = count_flops(module, volume, call=module.predict_volume)
    return out
