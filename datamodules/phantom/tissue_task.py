"""A pretraining task built from the phantom: every tissue group as a multi-class 2D segmentation.

Used by `liverbench pretrain` (models/synthetic_pretrain.py) to pre-train the ResNet-34 encoder
offline. Each patient is rendered as CT (random contrast phase), T1 and T2 (random sequence
variant) and once domain-randomised (SynthSeg-style), normalised the way the CT/MRI DataModules
normalise (CT liver window to [0, 1], MRI percentile clip + z-score); each sampled slice then gets
a random gamma and, sometimes, an inversion, so the encoder learns shapes and edges, not one contrast.
The patients come from their own seed stream, disjoint from the benchmark phantom's patients.
"""
from __future__ import annotations

import numpy as np

from .anatomy import build_anatomy
from .tissues import T
from .writer import case_seed, render

# tissue group -> tissue codes (the rest, AIR and TABLE, is class 0)
GROUPS = {
    "fat": (T.SUBCUT_FAT, T.FAT),
    "muscle": (T.MUSCLE,),
    "liver": (T.LIVER, T.PORTAL_VEIN, T.HEPATIC_VEIN),
    "lesion": (T.LESION_HYPO, T.LESION_HYPER, T.LESION_CYST),
    "spleen": (T.SPLEEN,),
    "kidney": (T.KIDNEY_CORTEX, T.KIDNEY_MEDULLA, T.URINE),
    "gallbladder": (T.GALLBLADDER,),
    "pancreas": (T.PANCREAS,),
    "bowel": (T.GI_WALL, T.GI_FLUID, T.GAS, T.STOOL),
    "vessels": (T.AORTA, T.IVC, T.VEIN, T.HEART),
    "lung": (T.LUNG,),
    "bone": (T.BONE_CORTICAL, T.BONE_CANCELLOUS, T.DISC, T.CARTILAGE, T.CSF),
}
CLASS_NAMES = ("background", *GROUPS)
N_CLASSES = len(CLASS_NAMES)
SCANS = ("ct", "t1", "t2", "randomised")
CT_WINDOW = (-150.0, 250.0)  # the CT DataModule's liver window (datamodules.transforms.CT_WINDOW)


def class_lut() -> np.ndarray:
    lut = np.zeros(256, np.uint8)
    for i, codes in enumerate(GROUPS.values(), start=1):
        lut[list(codes)] = i
    return lut


def normalise(image: np.ndarray, scan: str) -> np.ndarray:
    """The DataModules' intensity normalisation: CT window -> [0, 1]; otherwise clip 0.5-99.5 % + z-score."""
    image = image.astype(np.float32)
    if scan == "ct":
        lo, hi = CT_WINDOW
        return np.clip((image - lo) / (hi - lo), 0, 1)
    lo, hi = np.percentile(image, [0.5, 99.5])
    image = np.clip(image, lo, hi)
    return (image - image.mean()) / max(float(image.std()), 1e-6)


def build_volumes(patients: int, seed: int, spacing: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image float32, class map uint8) per scan: `patients` x (CT, T1, T2, randomised), axial last."""
    lut, out = class_lut(), []
    mri_spacing = (spacing, spacing, 2 * spacing)  # MRI's thick slices, as the cpu preset's phantom
    for i in range(patients):
        cs = case_seed(seed, i)
        ct = build_anatomy(cs, "ct", (spacing,) * 3)
        mr = build_anatomy(cs, "mri", mri_spacing)
        for scan in SCANS:
            anatomy = ct if scan in ("ct", "randomised") else mr
            case = render(anatomy, cs, "ct" if scan == "randomised" else scan, randomised=scan == "randomised")
            out.append((normalise(case.image, scan), lut[anatomy.tissue]))
    return out


def _crop(image: np.ndarray, label: np.ndarray, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """A random `size`-square crop of one slice, padded (image with its minimum, label with 0)."""
    pads = [(0, max(0, size - s)) for s in image.shape]
    if any(p for _, p in pads):
        image = np.pad(image, pads, constant_values=float(image.min()))
        label = np.pad(label, pads)
    x0 = int(rng.integers(0, image.shape[0] - size + 1))
    y0 = int(rng.integers(0, image.shape[1] - size + 1))
    return image[x0:x0 + size, y0:y0 + size], label[x0:x0 + size, y0:y0 + size]


def random_appearance(image: np.ndarray, rng) -> np.ndarray:
    """Gamma (log-uniform 0.5..2, p 0.5) and inversion (p 0.25) within the slice's own range."""
    lo, hi = float(image.min()), float(image.max())
    if hi - lo < 1e-6:
        return image
    unit = (image - lo) / (hi - lo)
    if rng.random() < 0.5:
        unit = unit ** np.float32(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    if rng.random() < 0.25:
        unit = 1 - unit
    return (unit * (hi - lo) + lo).astype(np.float32)


def sample_batch(volumes, batch_size: int, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(B, 1, size, size) images and (B, size, size) class maps: random scan, slice, crop, flips, appearance."""
    images, labels = [], []
    for _ in range(batch_size):
        image, label = volumes[int(rng.integers(len(volumes)))]
        z = int(rng.integers(image.shape[2]))
        im, lab = _crop(image[:, :, z], label[:, :, z], size, rng)
        if rng.random() < 0.5:
            im, lab = im[::-1], lab[::-1]
        if rng.random() < 0.5:
            im, lab = im[:, ::-1], lab[:, ::-1]
        images.append(random_appearance(np.ascontiguousarray(im), rng))
        labels.append(np.ascontiguousarray(lab))
    return np.stack(images)[:, None], np.stack(labels).astype(np.int64)
