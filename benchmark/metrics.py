"""Per-case segmentation metrics in 3D, in millimetres, with MONAI's surface conventions.

One function scores one case (`case_metrics`), one aggregates many (`summarise`). The
surface distances come from MONAI's own machinery (`get_edge_surface_distance`, the code
behind `compute_hausdorff_distance` and `compute_average_surface_distance`), called once per
case so HD95 and ASSD share one edge extraction and one nearest-surface search.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

COUNT_KEYS = ("tp", "fp", "fn")


@dataclass(frozen=True)
class Case:
    """What every metric function sees for one case: voxel counts and, when the prediction is not
    empty, the directed surface distances in mm (pred -> gt, gt -> pred)."""

    tp: int
    fp: int
    fn: int
    d_pred: np.ndarray | None
    d_gt: np.ndarray | None


@dataclass(frozen=True)
class Metric:
    """One row of the metric schema. `aggregation`: "mean" (every case, a failed case counts with
    its value), "nanmean" (cases that have a value) or "sum"; `format`: digits in tables."""

    name: str
    function: Callable[[Case], float]
    aggregation: str
    format: str
    wandb_key: str
    direction: str  # "max" or "min": which way is better


def _hd95(c: Case) -> float:
    if c.d_pred is None:
        return math.nan
    return float(max(np.percentile(c.d_pred, 95), np.percentile(c.d_gt, 95)))


def _assd(c: Case) -> float:
    return math.nan if c.d_pred is None else float(np.concatenate([c.d_pred, c.d_gt]).mean())


# The metric schema: per-case CSV columns, summaries, tables and W&B summary keys all derive from it.
# Adding a metric = one entry here + a test (see docs/evaluation.md).
METRICS: tuple[Metric, ...] = (
    Metric("dice", lambda c: 2 * c.tp / (2 * c.tp + c.fp + c.fn), "mean", ".4f", "test/dice", "max"),
    Metric("jaccard", lambda c: c.tp / (c.tp + c.fp + c.fn), "mean", ".4f", "test/jaccard", "max"),
    Metric("precision", lambda c: c.tp / (c.tp + c.fp) if c.tp + c.fp else 0.0, "mean", ".4f", "test/precision", "max"),
    Metric("recall", lambda c: c.tp / (c.tp + c.fn), "mean", ".4f", "test/recall", "max"),
    Metric("hd95", _hd95, "nanmean", ".2f", "test/hd95", "min"),
    Metric("assd", _assd, "nanmean", ".2f", "test/assd", "min"),
    Metric("failed", lambda c: int(c.d_pred is None), "sum", "d", "test/failed", "min"),
)
METRIC_KEYS = tuple(m.name for m in METRICS)
METRIC_BY_NAME = {m.name: m for m in METRICS}


def format_metric(name: str, value) -> str:
    """A value as the schema formats it in tables ("–" for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    fmt = METRIC_BY_NAME[name].format
    return f"{int(value):d}" if fmt == "d" else f"{float(value):{fmt}}"

SURFACE_CONVENTION = (
    "MONAI: surface = mask XOR 6-connected binary erosion (border value 0); euclidean distances "
    "in mm using the voxel spacing of each array axis; HD95 = max of the two directed 95th "
    "percentiles (linear interpolation); ASSD = mean of both directed distance sets concatenated; "
    "empty prediction: dice 0, precision 0, hd95/assd missing (NaN) and failed = 1"
)


def largest_connected_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected (full connectivity) component of a boolean mask.

    Same connectivity as MONAI's `KeepLargestConnectedComponent` default; scipy is used
    because it labels a 512x512x100 volume in well under a second on CPU.
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n == 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (pred surface -> gt surface, gt surface -> pred surface).

    Both masks must be non-empty. Uses MONAI's `get_edge_surface_distance` (crops to the union
    bounding box, erodes, then a KD-tree on CPU or an EDT on GPU).
    """
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on empty masks; callers handle those
        _, (d_pred, d_gt), _ = get_edge_surface_distance(
            torch.as_tensor(np.ascontiguousarray(pred)),
            torch.as_tensor(np.ascontiguousarray(gt)),
            distance_metric="euclidean",
            spacing=[float(s) for s in spacing],
            symmetric=True,
        )
    return d_pred.double().cpu().numpy(), d_gt.double().cpu().numpy()


def _as_mask(array) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype != bool:
        a = a > 0
    return a


def case_metrics(pred, gt, spacing: Sequence[float] | None = None, largest_component: bool = False) -> dict:
    """Score one case: overlap metrics, HD95 and ASSD in mm (MONAI conventions), voxel counts.

    `pred`, `gt`: boolean (or 0/non-0) arrays of the same shape, in the original geometry.
    `spacing`: mm per array axis (defaults to 1). `largest_component`: keep only the largest
    connected component of the prediction first (the post-processing recipe switch).
    An empty ground truth is an error (liver is present in every case of a liver dataset).
    """
    pred, gt = _as_mask(pred), _as_mask(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0,) * gt.ndim))
    if len(spacing) != gt.ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {gt.ndim}-D mask")
    if not gt.any():
        raise ValueError("ground truth mask is empty: no liver voxel to score against")
    if largest_component:
        pred = largest_connected_component(pred)

    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(gt)) - tp
    d_pred = d_gt = None
    if pred.any():
        d_pred, d_gt = surface_distances(pred, gt, spacing)
    case = Case(tp, fp, fn, d_pred, d_gt)
    return {**{m.name: m.function(case) for m in METRICS}, "tp": tp, "fp": fp, "fn": fn}


def _mean(values: Iterable[float], skip_nan: bool) -> float:
    arr = np.asarray([float(v) for v in values], dtype=float)
    if skip_nan:
        arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


def summarise(rows: Sequence[Mapping]) -> dict:
    """Aggregate per-case rows: means over all cases (a failed case counts with Dice 0),
    NaN-aware means of HD95/ASSD over the cases that have them, the failed count and,
    when the rows carry voxel counts, the global Dice 2ΣTP / Σ(2TP+FP+FN) (LiTS style)."""
    if not rows:
        raise ValueError("no per-case rows to summarise")
    out: dict = {"cases": len(rows)}
    for m in METRICS:
        if m.aggregation == "sum":
            out[m.name] = int(sum(int(float(r.get(m.name, 0))) for r in rows))
        else:
            out[m.name] = _mean((r[m.name] for r in rows), skip_nan=m.aggregation == "nanmean")
    if all(all(k in r for k in COUNT_KEYS) for r in rows):
        tp, fp, fn = (sum(int(float(r[k])) for r in rows) for k in COUNT_KEYS)
        out["global_dice"] = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else math.nan
    out["convention"] = SURFACE_CONVENTION
    return out
