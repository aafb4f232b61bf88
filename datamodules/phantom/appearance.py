"""Appearance layer: CT (HU), MRI (T1/T2 families) or domain-randomised intensities from a tissue map.

What makes a phantom-trained network work on real scans is *variety in the right places*
(SynthSeg's lesson), not one idealised look. So per case, the default phantom draws:
- CT: a contrast phase (non-contrast, arterial, portal-venous, delayed) and each tissue's HU
  from that phase's range; a small scanner offset; MRI: a sequence variant (T1 in-phase,
  opposed-phase, fat-saturated post-contrast; T2 with or without fat suppression, vessels
  bright or as flow voids), from water/fat signal tables (opposed phase cancels fat against
  water where they share a voxel, so the India-ink edges of real opposed-phase scans appear);
- texture: a smooth per-tissue heterogeneity field (parenchyma is not flat) and noise that is
  correlated like a reconstruction kernel, with its level set by the scan's *native* voxel
  size (a coarse grid averages the noise of the fine voxels it stands for, as resampling does);
- partial-volume blur, bias field and Rician noise for MRI, padding outside the CT
  reconstruction circle.
Liver and spleen overlap in intensity on purpose: no threshold finds the liver.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d, zoom

from .geometry import F32, Grid
from .tissues import N_TISSUES, T

CT_PHASES = ("native", "arterial", "portal", "delayed")
CT_PHASE_P = (0.2, 0.2, 0.4, 0.2)  # default phantom: portal-venous most often, as in liver CT
MR_VARIANTS = {"t1": ("t1_in", "t1_opposed", "t1_post_fs"), "t2": ("t2_fs", "t2_nofs")}
MR_VARIANT_P = {"t1": (0.4, 0.35, 0.25), "t2": (0.65, 0.35)}

# Hounsfield ranges, portal-venous phase (PHANTOM.md), slightly widened for scanner and dose spread
CT_PORTAL = {
    T.AIR: (-1005, -995), T.SUBCUT_FAT: (-125, -85), T.FAT: (-115, -75), T.MUSCLE: (45, 65),
    T.LIVER: (95, 150), T.PORTAL_VEIN: (150, 230), T.HEPATIC_VEIN: (130, 210),
    T.LESION_HYPO: (20, 75), T.LESION_HYPER: (150, 200), T.LESION_CYST: (0, 20),
    T.SPLEEN: (100, 150), T.KIDNEY_CORTEX: (150, 210), T.KIDNEY_MEDULLA: (80, 140), T.URINE: (0, 20),
    T.GALLBLADDER: (0, 25), T.GI_WALL: (60, 110), T.GI_FLUID: (0, 35), T.GAS: (-1000, -950),
    T.STOOL: (-80, 40), T.AORTA: (130, 210), T.IVC: (100, 180), T.VEIN: (130, 200), T.HEART: (120, 190),
    T.LUNG: (-880, -720), T.BONE_CORTICAL: (700, 1500), T.BONE_CANCELLOUS: (150, 400), T.DISC: (70, 100),
    T.CSF: (0, 15), T.PANCREAS: (80, 125), T.CARTILAGE: (100, 200), T.TABLE: (-300, 100),
}
CT_TABLES = {
    "portal": CT_PORTAL,
    # no contrast: liver ~ spleen ~ muscle, vessels darker than liver
    "native": {**CT_PORTAL, T.LIVER: (48, 70), T.SPLEEN: (38, 55), T.PORTAL_VEIN: (30, 48),
               T.HEPATIC_VEIN: (30, 48), T.LESION_HYPO: (10, 40), T.LESION_HYPER: (55, 75),
               T.KIDNEY_CORTEX: (28, 42), T.KIDNEY_MEDULLA: (24, 38), T.GI_WALL: (30, 50), T.AORTA: (30, 55),
               T.IVC: (30, 50), T.VEIN: (30, 50), T.HEART: (30, 55), T.PANCREAS: (35, 55)},
    # late arterial: bright aorta and cortex, the liver barely enhanced, portal vein mid-way
    "arterial": {**CT_PORTAL, T.LIVER: (60, 90), T.SPLEEN: (70, 150), T.PORTAL_VEIN: (80, 160),
                 T.HEPATIC_VEIN: (45, 80), T.LESION_HYPO: (20, 55), T.LESION_HYPER: (120, 220),
                 T.KIDNEY_CORTEX: (160, 280), T.KIDNEY_MEDULLA: (50, 100), T.GI_WALL: (70, 130),
                 T.AORTA: (220, 420), T.IVC: (50, 130), T.VEIN: (70, 150), T.HEART: (150, 380),
                 T.PANCREAS: (90, 140)},
    # delayed/equilibrium: everything converges to 80-120, urine may be excreted contrast
    "delayed": {**CT_PORTAL, T.LIVER: (75, 105), T.SPLEEN: (75, 105), T.PORTAL_VEIN: (95, 135),
                T.HEPATIC_VEIN: (95, 135), T.LESION_HYPO: (30, 70), T.LESION_HYPER: (85, 120),
                T.KIDNEY_CORTEX: (100, 160), T.KIDNEY_MEDULLA: (110, 200), T.URINE: (0, 400),
                T.AORTA: (95, 140), T.IVC: (90, 135), T.VEIN: (90, 135), T.HEART: (95, 140), T.PANCREAS: (70, 100)},
}

# MR *water* signal per tissue (fat signal is separate, see FAT_FRACTION); arbitrary units, ~0..1
# Stomach and bowel contents (GI_FLUID, STOOL) span darker and brighter than the liver on both sequences: food
# and chyme can look like liver, and a model that learnt "the gut is always darker (T1) or brighter (T2)" marks
# liver-like gut as liver on real scans (generator v3; the CT ranges stay water- and stool-like: wider CT ones
# lowered the CT development Dice, docs/phantom.md)
MR_T1_WATER = {
    T.AIR: (0, 0.01), T.SUBCUT_FAT: (0.2, 0.3), T.FAT: (0.2, 0.3), T.MUSCLE: (0.28, 0.38),
    T.LIVER: (0.45, 0.62), T.PORTAL_VEIN: (0.1, 0.35), T.HEPATIC_VEIN: (0.1, 0.35),
    T.LESION_HYPO: (0.18, 0.35), T.LESION_HYPER: (0.25, 0.4), T.LESION_CYST: (0.06, 0.15),
    T.SPLEEN: (0.32, 0.46), T.KIDNEY_CORTEX: (0.38, 0.52), T.KIDNEY_MEDULLA: (0.26, 0.38), T.URINE: (0.04, 0.1),
    T.GALLBLADDER: (0.06, 0.3), T.GI_WALL: (0.3, 0.45), T.GI_FLUID: (0.05, 0.65), T.GAS: (0, 0.02),
    T.STOOL: (0.1, 0.6), T.AORTA: (0.05, 0.35), T.IVC: (0.05, 0.35), T.VEIN: (0.05, 0.35), T.HEART: (0.1, 0.35),
    T.LUNG: (0.01, 0.05), T.BONE_CORTICAL: (0.01, 0.05), T.BONE_CANCELLOUS: (0.3, 0.45), T.DISC: (0.22, 0.3),
    T.CSF: (0.06, 0.12), T.PANCREAS: (0.55, 0.72), T.CARTILAGE: (0.2, 0.3), T.TABLE: (0, 0.01),
}
# fat-saturated T1 after contrast (portal-venous): vessels and kidneys bright, liver > spleen
MR_T1_POST_WATER = {
    **MR_T1_WATER, T.LIVER: (0.5, 0.7), T.PORTAL_VEIN: (0.75, 1.0), T.HEPATIC_VEIN: (0.65, 0.95),
    T.LESION_HYPO: (0.2, 0.4), T.LESION_HYPER: (0.6, 0.85), T.SPLEEN: (0.5, 0.68), T.KIDNEY_CORTEX: (0.7, 0.95),
    T.KIDNEY_MEDULLA: (0.55, 0.8), T.GI_WALL: (0.5, 0.7), T.AORTA: (0.75, 1.0), T.IVC: (0.65, 0.95),
    T.VEIN: (0.7, 1.0), T.HEART: (0.7, 1.0), T.PANCREAS: (0.5, 0.7), T.MUSCLE: (0.25, 0.38),
}
MR_T2_WATER = {
    T.AIR: (0, 0.01), T.SUBCUT_FAT: (0.05, 0.1), T.FAT: (0.05, 0.1), T.MUSCLE: (0.08, 0.15),
    T.LIVER: (0.22, 0.4), T.PORTAL_VEIN: (0.03, 0.1), T.HEPATIC_VEIN: (0.03, 0.1),
    T.LESION_HYPO: (0.4, 0.6), T.LESION_HYPER: (0.65, 0.85), T.LESION_CYST: (0.85, 1.0),
    T.SPLEEN: (0.4, 0.62), T.KIDNEY_CORTEX: (0.4, 0.58), T.KIDNEY_MEDULLA: (0.55, 0.72), T.URINE: (0.85, 1.0),
    T.GALLBLADDER: (0.75, 1.0), T.GI_WALL: (0.22, 0.36), T.GI_FLUID: (0.15, 0.95), T.GAS: (0, 0.02),
    T.STOOL: (0.08, 0.45), T.AORTA: (0.02, 0.1), T.IVC: (0.03, 0.12), T.VEIN: (0.03, 0.12),
    T.HEART: (0.04, 0.15), T.LUNG: (0.01, 0.04), T.BONE_CORTICAL: (0.01, 0.04),
    T.BONE_CANCELLOUS: (0.1, 0.2), T.DISC: (0.45, 0.62), T.CSF: (0.85, 1.0), T.PANCREAS: (0.28, 0.4),
    T.CARTILAGE: (0.12, 0.2), T.TABLE: (0, 0.01),
}
# slow-flowing or contrast-laden blood is bright on many fat-suppressed T2 scans (CHAOS T2-SPIR)
BRIGHT_VESSELS_T2 = {T.PORTAL_VEIN: (0.35, 0.8), T.HEPATIC_VEIN: (0.3, 0.75), T.IVC: (0.3, 0.75),
                     T.VEIN: (0.3, 0.75), T.AORTA: (0.1, 0.5), T.HEART: (0.15, 0.5)}
FAT_FRACTION = {T.SUBCUT_FAT: 1.0, T.FAT: 1.0, T.BONE_CANCELLOUS: 0.45, T.STOOL: 0.2}
# how much to blur each heterogeneity level (mm): organ-scale and lobule-scale variation
TEXTURE_SCALES_MM = ((30.0, 60.0), (6.0, 12.0))


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


def smooth_field(rng, grid: Grid, scale_mm: float) -> np.ndarray:
    """Zero-mean, unit-std random field correlated over ~`scale_mm`: white noise on a coarse
    lattice, linearly upsampled (cheap at any resolution)."""
    coarse = [max(2, int(np.ceil(n * s / scale_mm)) + 1) for n, s in zip(grid.shape, grid.spacing)]
    lattice = rng.standard_normal(coarse).astype(np.float32)
    field = zoom(lattice, [n / c for n, c in zip(grid.shape, coarse)], order=1, grid_mode=False)
    field = field[: grid.shape[0], : grid.shape[1], : grid.shape[2]]
    field -= field.mean()
    field /= max(float(field.std()), 1e-6)
    return field


def texture(rng, tissue: np.ndarray, grid: Grid, amplitude: dict, default: float) -> np.ndarray:
    """Per-tissue heterogeneity: amplitude[tissue] x (coarse + fine smooth fields)."""
    amp = np.full(256, F32(default), np.float32)
    for code, a in amplitude.items():
        amp[code] = a
    mix = F32(rng.uniform(0.3, 0.7))
    field = smooth_field(rng, grid, rng.uniform(*TEXTURE_SCALES_MM[0])) * np.sqrt(F32(1) - mix)
    field += smooth_field(rng, grid, rng.uniform(*TEXTURE_SCALES_MM[1])) * np.sqrt(mix)
    field *= amp[tissue]
    return field


def native_noise_factor(grid: Grid, native_spacing) -> float:
    """Noise std on this grid relative to the native grid: a voxel k times the native volume
    averages k native voxels (std / sqrt(k)), as a resampled real scan does."""
    if native_spacing is None:
        return 1.0
    k = float(np.prod(grid.spacing) / np.prod(native_spacing))
    return float(1.0 / np.sqrt(max(k, 1.0)))


def correlated_noise(rng, shape, sigma: float) -> np.ndarray:
    """Gaussian noise with std `sigma`, correlated over ~1 voxel in-plane like a soft or sharp
    reconstruction kernel (random per scan)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    w = rng.uniform(0.0, 0.28)
    weights = (w, w, rng.uniform(0.0, 0.15))
    blur(noise, weights)
    noise *= F32(sigma / _blur_gain(weights))
    return noise


