"""Benchmark (not a test): seconds per phantom case, generation and NIfTI writing separately.

`python -m datamodules.phantom.bench [--cases 5] [--spacing 3]` (no --spacing: native).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from .anatomy import build_anatomy
from .writer import case_seed, normalise_spacing, render, save_case


def bench(modality: str, cases: int, spacing, seed: int = 0) -> dict:
    gen, write, shapes = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(cases):
            cs = case_seed(seed, i)
            t0 = time.perf_counter()
            anatomy = build_anatomy(cs, "ct" if modality == "ct" else "mri", normalise_spacing(spacing))
            scans = ["ct"] if modality == "ct" else ["t1", "t2"]
            rendered = [render(anatomy, cs, s) for s in scans]
            t1 = time.perf_counter()
            for s, case in zip(scans, rendered):
                save_case(case, Path(tmp), f"c{i}_{s}")
            t2 = time.perf_counter()
            gen.append((t1 - t0) / len(scans))
            write.append((t2 - t1) / len(scans))
            shapes.append(anatomy.tissue.shape)
    return {"modality": modality, "spacing": spacing or "native", "cases": cases,
            "generate_s_median": statistics.median(gen), "write_s_median": statistics.median(write),
            "total_s_median": statistics.median(g + w for g, w in zip(gen, write)),
            "total_s_max": max(g + w for g, w in zip(gen, write)),
            "voxels_median": statistics.median(a * b * c for a, b, c in shapes)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=5)
    ap.add_argument("--spacing", type=float, nargs="+")
    ap.add_argument("--modalities", default="ct,mri")
    a = ap.parse_args()
    for m in a.modalities.split(","):
        r = bench(m, a.cases, a.spacing)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
