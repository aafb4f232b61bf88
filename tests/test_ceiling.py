"""The resolution ceiling: a ground truth's round trip through the training grid, scored against itself."""
from __future__ import annotations

import numpy as np

from benchmark.scoring.metrics import case_metrics
from datamodules.transforms import preprocessing_config
from tools.ceiling import oracle_mask


def _sphere(spacing: float, radius_mm: float = 20.0, size_mm: float = 64.0) -> tuple[np.ndarray, np.ndarray]:
    n = int(size_mm / spacing)
    c = (np.indices((n, n, n)) + 0.5) * spacing - size_mm / 2
    return (np.sqrt((c ** 2).sum(0)) <= radius_mm).astype(np.uint8), np.diag([spacing] * 3 + [1.0])


def test_the_training_grid_itself_costs_nothing():
    mask, affine = _sphere(3.0)
    assert np.array_equal(oracle_mask(mask, affine, preprocessing_config("ct", "cpu")), mask)


def test_a_coarser_grid_costs_a_little_and_a_much_coarser_one_more():
    mask, affine = _sphere(1.0)
    dice = {s: case_metrics(oracle_mask(mask, affine, preprocessing_config("ct", "cpu", [s] * 3)) > 0,
                            mask > 0, (1.0, 1.0, 1.0))["dice"] for s in (3.0, 8.0)}
    assert 0.95 < dice[3.0] < 1.0 and dice[8.0] < dice[3.0]
