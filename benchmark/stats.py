"""Small statistics for the leaderboard: mean ± std over seeds, a seeded bootstrap CI over
patients, a paired Wilcoxon test on shared cases, and the Pareto front of accuracy vs time."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (ddof=1; NaN for a single value) and count of the non-NaN values."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return math.nan, math.nan, 0
    std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    return float(arr.mean()), std, int(arr.size)


def bootstrap_ci(values: Sequence[float], groups: Sequence[str] | None = None, *, n_boot: int = 10000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean, resampling *groups* (patients) with replacement.

    Cases of one patient (MRI T1 and T2) stay together; without `groups` every value is its own
    patient. Seeded, so the same input always gives the same interval.
    """
    vals = np.asarray(values, dtype=float)
    if vals.size == 0:
        return math.nan, math.nan
    if groups is None:
        groups = list(range(vals.size))
    if len(groups) != vals.size:
        raise ValueError(f"{len(groups)} group labels for {vals.size} values")
    _, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    sums = np.bincount(inverse, weights=vals)
    counts = np.bincount(inverse).astype(float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, sums.size, size=(n_boot, sums.size))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_wilcoxon(variant: Mapping[str, float], baseline: Mapping[str, float]) -> dict | None:
    """Two-sided Wilcoxon signed-rank test of variant vs baseline on the cases both have.

    Returns n, mean difference (variant − baseline), statistic and p; None without shared cases.
    All-zero differences give p = 1 (scipy cannot rank them).
    """
    from scipy.stats import wilcoxon

    cases = sorted(set(variant) & set(baseline))
    if not cases:
        return None
    x = np.asarray([variant[c] for c in cases], dtype=float)
    y = np.asarray([baseline[c] for c in cases], dtype=float)
    diff = x - y
    out = {"n": len(cases), "mean_diff": float(diff.mean()), "statistic": math.nan, "p": 1.0}
    if np.any(diff != 0):
        res = wilcoxon(x, y)
        out.update(statistic=float(res.statistic), p=float(res.pvalue))
    return out


def pareto_front(times: Sequence[float], scores: Sequence[float]) -> list[bool]:
    """True for points no other point beats: faster-or-equal *and* better-or-equal, one strictly."""
    pts = list(zip(times, scores))
    front = []
    for i, (t, s) in enumerate(pts):
        dominated = any(
            (t2 <= t and s2 >= s) and (t2 < t or s2 > s) for j, (t2, s2) in enumerate(pts) if j != i
        )
        front.append(not dominated)
    return front
