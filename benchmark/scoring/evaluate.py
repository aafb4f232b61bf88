"""`liverbench evaluate`: score a folder of NIfTI predictions against ground truth.

Files are matched by case name (`<case>.nii.gz`, `<case>.nii` and `<case>_0000.nii.gz` are the
same case), geometry must agree (shape and affine), and every case is scored in 3D in the
original grid with `benchmark.scoring.metrics.case_metrics`.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmark.scoring.metrics import case_metrics, format_metric, METRIC_KEYS, summarise
from benchmark.scoring.postprocessing import check_postprocessing
from common.files import DataError, atomic_write_json, atomic_write_text
from datamodules.grid import check_same_grid
from datamodules.labels import parse_label_option, parse_labels as label_names
from datamodules.labels import check_labels, liver_mask
from datamodules.readers import case_name, dataset_liver_labels, read_dataset_json
from datamodules.volumes import NAN_POLICIES, Volume, nan_policy_env, read_volume

CSV_COLUMNS = ("case", *METRIC_KEYS, "tp", "fp", "fn", "missing")


def nifti_files(folder: Path) -> dict[str, Path]:
    """Case name -> file for every NIfTI in `folder` (hidden and macOS `._*` files skipped)."""
    if not folder.is_dir():
        raise DataError(folder, "not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", "_")) or not path.name.endswith((".nii.gz", ".nii")):
            continue
        name = case_name(path)
        if name in found:
            raise DataError(path, f"case {name!r} also given by {found[name].name}")
        found[name] = path
    return found


def load_gt(path: Path, liver_labels=None, declared=None) -> tuple[np.ndarray, Volume]:
    """Ground-truth liver mask: a checked label map (integers, >= 0, declared values only)."""
    vol = read_volume(path, nan="error")
    return liver_mask(check_labels(vol.array, path, declared), liver_labels), vol


def prediction_mask(vol: Volume, pred_labels=None, threshold: float | None = None) -> np.ndarray:
    """Predicted liver mask. Without `pred_labels` or `threshold` it must be binary (0/1): a
    probability map would otherwise count every voxel above 0 as liver."""
    data, path = vol.array, vol.source
    if threshold is not None:
        return np.asarray(data) > threshold
    if np.issubdtype(data.dtype, np.floating) and not np.array_equal(np.rint(data), data):
        raise DataError(path, "prediction is not a binary 0/1 mask: non-integer values (a probability map?); "
                              "pass --threshold T")
    labels = check_labels(data, path)
    if pred_labels is None:
        extra = sorted(set(np.unique(labels).tolist()) - {0, 1})
        if extra:
            raise DataError(path, f"prediction is not a binary 0/1 mask (values {extra[:5]}): pass --threshold T "
                                  "for a probability map or --pred-labels for a label map")
    return liver_mask(labels, pred_labels)


def score_case(pred_path: Path, gt_path: Path, liver_labels=None, pred_labels=None, largest_component=False,
               threshold: float | None = None, declared=None, opening_mm: float = 0.0) -> dict:
    """Load one prediction/ground-truth pair, check geometry and score it (distances in mm,
    spacing from the ground truth's affine). `pred_path` None: a missing prediction, failed (Dice 0)."""
    gt, gt_vol = load_gt(gt_path, liver_labels, declared)
    if not gt.any():
        raise DataError(gt_path, f"no liver voxel (labels {sorted(liver_labels) if liver_labels else '> 0'}): "
                                 "nothing to score against")
    if pred_path is None:
        return {**case_metrics(np.zeros_like(gt), gt, gt_vol.spacing), "missing": 1}
    pred_vol = read_volume(pred_path, nan="error")
    check_same_grid(pred_vol, gt_vol, pred_path, f"ground truth {gt_path}")
    pred = prediction_mask(pred_vol, pred_labels, threshold)
    return {**case_metrics(pred, gt, gt_vol.spacing, largest_component, opening_mm), "missing": 0}


def evaluate_folders(pred_dir, gt_dir, liver_labels=None, pred_labels=None, largest_component=False,
                     skip_missing: bool = False, threshold: float | None = None, opening_mm: float = 0.0):
    """Score every ground-truth case. A case without a prediction is failed (Dice 0) unless
    `skip_missing`. Ground-truth liver labels: `liver_labels`, else those dataset.json names (when
    `gt_dir` is a dataset root), else every label > 0.
    Returns (rows, unmatched) with unmatched = {"pred": [...], "gt": [...]}: files without a partner."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    declared = None
    if (gt_dir / "labelsTr").is_dir():  # an nnU-Net raw dataset root
        meta = read_dataset_json(gt_dir)
        if liver_labels is None:
            liver_labels = dataset_liver_labels(gt_dir, meta)
        if "labels" in meta:
            declared = {v for vs in label_names(meta, gt_dir / "dataset.json").values() for v in vs}
        gt_dir = gt_dir / "labelsTr"
    preds, gts = nifti_files(pred_dir), nifti_files(gt_dir)
    if not gts:
        raise DataError(gt_dir, "no ground-truth NIfTI files")
    matched = sorted(set(preds) & set(gts))
    unmatched = {"pred": sorted(str(preds[c]) for c in set(preds) - set(gts)),
                 "gt": sorted(str(gts[c]) for c in set(gts) - set(preds))}
    if not matched:
        raise DataError(pred_dir, f"no prediction matches a ground-truth file in {gt_dir} by case name")
    cases = matched if skip_missing else sorted(gts)
    return [{"case": case, **score_case(preds.get(case), gts[case], liver_labels, pred_labels, largest_component,
                                        threshold, declared, opening_mm)} for case in cases], unmatched


def rows_to_csv(rows: Sequence[dict], columns: Sequence[str] = CSV_COLUMNS) -> str:
    """CSV text; missing distances are written as `nan`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) and not math.isnan(v) else v) for k, v in row.items()})
    return buf.getvalue()


