"""The intensity step of a preprocessing config, for training and inference alike.

`intensity_window` reads a CT method's clipped linear map from the config (the one place that
does); `datamodules.transforms.intensity_steps` turns a config into MONAI dict transforms (training,
validation, the Predictor's MRI methods) and `benchmark.inference.predictor.intensity_function` into a function on
one tensor (the Predictor). This module imports no MONAI: its import takes seconds, and predicting a CT
scan needs none.
"""
from __future__ import annotations

from typing import Any


def intensity_window(cfg: dict[str, Any]) -> tuple[float, float, float, float] | None:
    """(a_min, a_max, b_min, b_max): a CT method maps [a_min, a_max] linearly onto [b_min, b_max] and
    clips, as MONAI's ScaleIntensityRange. The window goes to [0, 1]; the fingerprint clips to the
    foreground percentiles and z-scores in the same map. None for the MRI methods."""
    method = cfg["method"]
    if method == "ct_window":
        return float(cfg["a_min"]), float(cfg["a_max"]), 0.0, 1.0
    if method == "ct_fingerprint":
        lo, hi, mean, std = (float(cfg[k]) for k in ("lower", "upper", "mean", "std"))
        return lo, hi, (lo - mean) / std, (hi - mean) / std
    return None
