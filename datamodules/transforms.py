"""MONAI dict transforms: invertible preprocessing from a plain config, and augmentation recipes.

The preprocessing config is a JSON-able dict (stored in checkpoints and `result.json`) so that
prediction on a file never seen in training rebuilds exactly the same pipeline and inverts it
back to the file's own grid with MONAI `Invertd`.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from monai.transforms import (
                              ClipIntensityPercentilesd, Compose, CropForegroundd, EnsureChannelFirstd, EnsureTyped, LoadImaged,
                              MapTransform, NormalizeIntensityd, Orientationd, RandAdjustContrastd, RandAffined, RandFlipd,
                              RandGaussianNoised, RandGaussianSmoothd, RandScaleIntensityd, RandScaleIntensityFixedMeand,
                              Rand2DElasticd, Rand3DElasticd, ScaleIntensityRanged, Spacingd,
                              )

from datamodules.intensity import intensity_window

CONFIG_VERSION = 1
PRESET_SPACING = {"cpu": (3.0, 3.0, 3.0), "gpu": (1.5, 1.5, 0.0)}  # 0: keep (or median) slice spacing
PRESETS = ("cpu", "gpu", "median")
CT_WINDOW = (-150.0, 250.0)  # liver window (level 50 HU, width 400 HU) -> [0, 1]
CT_BODY_HU = -500.0  # air/body boundary for cropping to the body
MRI_BODY_FRACTION = 0.1  # body = voxels above 10 % of the image's 99th percentile
MRI_PERCENTILES = (0.5, 99.5)  # basic: per-image clip before z-score
MRI_FG_PERCENTILES = (1.0, 99.0)  # advanced: inside the body only, so bias-field tails matter less
AUGMENTATION_RECIPES = ("none", "paper", "nnunet", "anatomical")


def fit_fingerprint(spacings: Iterable[Sequence[float]], foreground: Iterable[np.ndarray] = ()) -> dict[str, Any]:
    """nnU-Net-style dataset fingerprint: median spacing and foreground intensity statistics.

    `foreground` holds, per training case, a sample of image values inside the liver mask.
    """
    spacings = np.asarray(list(spacings), dtype=np.float64)
    if spacings.size == 0:
        raise ValueError("fingerprint needs at least one case")
    fp: dict[str, Any] = {"num_cases": int(len(spacings)),
                          "median_spacing": [round(float(s), 4) for s in np.median(spacings, axis=0)]}
    values = [np.asarray(v, dtype=np.float64).ravel() for v in foreground]
    if values:
        allv = np.concatenate(values)
        fp.update({"fg_percentile_00_5": float(np.percentile(allv, 0.5)),
                   "fg_percentile_99_5": float(np.percentile(allv, 99.5)),
                   "fg_mean": float(allv.mean()), "fg_std": float(allv.std())})
    return fp


def foreground_sample(image: np.ndarray, mask: np.ndarray, n: int = 10_000, seed: int = 0) -> np.ndarray:
    """Up to `n` image values inside `mask` (deterministic), as nnU-Net samples per case."""
    values = np.asarray(image)[np.asarray(mask, dtype=bool)]
    if values.size > n:
        values = np.random.default_rng(seed).choice(values, n, replace=False)
    return values.astype(np.float32)


def resolve_spacing(preset: str, target_spacing: Sequence[float] | None,
                    fingerprint: dict[str, Any] | None) -> list[float]:
    """Target spacing in mm: explicit value > preset; 'median' and 'gpu' z use the fingerprint."""
    if target_spacing is not None:
        spacing = [float(s) for s in target_spacing]
        if len(spacing) != 3 or any(s <= 0 for s in spacing):
            raise ValueError(f"target_spacing must be three positive mm values, got {target_spacing}")
        return spacing
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    median = (fingerprint or {}).get("median_spacing")
    if preset == "median":
        if median is None:
            raise ValueError("preset 'median' needs a fingerprint with 'median_spacing'")
        return [float(s) for s in median]
    spacing = list(PRESET_SPACING[preset])
    if spacing[2] == 0.0 and median is not None:
        spacing[2] = float(median[2])
    return spacing


def preprocessing_config(modality: str, preset: str = "cpu", target_spacing: Sequence[float] | None = None,
                         advanced: bool = False, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Plain-value description of the preprocessing; `build_preprocessing` turns it into transforms."""
    modality = modality.lower()
    if modality not in ("ct", "mri"):
        raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")
    if modality == "ct" and not advanced:
        intensity = {"method": "ct_window", "a_min": CT_WINDOW[0], "a_max": CT_WINDOW[1]}
    elif modality == "ct":
        if not fingerprint or "fg_mean" not in fingerprint:
            raise ValueError("advanced CT preprocessing needs a fingerprint with foreground statistics "
                             "(fit_fingerprint(spacings, foreground_samples))")
        intensity = {"method": "ct_fingerprint", "lower": fingerprint["fg_percentile_00_5"],
                     "upper": fingerprint["fg_percentile_99_5"], "mean": fingerprint["fg_mean"],
                     "std": max(float(fingerprint["fg_std"]), 1e-6)}
    elif not advanced:
        intensity = {"method": "mri_zscore", "lower_pct": MRI_PERCENTILES[0], "upper_pct": MRI_PERCENTILES[1]}
    else:
        intensity = {"method": "mri_foreground_zscore", "lower_pct": MRI_FG_PERCENTILES[0],
                     "upper_pct": MRI_FG_PERCENTILES[1], "body_fraction": MRI_BODY_FRACTION}
    crop = None
    if advanced:
        crop = {"kind": "hu", "threshold": CT_BODY_HU} if modality == "ct" else \
            {"kind": "relative", "threshold": MRI_BODY_FRACTION}
    return {"version": CONFIG_VERSION, "modality": modality, "preset": preset, "advanced": bool(advanced),
            "orientation": "RAS", "target_spacing": resolve_spacing(preset, target_spacing, fingerprint),
            "crop_to_body": crop, "intensity": intensity, "fingerprint": fingerprint}


