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


# --- Ranking robustness (Maier-Hein et al. 2018; Wiesenfarth et al. 2021, challengeR) -----------------

def average_ranks(scores, higher_is_better: bool = True) -> np.ndarray:
    """Ranks along the last axis, 1 = best; tied scores share the average of the ranks they span.
    Scores equal to 12 decimals are ties (means summed in another order differ in the last bit)."""
    from scipy.stats import rankdata

    a = np.round(np.asarray(scores, dtype=float), 12)
    return rankdata(-a if higher_is_better else a, method="average", axis=-1)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    adjusted, running = np.empty(p.size), 0.0
    for i, idx in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (p.size - i) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


def bootstrap_means(dice: Sequence[np.ndarray], groups: Sequence[str], *, n_boot: int = 10000, seed: int = 0,
                    patient_picks: np.ndarray | None = None, seed_picks: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Bootstrap samples of each variant's mean per-case Dice, shape (n_boot, n_variants).

    `dice[v]`: array (seeds of v, cases) with the cases in one order for every variant; `groups`: the
    patient of each case. A sample draws patients with replacement, the same ones for every variant
    (the test set is shared, so the comparison stays paired), keeping a patient's cases together, and
    draws each variant's seeds with replacement; its mean is over the drawn cases of the mean over the
    drawn seeds. `patient_picks` (n_boot, n_patients) and `seed_picks[v]` (n_boot, seeds of v) replace
    the random draws (tests enumerate every resample with them).
    """
    _, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    n_patients = int(inverse.max()) + 1 if inverse.size else 0
    counts = np.bincount(inverse, minlength=n_patients).astype(float)
    rng = np.random.default_rng(seed)
    if patient_picks is None:
        patient_picks = rng.integers(0, n_patients, size=(n_boot, n_patients))
    n_boot = patient_picks.shape[0]
    out = np.empty((n_boot, len(dice)))
    for v, values in enumerate(dice):
        values = np.atleast_2d(np.asarray(values, dtype=float))
        n_seeds = values.shape[0]
        sums = np.stack([np.bincount(inverse, weights=row, minlength=n_patients) for row in values])  # (S, P)
        picks = seed_picks[v] if seed_picks is not None else rng.integers(0, n_seeds, size=(n_boot, n_seeds))
        weights = np.stack([np.bincount(p, minlength=n_seeds) for p in picks]) / picks.shape[1]  # (B, S)
        per_patient = weights @ sums  # (B, P): seed-averaged sum of each patient's cases
        out[:, v] = np.take_along_axis(per_patient, patient_picks, axis=1).sum(1) / counts[patient_picks].sum(1)
    return out


def rank_frequencies(ranks: np.ndarray) -> np.ndarray:
    """(variants, ranks 1..V) fraction of samples with each rank; an average (tied) rank r.5 counts half
    to each neighbour, so every row sums to 1."""
    n, v = ranks.shape
    freq = np.zeros((v, v))
    for j in range(v):
        lo = np.floor(ranks[:, j]).astype(int)
        frac = ranks[:, j] - lo
        np.add.at(freq[j], lo - 1, 1 - frac)
        np.add.at(freq[j], np.minimum(lo, v - 1), frac)
    return freq / n


def noise_floor(seed_means: Mapping[str, Sequence[float]]) -> dict:
    """Seed-to-seed spread against the spread between variants: each variant's std over seeds of its
    mean Dice, their mean, and the std of the variant means (ddof=1; NaN where undefined)."""
    stds = {k: mean_std(v)[1] for k, v in seed_means.items()}
    means = [mean_std(v)[0] for v in seed_means.values()]
    finite = [s for s in stds.values() if not math.isnan(s)]
    return {"std": stds, "mean_seed_std": float(np.mean(finite)) if finite else math.nan,
            "between_variants_std": mean_std(means)[1]}
