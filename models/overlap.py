"""Dice, Jaccard, precision and recall from voxel counts: one definition for training and scoring.

Training passes float64 tensors of counts (`models.base.overlap_scores`, the `*_grid` metrics),
the benchmark's scoring Python ints (`benchmark.scoring.metrics.METRICS`). The formulas are plain
arithmetic so the same lines serve both, and no import: scoring stays free of torch.
"""
from __future__ import annotations


def _ratio(num, den, tp, fp, fn):
    """num / den; where den is 0 (num is 0 then too): 1 when both masks are empty, else 0. Written
    without a branch so that it runs elementwise on tensors; den > 0 gives num / den exactly."""
    zero = den == 0
    return num / (den + zero) + (((tp + fp + fn) == 0) & zero)


def dice(tp, fp, fn):
    return _ratio(2 * tp, 2 * tp + fp + fn, tp, fp, fn)


def jaccard(tp, fp, fn):
    return _ratio(tp, tp + fp + fn, tp, fp, fn)


def precision(tp, fp, fn):
    return _ratio(tp, tp + fp, tp, fp, fn)


def recall(tp, fp, fn):
    return _ratio(tp, tp + fn, tp, fp, fn)


OVERLAP_METRICS = {"dice": dice, "jaccard": jaccard, "precision": precision, "recall": recall}
