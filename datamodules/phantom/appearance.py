"""Appearance layer: CT (HU), MRI T1-/T2-like, or domain-randomised intensities from a tissue map.

Per case, each tissue draws its intensity from the ranges in PHANTOM.md; then partial-volume
blur (3-tap per axis), noise (Gaussian for CT, Rician for MRI), a smooth multiplicative bias
field for MRI. Liver and spleen overlap in intensity on purpose: no threshold finds the liver.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

from .geometry import F32, Grid
from .tissues import N_TISSUES, T

# Hounsfield ranges, portal-venous phase
CT_PORTAL = {
    T.AIR: (-1005, -995), T.SUBCUT_FAT: (-120, -90), T.FAT: (-110, -80), T.MUSCLE: (50, 60),
    T.LIVER: (100, 130), T.PORTAL_VEIN: (150, 190), T.HEPATIC_VEIN: (130, 170),
    T.LESION_HYPO: (20, 70), T.LESION_HYPER: (150, 190), T.LESION_CYST: (0, 20),
    T.SPLEEN: (110, 130), T.KIDNEY_CORTEX: (150, 200), T.KIDNEY_MEDULLA: (80, 120), T.URINE: (0, 20),
    T.GALLBLADDER: (0, 20), T.GI_WALL: (70, 100), T.GI_FLUID: (5, 30), T.GAS: (-1000, -950),
    T.STOOL: (-80, 40), T.AORTA: (130, 200), T.IVC: (110, 170), T.VEIN: (140, 190), T.HEART: (130, 180),
    T.LUNG: (-850, -750), T.BONE_CORTICAL: (700, 1500), T.BONE_CANCELLOUS: (200, 400), T.DISC: (70, 100),
    T.CSF: (0, 15), T.PANCREAS: (90, 120), T.CARTILAGE: (100, 200), T.TABLE: (-300, 100),
}
# non-contrast phase: liver ~ spleen, vessels darker than liver
CT_NATIVE = {**CT_PORTAL, T.LIVER: (50, 65), T.SPLEEN: (40, 50), T.PORTAL_VEIN: (35, 45),
             T.HEPATIC_VEIN: (35, 45), T.LESION_HYPO: (15, 35), T.LESION_HYPER: (55, 70),
             T.KIDNEY_CORTEX: (30, 40), T.KIDNEY_MEDULLA: (25, 35), T.GI_WALL: (35, 45), T.AORTA: (35, 50),
             T.IVC: (35, 45), T.VEIN: (35, 45), T.HEART: (35, 50), T.PANCREAS: (40, 50)}

# relative MR signal (liver ~0.5 in T1); T2 is fat-suppressed (SPIR-like)
MR_T1 = {
    T.AIR: (0, 0.01), T.SUBCUT_FAT: (0.9, 1.0), T.FAT: (0.85, 0.95), T.MUSCLE: (0.3, 0.36),
    T.LIVER: (0.5, 0.6), T.PORTAL_VEIN: (0.15, 0.3), T.HEPATIC_VEIN: (0.15, 0.3),
    T.LESION_HYPO: (0.22, 0.35), T.LESION_HYPER: (0.25, 0.35), T.LESION_CYST: (0.08, 0.15),
    T.SPLEEN: (0.36, 0.44), T.KIDNEY_CORTEX: (0.42, 0.5), T.KIDNEY_MEDULLA: (0.3, 0.36), T.URINE: (0.05, 0.1),
    T.GALLBLADDER: (0.08, 0.2), T.GI_WALL: (0.35, 0.45), T.GI_FLUID: (0.1, 0.2), T.GAS: (0, 0.02),
    T.STOOL: (0.25, 0.4), T.AORTA: (0.1, 0.3), T.IVC: (0.1, 0.3), T.VEIN: (0.1, 0.3), T.HEART: (0.15, 0.3),
    T.LUNG: (0.01, 0.04), T.BONE_CORTICAL: (0.02, 0.05), T.BONE_CANCELLOUS: (0.55, 0.7), T.DISC: (0.25, 0.3),
    T.CSF: (0.08, 0.12), T.PANCREAS: (0.6, 0.7), T.CARTILAGE: (0.2, 0.3), T.TABLE: (0, 0.01),
}
MR_T2 = {
    T.AIR: (0, 0.01), T.SUBCUT_FAT: (0.08, 0.15), T.FAT: (0.08, 0.14), T.MUSCLE: (0.12, 0.18),
    T.LIVER: (0.2, 0.28), T.PORTAL_VEIN: (0.04, 0.1), T.HEPATIC_VEIN: (0.04, 0.1),
    T.LESION_HYPO: (0.45, 0.6), T.LESION_HYPER: (0.7, 0.85), T.LESION_CYST: (0.9, 1.0),
    T.SPLEEN: (0.45, 0.6), T.KIDNEY_CORTEX: (0.45, 0.55), T.KIDNEY_MEDULLA: (0.6, 0.7), T.URINE: (0.9, 1.0),
    T.GALLBLADDER: (0.85, 1.0), T.GI_WALL: (0.25, 0.35), T.GI_FLUID: (0.75, 0.95), T.GAS: (0, 0.02),
    T.STOOL: (0.15, 0.3), T.AORTA: (0.03, 0.08), T.IVC: (0.05, 0.12), T.VEIN: (0.05, 0.12),
    T.HEART: (0.05, 0.15), T.LUNG: (0.01, 0.04), T.BONE_CORTICAL: (0.02, 0.05),
    T.BONE_CANCELLOUS: (0.12, 0.2), T.DISC: (0.5, 0.6), T.CSF: (0.9, 1.0), T.PANCREAS: (0.3, 0.38),
    T.CARTILAGE: (0.15, 0.2), T.TABLE: (0, 0.01),
}


def _table(rng, ranges: dict) -> np.ndarray:
    lut = np.zeros(256, np.float32)
    for code in T:  # fixed order: deterministic draws
        lo, hi = ranges[code]
        lut[code] = rng.uniform(lo, hi)
    return lut


def blur(img: np.ndarray, weights=(0.2, 0.2, 0.2)) -> np.ndarray:
    """Partial-volume blur: a [w, 1-2w, w] kernel along each axis (in place on a float copy)."""
    for axis, w in enumerate(weights):
        if w > 0 and img.shape[axis] > 2:
            correlate1d(img, np.array([w, 1 - 2 * w, w], np.float32), axis=axis, output=img, mode="nearest")
    return img


def _blur_gain(weights) -> float:
    """How much the blur shrinks white noise (std factor)."""
    return float(np.prod([np.sqrt(2 * w * w + (1 - 2 * w) ** 2) for w in weights]))


def bias_field(rng, grid: Grid, amplitude: float) -> np.ndarray:
    """Smooth multiplicative field exp(sum of wide separable Gaussians + linear ramps)."""
    xs, ys, zs = (a.astype(np.float64) for a in (grid.xs, grid.ys, grid.zs))
    logb = np.zeros(grid.shape, np.float32)
    for _ in range(3):
        c, s = [rng.uniform(a[0], a[-1]) for a in (xs, ys, zs)], rng.uniform(120, 250)
        g = [np.exp(-0.5 * ((a - ci) / s) ** 2).astype(np.float32) for a, ci in zip((xs, ys, zs), c)]
        logb += F32(rng.normal()) * g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    ramp = [rng.normal(0, 1) * (a - a.mean()) / 250 for a in (xs, ys, zs)]
    logb += (ramp[0][:, None, None] + ramp[1][None, :, None] + ramp[2][None, None, :]).astype(np.float32)
    span = float(np.abs(logb).max()) or 1.0
    logb *= F32(np.log1p(amplitude) / span)
    return np.exp(logb)


def render_ct(rng, tissue: np.ndarray, phase: str = "portal", noise: float = 1.0) -> tuple[np.ndarray, dict]:
    """int16 HU image."""
    lut = _table(rng, CT_PORTAL if phase == "portal" else CT_NATIVE)
    sigma = rng.uniform(8, 25) * noise
    w = rng.uniform(0.12, 0.22)
    weights = (w, w, rng.uniform(0.15, 0.25))
    img = lut[tissue]
    if sigma > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * F32(sigma / _blur_gain(weights))
    blur(img, weights)
    np.clip(img, -1024, 3071, out=img)
    params = {"phase": phase, "noise_hu": round(sigma, 2), "tissue_hu": _named(lut)}
    if rng.random() < 0.2:  # reconstruction circle padded like many scanners
        nx, ny = img.shape[:2]
        xx, yy = np.ogrid[:nx, :ny]
        outside = ((xx - (nx - 1) / 2) ** 2 + (yy - (ny - 1) / 2) ** 2) > (min(nx, ny) / 2) ** 2
        pad = float(rng.choice([-1024, -2048, -3024]))
        img[outside] = pad
        params["padding_hu"] = pad
    return np.rint(img).astype(np.int16), params


def render_mri(rng, tissue: np.ndarray, grid: Grid, sequence: str = "t1", noise: float = 1.0,
               bias: float = 1.0) -> tuple[np.ndarray, dict]:
    """int16 MR image with bias field, Rician noise, arbitrary scale and optional ghosting."""
    lut = _table(rng, MR_T1 if sequence == "t1" else MR_T2)
    scale = rng.uniform(300, 1500) / max(float(lut[T.LIVER]), 0.05)
    amp = rng.uniform(0.2, 0.4) * bias
    sigma = rng.uniform(0.015, 0.04) * noise
    weights = (rng.uniform(0.1, 0.2), rng.uniform(0.1, 0.2), rng.uniform(0.15, 0.25))
    img = blur(lut[tissue], weights)
    if rng.random() < 0.3:  # breathing ghost along the phase-encoding axis (AP)
        shift = int(rng.integers(8, 30))
        img += F32(rng.uniform(0.02, 0.06)) * np.roll(img, shift, axis=1)
    if amp > 0:
        img *= bias_field(rng, grid, amp)
    if sigma > 0:
        n1 = rng.standard_normal(img.shape, dtype=np.float32)
        n1 *= F32(sigma)
        img += n1
        n1[:] = rng.standard_normal(img.shape, dtype=np.float32)
        n1 *= F32(sigma)
        img = np.sqrt(img * img + n1 * n1)
    img *= F32(scale)
    params = {"sequence": sequence, "scale": round(scale, 2), "bias_amplitude": round(amp, 3),
              "noise_rel": round(sigma, 4), "tissue_signal": _named(lut)}
    return np.rint(np.clip(img, 0, 32767)).astype(np.int16), params


def render_randomised(rng, tissue: np.ndarray, grid: Grid, noise: float = 1.0) -> tuple[np.ndarray, dict]:
    """SynthSeg-style: random intensity per tissue, random bias, noise, blur and gamma (int16 0..1000)."""
    lut = rng.uniform(0, 1, 256).astype(np.float32)
    lut[T.AIR] = rng.uniform(0, 0.1)
    weights = tuple(rng.uniform(0.0, 0.3, 3))
    img = blur(lut[tissue], weights)
    img *= bias_field(rng, grid, rng.uniform(0.0, 0.5))
    sigma = rng.uniform(0.0, 0.08) * noise
    if sigma > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * F32(sigma)
    lo, hi = np.percentile(img[::2, ::2, ::2], [0.5, 99.5])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) ** F32(np.exp(rng.uniform(-0.4, 0.4)))
    params = {"randomised": True, "noise_rel": round(sigma, 4), "blur": [round(w, 3) for w in weights]}
    return np.rint(img * 1000).astype(np.int16), params


def _named(lut) -> dict:
    return {code.name.lower(): round(float(lut[code]), 3) for code in T if code < N_TISSUES}
