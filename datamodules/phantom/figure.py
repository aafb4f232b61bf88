"""Figure of phantom slices (CT, T1, T2) with the liver outline, in radiological orientation.

`python -m datamodules.phantom.figure docs/phantom.png [--seed S]`
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .writer import generate_case

WINDOWS = {"ct": (-160, 240)}


def _axial(a, k):
    """Patient's right on the viewer's left, anterior up."""
    return a[:, :, k].T[::-1, ::-1]


def _coronal(a, j):
    return a[:, j, :].T[::-1, ::-1]


def make_figure(out: str | Path, seed: int = 3, spacing=None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = {m: generate_case(seed, m, spacing, fov="full") for m in ("ct", "t1", "t2")}
    fig, axes = plt.subplots(3, 3, figsize=(13, 12.5), facecolor="black")
    for row, (mod, case) in enumerate(cases.items()):
        img, lab = case.image.astype(np.float32), case.label
        sx, sy, sz = case.params["spacing"]
        zs = np.nonzero(lab.any((0, 1)))[0]
        ys = np.nonzero(lab.any((0, 2)))[0]
        k_hi = int(zs[0] + 0.7 * (zs[-1] - zs[0]))
        k_lo = int(zs[0] + 0.3 * (zs[-1] - zs[0]))
        j = int(ys[0] + 0.45 * (ys[-1] - ys[0]))
        lo, hi = WINDOWS.get(mod, tuple(np.percentile(img[img > 0], [1, 99.5])))
        views = [(_axial(img, k_hi), _axial(lab, k_hi), sy / sx, f"axial z={k_hi}"),
                 (_axial(img, k_lo), _axial(lab, k_lo), sy / sx, f"axial z={k_lo}"),
                 (_coronal(img, j), _coronal(lab, j), sz / sx, f"coronal y={j}")]
        for col, (im, lb, aspect, title) in enumerate(views):
            ax = axes[row, col]
            ax.imshow(im, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="bilinear")
            ax.contour(lb > 0, levels=[0.5], colors="yellow", linewidths=0.8)
            if (lb == 2).any():
                ax.contour(lb == 2, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(f"{mod.upper()} {title}", color="white", fontsize=10)
            ax.axis("off")
    fig.suptitle(f"LiverBench phantom, seed {seed} (native spacing): liver outline yellow, lesions red; "
                 "patient's right on the left", color="white", fontsize=11)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor="black")
    plt.close(fig)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--spacing", type=float, nargs="+")
    a = ap.parse_args()
    print(make_figure(a.out, a.seed, a.spacing))