class BodyMask:
    """Picklable `select_fn` for `CropForegroundd`: voxels above a fixed or relative threshold."""

    def __init__(self, kind: str, threshold: float):
        self.kind, self.threshold = kind, float(threshold)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.kind == "hu":
            return img > self.threshold
        t = torch.as_tensor(img, dtype=torch.float32)
        return t > self.threshold * torch.quantile(t.flatten()[:: max(1, t.numel() // 1_000_000)], 0.99)


class ForegroundZScored(MapTransform):
    """Per-image z-score inside the body (percentile clip within the body first; 0 outside), as
    nnU-Net's masked z-score; percentiles inside the body resist bias-field tails."""

    def __init__(self, keys, lower_pct: float, upper_pct: float, body_fraction: float):
        super().__init__(keys)
        self.lower_pct, self.upper_pct = lower_pct, upper_pct
        self.body = BodyMask("relative", body_fraction)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            body = self.body(img)
            vals = img[body].float()
            if vals.numel() < 2:
                vals = img.flatten().float()
                body = torch.ones_like(body)
            lo, hi = torch.quantile(vals[:: max(1, vals.numel() // 1_000_000)],
                                    vals.new_tensor([self.lower_pct / 100, self.upper_pct / 100]))
            clipped = img.clamp(lo, hi)
            inside = clipped[body]
            out = (clipped - inside.mean()) / inside.std().clamp_min(1e-6)
            d[key] = out * body
        return d


def intensity_steps(cfg: dict[str, Any]) -> list:
    """The config's intensity step (`preprocessing_config(...)["intensity"]`) as MONAI dict transforms
    on "image": training and validation run them, and so does the Predictor for the MRI methods
    (`benchmark.inference.predictor.intensity_function`)."""
    window = intensity_window(cfg)
    if window is not None:  # CT: one clipped linear map
        a_min, a_max, b_min, b_max = window
        return [ScaleIntensityRanged("image", a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=True)]
    method = cfg["method"]
    if method == "mri_zscore":
        return [ClipIntensityPercentilesd("image", lower=cfg["lower_pct"], upper=cfg["upper_pct"]),
                NormalizeIntensityd("image")]
    if method == "mri_foreground_zscore":
        return [ForegroundZScored("image", cfg["lower_pct"], cfg["upper_pct"], cfg["body_fraction"])]
    raise ValueError(f"unknown intensity method {method!r}")


def build_preprocessing(config: dict[str, Any], keys: Sequence[str] = ("image", "label"),
                        load: bool = True) -> Compose:
    """Invertible preprocessing: [LoadImaged, EnsureChannelFirstd,] Orientationd(RAS), Spacingd,
    [CropForegroundd to the body,] intensity (image only), float32.

    `load=False` starts from channel-first MetaTensors that carry their affine (the DataModule
    decodes and validates files itself). Labels are resampled with nearest neighbour.
    """
    keys = tuple(keys)
    if "image" not in keys:
        raise ValueError(f"keys must include 'image', got {keys}")
    modes = tuple("nearest" if k == "label" else "bilinear" for k in keys)
    steps: list = []
    if load:
        steps += [LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys)]
    steps += [Orientationd(keys, axcodes=config.get("orientation", "RAS"), labels=None),
              Spacingd(keys, pixdim=config["target_spacing"], mode=modes, dtype=np.float32)]
    crop = config.get("crop_to_body")
    if crop:
        steps.append(CropForegroundd(keys, source_key="image", select_fn=BodyMask(crop["kind"], crop["threshold"]),
                                     margin=2, allow_smaller=True))
    steps += intensity_steps(config["intensity"])
    steps.append(EnsureTyped(keys, dtype=torch.float32))
    return Compose(steps)


def build_augmentation(dims: int, recipe: str | bool = "paper", keys: Sequence[str] = ("image", "label")) -> Compose:
    """Training augmentation for one sample (channel-first, 2D or 3D).

    'paper': rotation (±15° in-plane), scaling (0.85-1.15), flips: the seed paper's set.
    'nnunet': the paper's set plus elastic deformation, Gaussian noise and blur, brightness,
    contrast and gamma, with nnU-Net's probabilities. 'anatomical': the paper's rotation and
    scaling without flips: a mirrored abdomen puts the liver where the spleen is, and on the phantom's
    MRI the flips cost 0.15 test Dice (docs/convergence.md). 'none'/False: identity.
    """
    recipe = {True: "paper", False: "none", None: "none"}.get(recipe, recipe)  # type: ignore[arg-type]
    if recipe not in AUGMENTATION_RECIPES:
        raise ValueError(f"unknown augmentation recipe {recipe!r}; choose one of {AUGMENTATION_RECIPES}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    keys = tuple(keys)
    if recipe == "none":
        return Compose([])
    modes = tuple("nearest" if k == "label" else "bilinear" for k in keys)
    pads = tuple("zeros" if k == "label" else "border" for k in keys)
    rot = math.radians(15)
    rotate_range = (rot,) if dims == 2 else (math.radians(5), math.radians(5), rot)
    steps: list = [RandAffined(keys, prob=0.5, rotate_range=rotate_range, scale_range=(0.15,) * dims,
                               mode=modes, padding_mode=pads)]
    if recipe == "nnunet":
        if dims == 2:
            steps.append(Rand2DElasticd(keys, spacing=(24, 24), magnitude_range=(1, 3), prob=0.2,
                                        mode=modes, padding_mode=pads))
        else:
            steps.append(Rand3DElasticd(keys, sigma_range=(5, 8), magnitude_range=(50, 150), prob=0.2,
                                        mode=modes, padding_mode=pads))
        steps += [RandGaussianNoised("image", prob=0.15, std=0.1),
                  RandGaussianSmoothd("image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0),
                                      sigma_z=(0.5, 1.0)),
                  RandScaleIntensityd("image", factors=0.25, prob=0.15),  # brightness
                  RandScaleIntensityFixedMeand("image", factors=0.25, prob=0.15),  # contrast
                  RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3)]  # gamma
    if recipe != "anatomical":
        steps += [RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1)]
    return Compose(steps)
