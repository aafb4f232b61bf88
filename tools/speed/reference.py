"""The previous implementations, kept as references that the fast paths are compared with
(tests/test_metrics_speed.py, `python -m tools.speed.evaluate_speed`)."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np


def monai_surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm through MONAI's `get_edge_surface_distance` (crop to the
    union's box, 6-connected erosion, KD-tree on CPU): what `benchmark.scoring.metrics` used before."""
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, (d_pred, d_gt), _ = get_edge_surface_distance(
            torch.as_tensor(np.ascontiguousarray(pred)), torch.as_tensor(np.ascontiguousarray(gt)),
            distance_metric="euclidean", spacing=[float(s) for s in spacing], symmetric=True)
    return d_pred.double().cpu().numpy(), d_gt.double().cpu().numpy()


def monai_case_metrics(pred, gt, spacing: Sequence[float], largest_component: bool = False) -> dict:
    """`benchmark.scoring.metrics.case_metrics` as it was: full-volume counts and MONAI's distances."""
    from benchmark.scoring import metrics as M

    pred, gt = M._as_mask(pred), M._as_mask(gt)
    if largest_component:
        pred = _full_volume_lcc(pred)
    tp = int(np.count_nonzero(pred & gt))
    fp, fn = int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(gt)) - tp
    d_pred = d_gt = None
    if pred.any():
        d_pred, d_gt = monai_surface_distances(pred, gt, spacing)
    case = M.Case(tp, fp, fn, d_pred, d_gt)
    return {**{m.name: m.function(case) for m in M.METRICS}, "tp": tp, "fp": fp, "fn": fn}


def _full_volume_lcc(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    if not mask.any():
        return mask.copy()
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n == 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))