def render_ct(rng, tissue: np.ndarray, grid: Grid, phase: str = "random", noise: float = 1.0,
              native_spacing=None) -> tuple[np.ndarray, dict]:
    """int16 HU image of one contrast phase (random per case by default)."""
    if phase == "random":
        phase = str(rng.choice(CT_PHASES, p=CT_PHASE_P))
    lut = _table(rng, CT_TABLES[phase])
    lut[: N_TISSUES] += F32(rng.normal(0, 4))  # scanner calibration offset
    steatosis = float(rng.uniform(10, 45)) if rng.random() < 0.2 else 0.0  # fatty liver: common, lowers HU
    lut[T.LIVER] -= F32(steatosis)
    lut[T.AIR] = -1000
    img = lut[tissue]
    soft = {T.AIR: 0.0, T.GAS: 0.0, T.LUNG: 25.0, T.BONE_CORTICAL: 60.0, T.BONE_CANCELLOUS: 40.0,
            T.TABLE: 0.0, T.STOOL: 30.0}
    img += texture(rng, tissue, grid, soft, default=rng.uniform(3, 9))
    w = rng.uniform(0.1, 0.22)
    blur(img, (w, w, rng.uniform(0.12, 0.25)))
    sigma = rng.uniform(8, 25) * noise  # at the native voxel size
    eff = sigma * native_noise_factor(grid, native_spacing)
    if eff > 0:
        img += correlated_noise(rng, img.shape, eff)
    np.clip(img, -1024, 3071, out=img)
    params = {"phase": phase, "steatosis_hu": round(steatosis, 1), "noise_hu": round(sigma, 2), "noise_hu_on_grid": round(eff, 2),
              "tissue_hu": _named(lut)}
    if rng.random() < 0.2:  # reconstruction circle padded like many scanners
        nx, ny = img.shape[:2]
        xx, yy = np.ogrid[:nx, :ny]
        outside = ((xx - (nx - 1) / 2) ** 2 + (yy - (ny - 1) / 2) ** 2) > (min(nx, ny) / 2) ** 2
        pad = float(rng.choice([-1024, -2048, -3024]))
        img[outside] = pad
        params["padding_hu"] = pad
    return np.rint(img).astype(np.int16), params


