"""`liverbench evaluate`: score a folder of NIfTI predictions against ground truth.

Files are matched by case name (`<case>.nii.gz`, `<case>.nii` and `<case>_0000.nii.gz` are the
same case), geometry must agree (shape and affine), and every case is scored in 3D in the
original grid with `benchmark.metrics.case_metrics`.
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

from benchmark.metrics import METRIC_KEYS, case_metrics, summarise
from datamodules.files import DataError, atomic_write_json, atomic_write_text
from datamodules.readers import case_name
from datamodules.volumes import Volume, check_same_grid, liver_mask, read_volume

CSV_COLUMNS = ("case", *METRIC_KEYS, "tp", "fp", "fn")


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


def parse_labels(text: str | None) -> list[int] | None:
    """`"1,2"` -> [1, 2]; None/empty -> None (every label > 0)."""
    if not text:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SystemExit(f"error: labels must be comma-separated integers, got {text!r}") from None


def _load_mask(path: Path, labels: list[int] | None) -> tuple[np.ndarray, Volume]:
    vol = read_volume(path)
    return liver_mask(vol.array, labels), vol


def score_case(pred_path: Path, gt_path: Path, liver_labels=None, pred_labels=None, largest_component=False) -> dict:
    """Load one prediction/ground-truth pair, check geometry and score it (distances in mm,
    spacing from the ground truth's affine)."""
    gt, gt_vol = _load_mask(gt_path, liver_labels)
    pred, pred_vol = _load_mask(pred_path, pred_labels)
    check_same_grid(pred_vol, gt_vol, pred_path, f"ground truth {gt_path}")
    if not gt.any():
        raise DataError(gt_path, f"no liver voxel (labels {liver_labels or '> 0'}): nothing to score against")
    return case_metrics(pred, gt, gt_vol.spacing, largest_component=largest_component)


def evaluate_folders(pred_dir, gt_dir, liver_labels=None, pred_labels=None, largest_component=False):
    """Score every matched case. Returns (rows, unmatched) with unmatched = {"pred": [...], "gt": [...]}."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if (gt_dir / "labelsTr").is_dir():  # an nnU-Net raw dataset root
        gt_dir = gt_dir / "labelsTr"
    preds, gts = nifti_files(pred_dir), nifti_files(gt_dir)
    matched = sorted(set(preds) & set(gts))
    unmatched = {"pred": sorted(str(preds[c]) for c in set(preds) - set(gts)),
                 "gt": sorted(str(gts[c]) for c in set(gts) - set(preds))}
    if not matched:
        raise DataError(pred_dir, f"no prediction matches a ground-truth file in {gt_dir} by case name")
    rows = []
    for case in matched:
        row = {"case": case, **score_case(preds[case], gts[case], liver_labels, pred_labels, largest_component)}
        rows.append(row)
    return rows, unmatched


def rows_to_csv(rows: Sequence[dict], columns: Sequence[str] = CSV_COLUMNS) -> str:
    """CSV text; missing distances are written as `nan`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) and not math.isnan(v) else v) for k, v in row.items()})
    return buf.getvalue()


def _fmt(value, digits=4) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def print_table(rows: Sequence[dict], summary: dict, unmatched: dict, file=None) -> None:
    """Per-case table with a mean row (rich), then unmatched files."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, width=120)
    table = Table(title="liverbench evaluate (HD95/ASSD in mm, MONAI surface convention)")
    for col in ("case", "dice", "jaccard", "precision", "recall", "hd95", "assd", "failed"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for row in rows:
        table.add_row(row["case"], *(_fmt(row[k], 2 if k in ("hd95", "assd") else 4) for k in METRIC_KEYS))
    table.add_section()
    table.add_row(f"mean (n={summary['cases']})",
                  *(_fmt(summary[k], 2 if k in ("hd95", "assd") else 4) for k in METRIC_KEYS))
    console.print(table)
    if "global_dice" in summary:
        console.print(f"global Dice (2ΣTP/Σ(2TP+FP+FN)): {summary['global_dice']:.4f}")
    for side, other in (("pred", "ground truth"), ("gt", "prediction")):
        if unmatched[side]:
            console.print(f"[yellow]{len(unmatched[side])} {side} file(s) without a matching {other}, not scored:[/]")
            for path in unmatched[side]:
                console.print(f"  {path}")


def _nan_to_none(d: dict) -> dict:
    """Strict JSON has no NaN: missing values become null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="liverbench evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--pred", required=True, type=Path, help="folder of predicted masks (NIfTI)")
    parser.add_argument("--gt", required=True, type=Path, help="folder of ground-truth labels (or a dataset root with labelsTr/)")
    parser.add_argument("--liver-labels", default=None, help="ground-truth labels that are liver, e.g. 1,2 (default: every label > 0)")
    parser.add_argument("--pred-labels", default=None, help="prediction labels that are liver (default: every label > 0)")
    parser.add_argument("--largest-component", action="store_true", help="keep only the largest connected component of each prediction")
    parser.add_argument("--out", type=Path, default=None, help="per-case CSV to write (a summary JSON is written beside it)")
    args = parser.parse_args(argv)
    try:
        rows, unmatched = evaluate_folders(args.pred, args.gt, parse_labels(args.liver_labels),
                                           parse_labels(args.pred_labels), args.largest_component)
    except DataError as exc:
        print(f"error: {exc.path}: {exc.problem}", file=sys.stderr)
        return 2
    summary = summarise(rows)
    print_table(rows, summary, unmatched)
    if args.out is not None:
        atomic_write_text(args.out, rows_to_csv(rows))
        atomic_write_json(args.out.with_suffix(".json"), {
            "pred": str(args.pred), "gt": str(args.gt), "liver_labels": args.liver_labels,
            "pred_labels": args.pred_labels, "largest_component": args.largest_component,
            "summary": _nan_to_none(summary), "unmatched": unmatched,
        })
        print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0