def print_table(rows: Sequence[dict], summary: dict, unmatched: dict, file=None, skip_missing: bool = False) -> None:
    """Per-case table with a mean row (rich), then unmatched files."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, width=120)
    table = Table(title="liverbench evaluate (HD95/ASSD in mm, MONAI surface convention)")
    for col in ("case", *METRIC_KEYS):
        table.add_column(col, justify="left" if col == "case" else "right")
    for row in rows:
        table.add_row(row["case"], *(format_metric(k, row[k]) for k in METRIC_KEYS))
    table.add_section()
    table.add_row(f"mean (n={summary['cases']})", *(format_metric(k, summary[k]) for k in METRIC_KEYS))
    console.print(table)
    if "global_dice" in summary:
        console.print(f"global Dice (2ΣTP/Σ(2TP+FP+FN)): {summary['global_dice']:.4f}")
    fate = {"pred": "not scored", "gt": "skipped (--skip-missing)" if skip_missing else "counted as failed (Dice 0)"}
    for side, other in (("pred", "ground truth"), ("gt", "prediction")):
        if unmatched[side]:
            console.print(f"[yellow]{len(unmatched[side])} {side} file(s) without a matching {other}, {fate[side]}:[/]")
            for path in unmatched[side]:
                console.print(f"  {path}")


def _nan_to_none(d: dict) -> dict:
    """Strict JSON has no NaN: missing values become null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="liverbench evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--pred", required=True, type=Path, help="folder of predicted masks (NIfTI)")
    parser.add_argument("--gt", required=True, type=Path, help="folder of ground-truth labels (or a dataset root with labelsTr/)")
    parser.add_argument("--liver-labels", default=None, help="ground-truth labels that are liver, e.g. 1,2 (default: "
                        "those dataset.json names liver/lesion/tumour, else every label > 0)")
    parser.add_argument("--pred-labels", default=None, help="prediction labels that are liver (default: the "
                        "prediction must be a binary 0/1 mask)")
    parser.add_argument("--threshold", type=float, default=None, help="probability maps: liver = value > T")
    parser.add_argument("--skip-missing", action="store_true", help="skip ground-truth cases without a prediction "
                        "(default: they count as failed, Dice 0)")
    parser.add_argument("--largest-component", action="store_true", help="keep only the largest connected component of each prediction")
    parser.add_argument("--opening-mm", type=float, default=0.0, help="with --largest-component: choose it after an "
                        "opening by a ball of this radius (mm), cutting off what hangs on by a thinner bridge")
    parser.add_argument("--nan-policy", choices=NAN_POLICIES, default=None, help="NaN/Inf voxels in a file: error (default) or fill")
    parser.add_argument("--out", type=Path, default=None, help="per-case CSV to write (a summary JSON is written beside it)")
    args = parser.parse_args(argv)
    with nan_policy_env(args.nan_policy):
        return _evaluate(args)


def _evaluate(args) -> int:
    try:
        if args.out is not None and args.out.suffix.lower() != ".csv":  # never a file the inputs would hold
            raise DataError(args.out, "the per-case output must be a .csv file (a summary .json is written beside it)")
        try:
            check_postprocessing(args.largest_component, args.opening_mm)
        except ValueError as exc:
            raise DataError("--opening-mm", str(exc)) from None
        rows, unmatched = evaluate_folders(args.pred, args.gt, parse_label_option(args.liver_labels),
                                           parse_label_option(args.pred_labels, "--pred-labels"), args.largest_component,
                                           args.skip_missing, args.threshold, args.opening_mm)
        summary = summarise(rows)
        print_table(rows, summary, unmatched, skip_missing=args.skip_missing)
        if args.out is not None:
            atomic_write_text(args.out, rows_to_csv(rows))
            atomic_write_json(args.out.with_suffix(".json"), {
                "pred": str(args.pred), "gt": str(args.gt), "liver_labels": args.liver_labels,
                "pred_labels": args.pred_labels, "threshold": args.threshold, "skip_missing": args.skip_missing,
                "largest_component": args.largest_component, "opening_mm": args.opening_mm,
                "summary": _nan_to_none(summary), "unmatched": unmatched,
            })
            print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    except DataError as exc:
        print(f"error: {exc.path}: {exc.problem}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    missing = sum(int(r.get("missing", 0)) for r in rows)
    skipped = len(unmatched["gt"]) if args.skip_missing else 0
    failed = sum(int(r.get("failed", 0)) for r in rows)
    print(f"evaluate: {len(rows) - missing} scored, {missing + skipped} missing"
          f"{' (skipped)' if skipped else ' (counted as failed)' if missing else ''}, {failed} failed",
          file=sys.stderr)
    return 0
