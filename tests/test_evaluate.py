"""`liverbench evaluate`: matching by name, geometry checks, CSV values against MONAI, real samples."""
from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from benchmark.scoring.evaluate import case_name, evaluate_folders, main

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _save(path, array, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), str(path))


def _monai(pred, gt, spacing):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    p, g = torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None, None]
    hd = compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=spacing)
    asd = compute_average_surface_distance(p, g, include_background=True, symmetric=True, spacing=spacing)
    return float(hd), float(asd)


@pytest.fixture
def folders(tmp_path):
    """gt: labelsTr-style `<case>.nii.gz` with labels 1 (liver) and 2 (lesion); pred: `_0000` names."""
    rng = np.random.default_rng(0)
    gts, preds = {}, {}
    for i in range(3):
        gt = np.zeros((20, 18, 10), np.uint8)
        gt[4:14 + i, 3:12, 2:8] = 1
        gt[6:8, 5:7, 4:6] = 2
        pred = (gt > 0) ^ (rng.random(gt.shape) < 0.03)
        gts[f"case_{i}"], preds[f"case_{i}"] = gt, pred
        _save(tmp_path / "gt" / f"case_{i}.nii.gz", gt)
        _save(tmp_path / "pred" / f"case_{i}_0000.nii.gz", pred)
    return tmp_path, gts, preds


def test_case_names():
    from pathlib import Path

    assert case_name(Path("liver_3_0000.nii.gz")) == "liver_3"
    assert case_name(Path("liver_3.nii")) == "liver_3"
    assert case_name(Path("p01_t1.nii.gz")) == "p01_t1"
    assert case_name(Path("amos_0001.nii.gz")) == "amos_0001"  # a 4-digit id is not a channel tag
    assert case_name(Path("amos_0001_0000.nii.gz")) == "amos_0001"


def test_amos_style_names_match(tmp_path):
    """AMOS case ids end in 4 digits: predictions and labels still pair up one to one."""
    import nibabel as nib

    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        for i in (1, 2):
            mask = np.zeros((6, 6, 4), np.uint8)
            mask[1:4, 1:4, 1:3] = 1
            nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / folder / f"amos_{i:04d}.nii.gz")
    rows, unmatched = evaluate_folders(tmp_path / "pred", tmp_path / "gt")
    assert [r["case"] for r in rows] == ["amos_0001", "amos_0002"] and not any(unmatched.values())
    assert all(r["dice"] == 1.0 for r in rows)


def test_csv_matches_monai_and_hand_counts(folders, capsys):
    root, gts, preds = folders
    out = root / "scores.csv"
    assert main(["--pred", str(root / "pred"), "--gt", str(root / "gt"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["case"] for r in rows] == ["case_0", "case_1", "case_2"]
    assert list(rows[0])[:7] == ["case", "dice", "jaccard", "precision", "recall", "hd95", "assd"]
    for row in rows:
        gt, pred = gts[row["case"]] > 0, preds[row["case"]]
        tp = np.sum(gt & pred)
        assert float(row["dice"]) == pytest.approx(2 * tp / (gt.sum() + pred.sum()), rel=1e-5)
        assert float(row["jaccard"]) == pytest.approx(tp / np.sum(gt | pred), rel=1e-5)
        hd, asd = _monai(pred, gt, (0.8, 0.8, 2.5))
        assert float(row["hd95"]) == pytest.approx(hd, rel=1e-5)
        assert float(row["assd"]) == pytest.approx(asd, rel=1e-5)
    summary = json.loads((root / "scores.json").read_text())
    assert summary["summary"]["cases"] == 3 and summary["summary"]["failed"] == 0
    assert summary["summary"]["dice"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]), rel=1e-5)
    printed = capsys.readouterr().out
    assert "case_1" in printed and "mean (n=3)" in printed


