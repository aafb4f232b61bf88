"""Per-case segmentation metrics in 3D, in millimetres, with MONAI's surface conventions.

One function scores one case (`case_metrics`), one aggregates many (`summarise`). The surface
distances follow MONAI's `get_edge_surface_distance` (the code behind `compute_hausdorff_distance`
and `compute_average_surface_distance`) to the float32 digit, computed on the union's bounding box
with a nearest-surface search in the band around each surface voxel (numpy only, no torch import),
once per case so HD95 and ASSD share one edge extraction and one search.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from benchmark.scoring.postprocessing import bounding_box as _bounding_box, postprocess
from models import overlap  # the formulas training's *_grid metrics use too

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
    Metric("dice", lambda c: overlap.dice(c.tp, c.fp, c.fn), "mean", ".4f", "test/dice", "max"),
    Metric("jaccard", lambda c: overlap.jaccard(c.tp, c.fp, c.fn), "mean", ".4f", "test/jaccard", "max"),
    Metric("precision", lambda c: overlap.precision(c.tp, c.fp, c.fn), "mean", ".4f", "test/precision", "max"),
    Metric("recall", lambda c: overlap.recall(c.tp, c.fp, c.fn), "mean", ".4f", "test/recall", "max"),
    Metric("hd95", _hd95, "nanmean", ".2f", "test/hd95", "min"),
    Metric("assd", _assd, "nanmean", ".2f", "test/assd", "min"),
    Metric("failed", lambda c: int(c.d_pred is None), "sum", "d", "test/failed", "min"),
)
METRIC_KEYS = tuple(m.name for m in METRICS)
AVERAGED_KEYS = tuple(m.name for m in METRICS if m.aggregation != "sum")  # means over cases (not the failed count)
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


def _edges(mask: np.ndarray) -> np.ndarray:
    """mask XOR its 6-connected erosion (outside counts as background), by array slicing: the
    same voxels as `scipy.ndimage.binary_erosion` with its default cross, several times faster."""
    padded = np.pad(mask, 1)
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    interior = padded[core].copy()
    for axis in range(mask.ndim):
        for lo, hi in ((0, -2), (2, None)):
            shifted = list(core)
            shifted[axis] = slice(lo, hi)
            interior &= padded[tuple(shifted)]
    return mask & ~interior


def _offsets_by_distance(spacing: np.ndarray, max_offsets: int) -> tuple[np.ndarray, np.ndarray]:
    """Every integer voxel offset (K, ndim) in a ball of about `max_offsets` voxels (radius at least
    the largest spacing), sorted by length in mm, with those lengths."""
    unit_ball = math.pi ** (len(spacing) / 2) / math.gamma(len(spacing) / 2 + 1)
    radius = max(float(spacing.max()), (max_offsets * float(np.prod(spacing)) / unit_ball) ** (1 / len(spacing)))
    half = np.floor(radius / spacing + 1e-9).astype(int)
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    length = np.sqrt(((offsets * spacing) ** 2).sum(axis=1))
    order = np.argsort(length, kind="stable")
    inside = length[order] <= radius * (1 + 1e-12)
    return offsets[order][inside], length[order][inside]


def _nearest_surface_mm(points: np.ndarray, target: np.ndarray, spacing: np.ndarray,
                        max_offsets: int = 400) -> np.ndarray:
    """Euclidean distance in mm from every True voxel of `points` to the nearest True voxel of
    `target` (same shape). Exact: offsets are tried shortest first in the band around each point,
    so the first hit is the nearest; points with nothing in the band go to a KD-tree."""
    offsets, length = _offsets_by_distance(spacing, max_offsets)
    pad = [(int(p), int(p)) for p in np.abs(offsets).max(axis=0)]
    padded = np.pad(target, pad)
    flat = padded.ravel()
    strides = np.array(padded.strides, dtype=np.int64) // padded.itemsize
    todo = np.flatnonzero(np.pad(points, pad))  # flat index of each point in `padded`
    dist = np.full(todo.size, np.inf)
    index = np.arange(todo.size)
    budget = 24 * todo.size  # gathers before a KD-tree is cheaper
    for off, mm in zip(offsets @ strides, length):
        hit = flat[todo + off]
        if hit.any():
            dist[index[hit]] = mm
            keep = ~hit
            todo, index = todo[keep], index[keep]
            if index.size == 0:
                break
        budget -= todo.size
        if budget < 0:
            break
    if index.size:
        from scipy.spatial import cKDTree

        tree = cKDTree(np.argwhere(padded) * spacing, leafsize=32)
        dist[index] = tree.query(np.stack(np.unravel_index(todo, padded.shape), axis=1) * spacing, k=1)[0]
    return dist


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (pred surface -> gt surface, gt surface -> pred surface).

    Both masks must be non-empty. MONAI's convention (`get_edge_surface_distance`: surface = mask
    XOR 6-connected erosion after cropping both to the union's bounding box, exact Euclidean
    distances rounded to float32), computed on the cropped surface band instead of a KD-tree over
    the whole surface: the same values, several times faster (tests/test_metrics_speed.py).
    """
    pred, gt = _as_mask(pred), _as_mask(gt)
    box = _bounding_box(pred | gt)
    pred, gt = pred[box], gt[box]
    scale = np.asarray([float(s) for s in spacing], dtype=np.float64)
    e_pred, e_gt = _edges(pred), _edges(gt)
    d_pred = _nearest_surface_mm(e_pred, e_gt, scale)
    d_gt = _nearest_surface_mm(e_gt, e_pred, scale)
    # MONAI returns float32 distances; round the same way so HD95/ASSD agree to the last digit
    return d_pred.astype(np.float32).astype(np.float64), d_gt.astype(np.float32).astype(np.float64)


def _as_mask(array) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype != bool:
        a = a > 0
    return a


def case_metrics(pred, gt, spacing: Sequence[float] | None = None, largest_component: bool = False,
                 opening_mm: float = 0.0) -> dict:
    """Score one case: overlap metrics, HD95 and ASSD in mm (MONAI conventions), voxel counts.

    `pred`, `gt`: boolean (or 0/non-0) arrays of the same shape, in the original geometry.
    `spacing`: mm per array axis (defaults to 1). `largest_component`, `opening_mm`: the recipe's
    post-processing of the prediction (`postprocessing.postprocess`), applied first.
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
    pred = postprocess(pred, spacing, largest_component, opening_mm)

    if gt.flags.f_contiguous and not gt.flags.c_contiguous:  # NIfTI arrays come in Fortran order:
        pred, gt, spacing = pred.T, gt.T, spacing[::-1]  # score the C-ordered view (same values)
    pred, gt = np.ascontiguousarray(pred), np.ascontiguousarray(gt)
    box = _bounding_box(pred | gt)  # nothing outside it counts: score the crop
    pred, gt = pred[box], gt[box]
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