def _mr_tables(rng, variant: str) -> tuple[np.ndarray, float, bool]:
    """(water LUT, fat signal, opposed phase?) of one sequence variant."""
    if variant.startswith("t1"):
        water = _table(rng, MR_T1_POST_WATER if variant == "t1_post_fs" else MR_T1_WATER)
        fat = rng.uniform(0.05, 0.25) if variant == "t1_post_fs" else rng.uniform(0.8, 1.0)
        return water, fat, variant == "t1_opposed"
    ranges = dict(MR_T2_WATER)
    if rng.random() < 0.6:
        ranges.update(BRIGHT_VESSELS_T2)
    water = _table(rng, ranges)
    fat = rng.uniform(0.05, 0.3) if variant == "t2_fs" else rng.uniform(0.45, 0.9)
    return water, fat, False


def render_mri(rng, tissue: np.ndarray, grid: Grid, sequence: str = "t1", noise: float = 1.0,
               bias: float = 1.0, variant: str = "random", native_spacing=None) -> tuple[np.ndarray, dict]:
    """int16 MR image: water/fat signal model, texture, blur, ghosting, bias field, Rician noise."""
    if variant == "random":
        variant = str(rng.choice(MR_VARIANTS[sequence], p=MR_VARIANT_P[sequence]))
    water, fat, opposed = _mr_tables(rng, variant)
    frac = np.zeros(256, np.float32)
    for code, f in FAT_FRACTION.items():
        frac[code] = f
    frac[T.LIVER] = rng.uniform(0, 0.15) if rng.random() < 0.4 else 0.0  # steatosis
    weights = (rng.uniform(0.1, 0.22), rng.uniform(0.1, 0.22), rng.uniform(0.15, 0.25))
    f = blur(frac[tissue], weights)  # partial volume mixes fat and water at organ borders
    if opposed:  # the cancelling band is about one native voxel wide on each side of a border
        blur(f, (0.3, 0.3, 0.15))
    # TR/TE/flip angle shift water against fat: widely on T1 (fat can be 5x the liver), less on T2
    water_weight = rng.uniform(0.3, 1.2) if sequence == "t1" else rng.uniform(0.6, 1.25)
    w = water[tissue] * F32(water_weight)
    w += texture(rng, tissue, grid, {T.AIR: 0.0, T.GAS: 0.0, T.LUNG: 0.005}, default=rng.uniform(0.01, 0.035))
    blur(w, weights)
    np.clip(w, 0, None, out=w)
    img = w * (F32(1) - f)
    img = np.abs(img - F32(fat) * f) if opposed else img + F32(fat) * f
    gamma = float(np.exp(rng.uniform(-0.3, 0.3)))  # receiver / reconstruction contrast spread
    img = (img / F32(max(float(img.max()), 1e-6))) ** F32(gamma)
    liver = tissue == T.LIVER
    liver_signal = max(float(np.median(img[liver])) if liver.any() else 0.5, 0.02)
    scale = rng.uniform(300, 1500) / liver_signal
    amp = rng.uniform(0.2, 0.45) * bias
    # noise relative to the liver's signal (liver SNR 12-50 on the native grid, as in clinical scans)
    sigma = liver_signal * rng.uniform(0.02, 0.08) * noise * native_noise_factor(grid, native_spacing)
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
    params = {"sequence": sequence, "variant": variant, "scale": round(scale, 2), "gamma": round(gamma, 3),
              "water_weight": round(float(water_weight), 3), "bias_amplitude": round(amp, 3),
              "noise_rel": round(sigma, 4), "fat_signal": round(float(fat), 3),
              "liver_fat_fraction": round(float(frac[T.LIVER]), 3), "tissue_signal": _named(water)}
    return np.rint(np.clip(img, 0, 32767)).astype(np.int16), params


