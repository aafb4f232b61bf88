"""Figure of phantom slices (CT, T1, T2) with the liver outline, next to real scans at the same window.

`python -m datamodules.phantom.figure docs/phantom.png [--seed S] [--devset data/devset]`

With `--devset` (the folder `liverbench data devset` writes: `ct/` and `mri/` in nnU-Net layout) the
last column shows a real CHAOS CT and a real CHAOS T2 slice, windowed exactly like the phantom row
beside them, so what differs is the anatomy and texture, not the display.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .writer import generate_case

CT_WINDOW = (-160, 240)
REAL_CASES = {"ct": ("ct", "chaos_ct_3", "CHAOS CT patient 3"), "t2": ("mri", "chaos_t2_01", "CHAOS T2-SPIR patient 1")}


def _axial(a, k):
    """Patient's right on the viewer's left, anterior up (RAS array)."""
    return a[:, :, k].T[::-1, ::-1]


def _mr_window(img, body):
    """The same rule for phantom and real MR: 1st-99.5th percentile inside the body."""
    return tuple(np.percentile(img[body], [1, 99.5]))


def _real_slice(devset: Path, which: str):
    """(image, liver mask, title) of the real slice with the most liver, in RAS."""
    import nibabel as nib

    from datamodules.labels import liver_labels_from_dataset_json, liver_mask
    from datamodules.volumes import read_volume

    folder, case, title = REAL_CASES[which]
    root = devset / folder
    img, lab = read_volume(root / "imagesTr" / f"{case}_0000.nii.gz"), read_volume(root / "labelsTr" / f"{case}.nii.gz")
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                           nib.orientations.axcodes2ornt("RAS"))
    image = nib.orientations.apply_orientation(np.asarray(img.array, np.float32), ornt)
    mask = nib.orientations.apply_orientation(
        liver_mask(np.asarray(lab.array), liver_labels_from_dataset_json(root / "dataset.json")), ornt)
    k = int(np.argmax(mask.sum((0, 1))))
    return _axial(image, k), _axial(mask, k), f"real: {title}"


def make_figure(out: str | Path, seed: int = 3, spacing=None, devset: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {"ct": [generate_case(seed, "ct", spacing, fov="full", phase=p) for p in ("portal", "native")],
            "t1": [generate_case(seed, "t1", spacing, fov="full", mr_variant=v) for v in ("t1_in", "t1_opposed")],
            "t2": [generate_case(seed, "t2", spacing, fov="full", mr_variant=v) for v in ("t2_fs", "t2_nofs")]}
    ncol = 3 if devset else 2
    fig, axes = plt.subplots(3, ncol, figsize=(4.3 * ncol, 12.5), facecolor="black")
    for row, (mod, cases) in enumerate(rows.items()):
        panels = []
        for case in cases:
            img, lab = case.image.astype(np.float32), case.label
            k = int(np.argmax((lab > 0).sum((0, 1))))
            look = case.params["appearance"]
            panels.append((_axial(img, k), _axial(lab, k), f"phantom {look.get('phase') or look.get('variant')}"))
        if devset and mod in REAL_CASES:
            panels.append(_real_slice(Path(devset), mod))
        for col, (im, lb, title) in enumerate(panels):
            ax = axes[row, col]
            lo, hi = CT_WINDOW if mod == "ct" else _mr_window(im, im > 0.1 * np.percentile(im, 99))
            ax.imshow(im, cmap="gray", vmin=lo, vmax=hi, interpolation="bilinear")
            ax.contour(lb > 0, levels=[0.5], colors="yellow", linewidths=0.8)
            ax.set_title(f"{mod.upper()}: {title}", color="white", fontsize=9)
            ax.axis("off")
        for col in range(len(panels), ncol):
            axes[row, col].axis("off")
    fig.suptitle(f"LiverBench phantom v2, seed {seed}, liver outline yellow; CT window {CT_WINDOW[0]}..{CT_WINDOW[1]} HU, "
                 "MR 1-99.5 % inside the body; patient's right on the left", color="white", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72, facecolor="black")
    plt.close(fig)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--spacing", type=float, nargs="+")
    ap.add_argument("--devset", help="folder written by `liverbench data devset` (adds real CHAOS slices)")
    a = ap.parse_args()
    print(make_figure(a.out, a.seed, a.spacing, a.devset))
