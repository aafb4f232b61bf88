"""case_metrics / summarise against hand-computed values, an independent scipy implementation and MONAI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from benchmark.scoring.metrics import case_metrics, summarise
from benchmark.scoring.postprocessing import check_postprocessing, largest_connected_component, opened_largest_component


def _scipy_surface(pred, gt, spacing):
    """Independent reference: edges = mask XOR 6-connected erosion (border 0), EDT with sampling."""
    six = ndimage.generate_binary_structure(3, 1)
    e_pred = pred ^ ndimage.binary_erosion(pred, structure=six, border_value=0)
    e_gt = gt ^ ndimage.binary_erosion(gt, structure=six, border_value=0)
    d_pred = ndimage.distance_transform_edt(~e_gt, sampling=spacing)[e_pred]
    d_gt = ndimage.distance_transform_edt(~e_pred, sampling=spacing)[e_gt]
    hd95 = max(np.percentile(d_pred, 95), np.percentile(d_gt, 95))
    return hd95, np.concatenate([d_pred, d_gt]).mean()


def _ellipsoid(shape, centre, radii):
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1


def test_hand_computed_two_voxel_case():
    gt = np.zeros((5, 5, 6), bool)
    gt[2, 2, 2:4] = True
    pred = np.zeros_like(gt)
    pred[2, 2, 2] = True
    m = case_metrics(pred, gt, spacing=(1, 1, 1))
    assert m["dice"] == pytest.approx(2 / 3)
    assert m["jaccard"] == pytest.approx(1 / 2)
    assert m["precision"] == 1.0 and m["recall"] == 0.5
    # pred->gt distances [0]; gt->pred [0, 1]: HD95 = 95th percentile of [0, 1]; ASSD = 1/3
    assert m["hd95"] == pytest.approx(0.95)
    assert m["assd"] == pytest.approx(1 / 3)
    assert (m["tp"], m["fp"], m["fn"], m["failed"]) == (1, 0, 1, 0)


def test_distances_use_spacing_per_axis():
    gt = np.zeros((5, 5, 8), bool)
    gt[2, 2, 2] = True
    pred = np.zeros_like(gt)
    pred[2, 2, 5] = True  # 3 voxels along Z at 2 mm = 6 mm
    m = case_metrics(pred, gt, spacing=(0.5, 0.7, 2.0))
    assert m["hd95"] == pytest.approx(6.0) and m["assd"] == pytest.approx(6.0)
    assert m["dice"] == 0.0 and m["failed"] == 0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 2.5), (3.0, 1.5, 5.0)])
def test_matches_scipy_reference_and_monai(spacing):
    shape = (40, 36, 24)
    gt = _ellipsoid(shape, (18, 17, 11), (12, 10, 7))
    pred = _ellipsoid(shape, (20, 16, 12), (11, 11, 6)) | _ellipsoid(shape, (5, 5, 20), (2, 2, 2))
    m = case_metrics(pred, gt, spacing=spacing)

    hd95, assd = _scipy_surface(pred, gt, spacing)
    assert m["hd95"] == pytest.approx(hd95, rel=1e-5)
    assert m["assd"] == pytest.approx(assd, rel=1e-5)

    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    p, g = torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None, None]
    monai_hd = compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=spacing)
    monai_asd = compute_average_surface_distance(p, g, include_background=True, symmetric=True, spacing=spacing)
    assert m["hd95"] == pytest.approx(float(monai_hd), rel=1e-5)
    assert m["assd"] == pytest.approx(float(monai_asd), rel=1e-5)

    tp = np.sum(pred & gt)
    assert m["dice"] == pytest.approx(2 * tp / (pred.sum() + gt.sum()))
    assert m["precision"] == pytest.approx(tp / pred.sum())
    assert m["recall"] == pytest.approx(tp / gt.sum())


def test_mask_touching_volume_border_counts_border_as_surface():
    gt = np.zeros((6, 6, 6), bool)
    gt[:, :, :3] = True  # touches five faces of the volume
    pred = gt.copy()
    pred[:, :, 3] = True
    m = case_metrics(pred, gt, spacing=(1, 1, 2))
    hd95, assd = _scipy_surface(pred, gt, (1, 1, 2))
    assert m["hd95"] == pytest.approx(hd95) and m["assd"] == pytest.approx(assd)


def test_empty_prediction_is_failed_with_missing_distances():
    gt = np.zeros((6, 6, 6), bool)
    gt[2:4, 2:4, 2:4] = True
    m = case_metrics(np.zeros_like(gt), gt, spacing=(1, 1, 1))
    assert m["dice"] == 0 and m["jaccard"] == 0 and m["precision"] == 0 and m["recall"] == 0
    assert math.isnan(m["hd95"]) and math.isnan(m["assd"]) and m["failed"] == 1


def test_empty_ground_truth_and_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="ground truth mask is empty"):
        case_metrics(np.ones((3, 3, 3)), np.zeros((3, 3, 3)), (1, 1, 1))
    with pytest.raises(ValueError, match="shape"):
        case_metrics(np.ones((3, 3, 3)), np.ones((3, 3, 4)), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(np.ones((3, 3, 3)), np.ones((3, 3, 3)), (1, 1))


def test_label_arrays_are_binarised():
    gt = np.zeros((6, 6, 6), np.uint8)
    gt[1:4, 1:4, 1:4] = 2
    m = case_metrics(gt.astype(np.int16), gt, (1, 1, 1))
    assert m["dice"] == 1.0 and m["hd95"] == 0.0 and m["assd"] == 0.0


def test_largest_component_removes_islands():
    gt = _ellipsoid((30, 30, 20), (15, 15, 10), (8, 8, 6))
    pred = gt.copy()
    pred[0:2, 0:2, 0:2] = True  # far-away false positive
    island = case_metrics(pred, gt, (1, 1, 1))
    cleaned = case_metrics(pred, gt, (1, 1, 1), largest_component=True)
    assert island["fp"] == 8 and island["assd"] > 0
    assert cleaned["dice"] == 1.0 and cleaned["assd"] == 0.0 and cleaned["fp"] == 0
    # diagonal neighbours are one component (full connectivity, as MONAI's default)
    diag = np.zeros((4, 4, 4), bool)
    diag[0, 0, 0] = diag[1, 1, 1] = True
    assert largest_connected_component(diag).sum() == 2


def test_opened_largest_component_cuts_what_hangs_on_by_a_thin_bridge():
    """A liver-sized box with a bowel-loop-sized box joined by a bridge 3 x 2 voxels thick: one component for
    the plain largest component; the opening by 3 mm cuts the bridge (but its first layer) and the loop and
    keeps the box but its rounded edges. The scan's edge does not thin: the box's face on it is kept."""
    liver = np.zeros((60, 40, 30), bool)
    liver[0:30, 5:35, 5:25] = True  # cut by the field of view at x = 0
    mask = liver.copy()
    mask[30:42, 18:21, 14:16] = True  # the bridge
    mask[42:56, 12:28, 8:22] = True  # the loop: 14 x 16 x 14 voxels
    assert largest_connected_component(mask).sum() == mask.sum()
    out = opened_largest_component(mask, (1.0, 1.0, 1.0), 3.0)
    assert not out[31:].any() and (out & ~liver).sum() == 6  # bridge and loop cut, a 1-voxel stub left
    assert out.sum() > 0.9 * liver.sum() and not out[0, 5, 5] and out[0, 9:31, 9:21].all()  # cut face kept
    assert out[29, 9:31, 9:21].all()  # the face the bridge left from
    np.testing.assert_array_equal(opened_largest_component(mask, (1.0, 1.0, 1.0), 0.0), mask)  # 0: plain
    # in mm: the same bridge is 6 x 4 mm at 2 mm voxels, thicker than a 1.5 mm ball's 3 mm
    assert opened_largest_component(mask, (2.0, 2.0, 2.0), 1.5).sum() == mask.sum()
    plain = case_metrics(mask, liver, (1, 1, 1), largest_component=True)
    opened = case_metrics(mask, liver, (1, 1, 1), largest_component=True, opening_mm=3.0)
    assert opened["precision"] > 0.999 > 0.9 > plain["precision"] and opened["dice"] > plain["dice"]
    for bad in (-1.0, "3", True):
        with pytest.raises(ValueError, match="opening_mm must be a number"):
            check_postprocessing(True, bad)
    with pytest.raises(ValueError, match="needs largest_component"):
        case_metrics(mask, liver, (1, 1, 1), opening_mm=3.0)


def test_summarise_means_failed_and_global_dice():
    gt = np.zeros((8, 8, 8), bool)
    gt[2:6, 2:6, 2:6] = True
    half = gt.copy()
    half[2:4] = False
    rows = [case_metrics(gt, gt, (1, 1, 1)), case_metrics(half, gt, (1, 1, 1)), case_metrics(np.zeros_like(gt), gt, (1, 1, 1))]
    s = summarise(rows)
    assert s["cases"] == 3 and s["failed"] == 1
    assert s["dice"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert s["hd95"] == pytest.approx((rows[0]["hd95"] + rows[1]["hd95"]) / 2)  # NaN of the failed case skipped
    tp, fp, fn = 64 + 32 + 0, 0, 0 + 32 + 64
    assert s["global_dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert "MONAI" in s["convention"]
    with pytest.raises(ValueError):
        summarise([])


def test_every_output_derives_from_the_metric_schema():
    """One table: per-case CSV columns, evaluate's CSV, external-eval's table, tracker summary keys (test and
    external) and aggregations follow METRICS."""
    from benchmark.run import records
    from benchmark.scoring import evaluate, external_eval
    from benchmark.scoring.metrics import METRICS, summarise
    from benchmark.tracking import content

    names = [m.name for m in METRICS]
    assert list(records.METRICS) == names and list(evaluate.CSV_COLUMNS[1:1 + len(names)]) == names
    assert {m.wandb_key: ("metrics", m.name) for m in METRICS}.items() <= content.SUMMARY_KEYS.items()
    assert content.EXTERNAL_KEYS == (*(m.name for m in METRICS if m.aggregation != "sum"), "global_dice")
    assert external_eval.table_header().split() == ["case", *names]
    rows = [{"dice": 0.5, "jaccard": 0.3, "precision": 0.4, "recall": 0.6, "hd95": np.nan, "assd": 2.0, "failed": 1},
            {"dice": 1.0, "jaccard": 0.9, "precision": 1.0, "recall": 1.0, "hd95": 4.0, "assd": 4.0, "failed": 0}]
    out = summarise(rows)
    assert out["dice"] == 0.75 and out["hd95"] == 4.0 and out["assd"] == 3.0 and out["failed"] == 1