def test_postprocessing_options(folders, capsys):
    """`--largest-component --opening-mm MM` scores what the run recipe scores; an opening alone is refused."""
    root, _, _ = folders
    out = root / "opened.csv"
    assert main(["--pred", str(root / "pred"), "--gt", str(root / "gt"), "--largest-component", "--opening-mm", "2",
                 "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["opening_mm"] == 2.0
    assert main(["--pred", str(root / "pred"), "--gt", str(root / "gt"), "--opening-mm", "2"]) == 2
    assert "--opening-mm: opening_mm chooses the largest component after an opening" in capsys.readouterr().err


def test_liver_labels_select_ground_truth_labels(folders):
    root, gts, _ = folders
    rows, _ = evaluate_folders(root / "pred", root / "gt", liver_labels=[2])
    gt2, pred = gts["case_0"] == 2, rows[0]
    assert pred["tp"] + pred["fn"] == gt2.sum()


def test_unmatched_files_are_listed(folders, capsys):
    root, gts, _ = folders
    _save(root / "pred" / "extra.nii.gz", gts["case_0"])
    (root / "gt" / "case_2.nii.gz").rename(root / "gt" / "other.nii.gz")
    rows, unmatched = evaluate_folders(root / "pred", root / "gt", skip_missing=True)
    assert [r["case"] for r in rows] == ["case_0", "case_1"]
    assert [p.rsplit("/", 1)[-1] for p in unmatched["pred"]] == ["case_2_0000.nii.gz", "extra.nii.gz"]
    assert [p.rsplit("/", 1)[-1] for p in unmatched["gt"]] == ["other.nii.gz"]
    assert main(["--pred", str(root / "pred"), "--gt", str(root / "gt"), "--skip-missing"]) == 0
    captured = capsys.readouterr()
    assert "without a matching ground truth" in captured.out and "skipped (--skip-missing)" in captured.out
    assert "evaluate: 2 scored, 1 missing (skipped), 0 failed" in captured.err


@pytest.mark.parametrize("what", ["shape", "affine"])
def test_geometry_mismatch_is_an_error_naming_both_files(folders, capsys, what):
    root, gts, _ = folders
    bad = root / "pred" / "case_1_0000.nii.gz"
    if what == "shape":
        _save(bad, np.zeros((20, 18, 11)))
    else:
        shifted = AFFINE.copy()
        shifted[0, 3] = 5.0
        _save(bad, gts["case_1"], affine=shifted)
    assert main(["--pred", str(root / "pred"), "--gt", str(root / "gt")]) == 2
    err = capsys.readouterr().err
    assert "case_1_0000.nii.gz" in err and "case_1.nii.gz" in err and what in err


def test_empty_prediction_counted_as_failed(folders):
    root, gts, _ = folders
    _save(root / "pred" / "case_0_0000.nii.gz", np.zeros_like(gts["case_0"]))
    out = root / "s.csv"
    assert main(["--pred", str(root / "pred"), "--gt", str(root / "gt"), "--out", str(out)]) == 0
    row = next(csv.DictReader(out.open()))
    assert float(row["dice"]) == 0 and math.isnan(float(row["hd95"])) and row["failed"] == "1"
    summary = json.loads(out.with_suffix(".json").read_text())["summary"]
    assert summary["failed"] == 1


def test_errors_for_missing_folder_and_no_matches(tmp_path, capsys):
    assert main(["--pred", str(tmp_path / "nope"), "--gt", str(tmp_path)]) == 2
    assert "nope: not a folder" in capsys.readouterr().err
    _save(tmp_path / "p" / "a.nii.gz", np.ones((2, 2, 2)))
    _save(tmp_path / "g" / "b.nii.gz", np.ones((2, 2, 2)))
    assert main(["--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g")]) == 2
    assert "no prediction matches" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["example_seg", "example_seg_mr"])
