"""Shared pieces of the speed benchmarks: the reference CT (like the timing stage's), A/B timing
alternated in one process, and what the figures were measured on."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np


def fit_shape(array: np.ndarray, shape, fill) -> np.ndarray:
    """Centre crop / pad to `shape` (as the timing stage does for its reference volume)."""
    for axis, size in enumerate(shape):
        have = array.shape[axis]
        if have > size:
            start = (have - size) // 2
            array = np.take(array, range(start, start + size), axis=axis)
        elif have < size:
            pad = [(0, 0)] * array.ndim
            pad[axis] = ((size - have) // 2, size - have - (size - have) // 2)
            array = np.pad(array, pad, mode="constant", constant_values=fill)
    return array


def reference_ct(folder: Path, modality: str = "ct") -> tuple[Path, Path]:
    """The cpu preset's `timing.reference` phantom (CT 512x512x100 at 0.8x0.8x2.5 mm, seed 1000) as
    `<folder>/image.nii.gz` and its liver mask `<folder>/label.nii.gz` (made once)."""
    import yaml

    from datamodules.phantom.writer import generate_case
    from datamodules.volumes import write_volume

    preset = yaml.safe_load((Path(__file__).resolve().parents[2] / "benchmark" / "presets" / "cpu.yaml").read_text())
    ref = preset["timing"]["reference"][modality]
    shape, spacing, seed = ref["shape"], ref["spacing"], int(ref.get("seed", 1000))
    folder = Path(folder)
    image_path, label_path = folder / "image.nii.gz", folder / "label.nii.gz"
    if not (image_path.is_file() and label_path.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        case = generate_case(seed, "ct" if modality == "ct" else "t1", spacing=spacing)
        write_volume(image_path, fit_shape(case.image, shape, case.image.min()), case.affine)
        write_volume(label_path, (fit_shape(case.label, shape, 0) > 0).astype(np.uint8), case.affine)
    return image_path, label_path


def alternate(candidates: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, dict]:
    """Time every candidate `repeats` times, alternating A, B, A, B ... in this process (so load
    from other processes hits all alike); median, min, max and spread in seconds."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, ts in times.items():
        arr = np.asarray(ts)
        med = float(np.median(arr))
        out[name] = {"median_s": med, "min_s": float(arr.min()), "max_s": float(arr.max()),
                     "spread": float((arr.max() - arr.min()) / med) if med else 0.0, "times_s": ts}
    return out


def machine() -> str:
    """CPU model, cores we may use, torch threads: printed with every figure."""
    import torch

    from benchmark.inference.timing import device_name

    return f"{device_name('cpu')}, torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.python_version()}, " \
           f"MALLOC_MMAP_MAX_={os.environ.get('MALLOC_MMAP_MAX_', 'unset')}"


def report(title: str, results: dict[str, dict]) -> None:
    print(title)
    for name, r in results.items():
        print(f"  {name:<28} median {r['median_s'] * 1000:8.1f} ms  (min {r['min_s'] * 1000:.1f}, "
              f"max {r['max_s'] * 1000:.1f}, n={len(r['times_s'])})")
