"""Figure of phantom slices (CT, T1, T2, and the randomised share's look) with the liver outline, next to real
scans at the same window.

`python -m datamodules.phantom.figure docs/phantom.png [--seed S] [--devset data/devset]`

With `--devset` (the folder `liverbench data devset` writes: `ct/` and `mri/` in nnU-Net layout) the
last column shows a real CHAOS CT and a real CHAOS T2 slice, windowed exactly like the phantom row
beside them, so what differs is the anatomy and texture, not the display.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .anatomy import build_anatomy
from .writer import GENERATOR_VERSION, generate_case, normalise_spacing, render

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


def _panel(case, title: str):
    """(axial image, axial label, title) at the slice with the most liver."""
    k = int(np.argmax((case.label > 0).sum((0, 1))))
    return _axial(case.image.astype(np.float32), k), _axial(case.label, k), title


def phantom_panels(seed: int = 3, spacing=None) -> dict[str, list]:
    """Rows of (image, label, title): the realistic scans (CT phases, T1 and T2 variants) and the
    randomisation level (`randomised_share`, SynthSeg-style): three draws on the same patient's anatomy,
    two in a CT dataset's HU scale and one in an MR dataset's unit scale, so the labels equal the CT's."""
    def realistic(modality, **look):
        case = generate_case(seed, modality, spacing, fov="full", **look)
        return _panel(case, f"phantom {look.get('phase') or look.get('mr_variant')}")

    spacing = normalise_spacing(spacing)
    ct_anatomy, mr_anatomy = (build_anatomy(seed, family, spacing, fov="full") for family in ("ct", "mri"))
    randomised = [_panel(render(ct_anatomy, seed + draw, "ct", randomised=True, hu=True),
                         f"CT share (HU), draw {draw + 1}") for draw in range(2)]
    randomised.append(_panel(render(mr_anatomy, seed, "t2", randomised=True), "MR share (unit scale)"))
    return {"ct": [realistic("ct", phase=p) for p in ("portal", "native")],
            "t1": [realistic("t1", mr_variant=v) for v in ("t1_in", "t1_opposed")],
            "t2": [realistic("t2", mr_variant=v) for v in ("t2_fs", "t2_nofs")],
            "randomised": randomised}


def _window(row: str, image: np.ndarray) -> tuple[float, float]:
    if row == "ct" or (row == "randomised" and image.min() < 0):  # HU: CT's window
        return CT_WINDOW
    if row == "randomised":  # unit scale, no body by design: the whole image
        return tuple(np.percentile(image, [1, 99.5]))
    return _mr_window(image, image > 0.1 * np.percentile(image, 99))


def make_figure(out: str | Path, seed: int = 3, spacing=None, devset: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = phantom_panels(seed, spacing)
    if devset:
        for row in REAL_CASES:
            rows[row].append(_real_slice(Path(devset), row))
    ncol = max(len(panels) for panels in rows.values())
    fig, axes = plt.subplots(len(rows), ncol, figsize=(4.3 * ncol, 4.2 * len(rows)), facecolor="black")
    for r, (row, panels) in enumerate(rows.items()):
        for col, (im, lb, title) in enumerate(panels):
            ax = axes[r, col]
            lo, hi = _window(row, im)
            ax.imshow(im, cmap="gray", vmin=lo, vmax=hi, interpolation="bilinear")
            ax.contour(lb > 0, levels=[0.5], colors="yellow", linewidths=0.8)
            ax.set_title(f"{row.upper()}: {title}", color="white", fontsize=9)
        for col in range(ncol):
            axes[r, col].axis("off")
    fig.suptitle(f"LiverBench phantom v{GENERATOR_VERSION}, seed {seed}, liver outline yellow; "
                 f"CT window {CT_WINDOW[0]}..{CT_WINDOW[1]} HU, MR 1-99.5 % inside the body; "
                 "patient's right on the left", color="white", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
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