# a randomised scan inside a CT dataset: its unit range spans the liver window (-150..250 HU) and
# beyond, so after windowing every tissue lands anywhere from black to white
RANDOMISED_HU = (-250.0, 350.0)


def render_randomised(rng, tissue: np.ndarray, grid: Grid, noise: float = 1.0,
                      hu: bool = False) -> tuple[np.ndarray, dict]:
    """SynthSeg-style: random intensity per tissue, random bias, noise, blur and gamma.
    int16 0..1000, or HU over RANDOMISED_HU when `hu` (a randomised share of a CT dataset)."""
    lut = rng.uniform(0, 1, 256).astype(np.float32)
    lut[T.AIR] = rng.uniform(0, 0.1)
    weights = tuple(rng.uniform(0.0, 0.3, 3))
    img = lut[tissue]
    img += texture(rng, tissue, grid, {T.AIR: 0.0}, default=rng.uniform(0.0, 0.05))
    blur(img, weights)
    img *= bias_field(rng, grid, rng.uniform(0.0, 0.5))
    sigma = rng.uniform(0.0, 0.08) * noise
    if sigma > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * F32(sigma)
    lo, hi = np.percentile(img[::2, ::2, ::2], [0.5, 99.5])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) ** F32(np.exp(rng.uniform(-0.4, 0.4)))
    params = {"randomised": True, "noise_rel": round(sigma, 4), "blur": [round(w, 3) for w in weights],
              "scale": "hu" if hu else "unit"}
    if hu:
        lo, hi = RANDOMISED_HU
        return np.rint(lo + img * F32(hi - lo)).astype(np.int16), params
    return np.rint(img * 1000).astype(np.int16), params


def _named(lut) -> dict:
    return {code.name.lower(): round(float(lut[code]), 3) for code in T if code < N_TISSUES}