def test_real_totalsegmentator_masks(real_data, tmp_path, name):
    """Real CT (RAS) and MR (LPS) segmentations; liver = label 5; a one-voxel erosion as 'prediction'."""
    img = nib.load(str(real_data / "totalsegmentator" / f"{name}.nii.gz"))
    gt = np.asanyarray(img.dataobj) == 5
    pred = ndimage.binary_erosion(gt)
    (tmp_path / "gt").mkdir()
    nib.save(img, str(tmp_path / "gt" / f"{name}.nii.gz"))
    _save(tmp_path / "pred" / f"{name}.nii.gz", pred, affine=img.affine)
    rows, _ = evaluate_folders(tmp_path / "pred", tmp_path / "gt", liver_labels=[5])
    hd, asd = _monai(pred, gt, (3.0, 3.0, 3.0))
    assert rows[0]["hd95"] == pytest.approx(hd, rel=1e-5) and rows[0]["assd"] == pytest.approx(asd, rel=1e-5)
    assert rows[0]["precision"] == 1.0 and 0.5 < rows[0]["dice"] < 1.0


def test_ground_truth_without_prediction_is_failed_not_dropped(folders, capsys):
    """1 of 3 predictions present: the mean must not be that one case's Dice."""
    root, gts, _ = folders
    (root / "pred" / "case_1_0000.nii.gz").unlink()
    (root / "pred" / "case_2_0000.nii.gz").unlink()
    rows, _ = evaluate_folders(root / "pred", root / "gt")
    assert [(r["case"], r["missing"], r["failed"]) for r in rows] == [("case_0", 0, 0), ("case_1", 1, 1), ("case_2", 1, 1)]
    assert rows[1]["dice"] == 0.0 and math.isnan(rows[1]["hd95"]) and rows[1]["fn"] == (gts["case_1"] > 0).sum()
    out = root / "r.csv"
    assert main(["--pred", str(root / "pred"), "--gt", str(root / "gt"), "--out", str(out)]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())["summary"]
    assert summary["dice"] == pytest.approx(rows[0]["dice"] / 3) and summary["failed"] == 2
    assert "evaluate: 1 scored, 2 missing (counted as failed), 2 failed" in capsys.readouterr().err


def test_probability_map_refused_unless_threshold(folders, capsys):
    root, gts, _ = folders
    prob = np.where(gts["case_0"] > 0, 0.9, 0.2).astype(np.float32)
    nib.save(nib.Nifti1Image(prob, AFFINE), str(root / "pred" / "case_0_0000.nii.gz"))
    out = root / "r.csv"
    assert main(["--pred", str(root / "pred"), "--gt", str(root / "gt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "case_0_0000.nii.gz: prediction is not a binary 0/1 mask: non-integer" in err and not out.exists()
    assert main(["--pred", str(root / "pred"), "--gt", str(root / "gt"), "--threshold", "0.5", "--out", str(out)]) == 0
    assert next(csv.DictReader(out.open()))["dice"] == "1"
    nib.save(nib.Nifti1Image(gts["case_0"].astype(np.uint8) * 3, AFFINE), str(root / "pred" / "case_0_0000.nii.gz"))
    assert main(["--pred", str(root / "pred"), "--gt", str(root / "gt")]) == 2
    assert "case_0_0000.nii.gz: prediction is not a binary 0/1 mask (values [3, 6])" in capsys.readouterr().err


@pytest.mark.parametrize("bad, message", [(-1, "negative label values [-1]"), (3, "label values [3] are not declared")])
def test_bad_ground_truth_labels_are_errors(tmp_path, capsys, bad, message):
    """A -1 would drop liver voxels and a stray 3 would be counted as liver: both refused."""
    gt = np.zeros((10, 10, 6), np.int16)
    gt[2:8, 2:8, 1:5] = 1
    gt[3, 3, 3] = bad
    (tmp_path / "ds" / "labelsTr").mkdir(parents=True)
    nib.save(nib.Nifti1Image(gt, AFFINE), str(tmp_path / "ds" / "labelsTr" / "c.nii.gz"))
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2}}))
    _save(tmp_path / "pred" / "c.nii.gz", gt > 0)
    out = tmp_path / "r.csv"
    assert main(["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "ds"), "--out", str(out)]) == 2
    assert f"labelsTr/c.nii.gz: {message}" in capsys.readouterr().err and not out.exists()
