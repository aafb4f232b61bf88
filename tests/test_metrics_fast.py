"""The fast surface distances (`benchmark.scoring.metrics`) against the previous MONAI-based implementation
(`tools.speed.reference`): the same metric values to 1e-6 on random, phantom, empty,
border-touching and far-apart masks with anisotropic spacing."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from benchmark.scoring import metrics as M
from tools.speed.reference import monai_case_metrics, monai_surface_distances


def _assert_same(pred, gt, spacing, largest_component=False):
    new = M.case_metrics(pred, gt, spacing, largest_component=largest_component)
    old = monai_case_metrics(pred, gt, spacing, largest_component=largest_component)
    assert new.keys() == old.keys()
    for key, value in old.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(new[key]), key
        else:
            assert new[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    return new


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 2.5), (3.0, 0.7, 5.0)])
def test_random_masks_match_monai(seed, spacing):
    rng = np.random.default_rng(seed)
    gt = ndimage.binary_opening(rng.random((30, 26, 18)) < 0.55, iterations=1)
    pred = ndimage.binary_opening(rng.random((30, 26, 18)) < 0.5)
    _assert_same(pred, gt, spacing)
    _assert_same(pred, gt, spacing, largest_component=True)


def test_phantom_liver_masks_match_monai():
    from datamodules.phantom.writer import generate_case

    gt = generate_case(3, "ct", spacing=[2.0, 2.0, 4.0]).label > 0
    shifted = ndimage.binary_dilation(np.roll(gt, 2, axis=0), iterations=1)
    shifted[:4, :4, :3] = True  # a far-away false positive touching the volume's corner
    for pred in (gt, shifted, ndimage.binary_erosion(gt, iterations=2)):
        _assert_same(pred, gt, (2.0, 2.0, 4.0))
    _assert_same(shifted, gt, (2.0, 2.0, 4.0), largest_component=True)


def test_empty_prediction_and_single_voxels():
    gt = np.zeros((12, 10, 8), bool)
    gt[3:7, 2:6, 1:4] = True
    m = _assert_same(np.zeros_like(gt), gt, (0.8, 0.8, 2.5))
    assert m["failed"] == 1 and math.isnan(m["hd95"])
    one = np.zeros_like(gt)
    one[11, 9, 7] = True  # a single voxel in the far corner, touching three faces
    _assert_same(one, gt, (0.8, 0.8, 2.5))
    _assert_same(gt, one, (0.8, 0.8, 2.5))


def test_far_apart_surfaces_use_the_kd_tree_fallback_exactly():
    """Points with no surface in the searched band (and a tiny band) still get exact distances."""
    rng = np.random.default_rng(5)
    points = rng.random((40, 30, 20)) < 0.01
    target = np.zeros_like(points)
    target[30:, 25:, 15:] = rng.random((10, 5, 5)) < 0.3
    spacing = np.array([0.9, 1.3, 2.0])
    for max_offsets in (7, 400):
        got = M._nearest_surface_mm(points, target, spacing, max_offsets=max_offsets)
        brute = np.sqrt((((np.argwhere(points)[:, None] - np.argwhere(target)[None]) * spacing) ** 2).sum(-1)).min(1)
        np.testing.assert_allclose(got, brute, rtol=1e-12)


def test_two_dimensional_masks_and_distances_match_monai():
    rng = np.random.default_rng(7)
    gt = ndimage.binary_opening(rng.random((40, 33)) < 0.6)
    pred = ndimage.binary_opening(rng.random((40, 33)) < 0.6)
    for new, old in zip(M.surface_distances(pred, gt, (0.7, 1.9)), monai_surface_distances(pred, gt, (0.7, 1.9))):
        np.testing.assert_allclose(np.sort(new), np.sort(old), rtol=1e-7)


def test_bounding_box_and_edges():
    mask = np.zeros((5, 6, 7), bool)
    assert M._bounding_box(mask) is None
    mask[1, 2:4, 6] = True
    assert M._bounding_box(mask) == (slice(1, 2), slice(2, 4), slice(6, 7))
    block = np.ones((4, 4, 4), bool)
    assert np.array_equal(M._edges(block), block ^ ndimage.binary_erosion(block))
    assert M._edges(block).sum() == 64 - 8  # only the 2x2x2 core is interior


def test_fortran_ordered_arrays_as_read_from_nifti_score_the_same():
    rng = np.random.default_rng(11)
    gt = ndimage.binary_opening(rng.random((20, 16, 12)) < 0.6)
    pred = ndimage.binary_opening(rng.random((20, 16, 12)) < 0.6)
    spacing = (0.8, 1.1, 2.5)
    reference = monai_case_metrics(pred, gt, spacing)
    for p, g in ((np.asfortranarray(pred), np.asfortranarray(gt)), (pred, np.asfortranarray(gt)),
                 (np.asfortranarray(pred), gt)):
        got = M.case_metrics(p, g, spacing)
        assert all(got[k] == pytest.approx(v, rel=1e-6, abs=1e-6) for k, v in reference.items())
