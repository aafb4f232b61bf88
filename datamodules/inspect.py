"""`liverbench data inspect DIR [--json]`: what is in a dataset folder, per case and in total.

Per case: shape, spacing (mm), orientation code (e.g. RAS, LPS), label values and liver volume
in ml (liver voxel count x voxel volume). Every case is fully validated by `load_case`, so this
is also the quickest way to find the one broken file in a download.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.files import DataError
from datamodules.labels import parse_label_option
from datamodules.readers import dataset_modality, load_case, read_dataset, read_dataset_json


def inspect_case(record, liver_labels: Sequence[int] | None = None) -> dict[str, Any]:
    from datamodules.grid import orientation

    case = load_case(record, liver_labels, require_liver=False)
    voxel_ml = float(np.prod(case.spacing)) / 1000.0
    liver_voxels = int(case.mask.sum())
    return {"case": record.case, "patient": record.patient, "shape": list(case.image.shape),
            "spacing": [round(s, 4) for s in case.spacing],
            "orientation": orientation(case.affine), "labels": case.label_values,
            "liver_voxels": liver_voxels, "liver_ml": round(liver_voxels * voxel_ml, 3),
            "image": str(record.image_path), "label": str(record.label_path)}


def inspect_dataset(root: str | Path, liver_labels: Sequence[int] | None = None) -> dict[str, Any]:
    """All cases of `root` plus totals; `DataError` if no case contains any liver voxel."""
    records = read_dataset(root, liver_labels)
    problems = dataset_problems(root, len(records))
    cases = [inspect_case(r, liver_labels) for r in records]
    liver = [c["liver_ml"] for c in cases]
    if not any(c["liver_voxels"] for c in cases):
        used = liver_labels if liver_labels is not None else records[0].liver_labels
        which = "labels > 0" if used is None else f"labels {sorted(used)}"
        raise DataError(root, f"no liver voxels ({which}) in any of {len(cases)} case(s)")
    totals = {"cases": len(cases), "patients": len({c["patient"] for c in cases}),
              "liver_ml_total": round(float(np.sum(liver)), 3), "liver_ml_mean": round(float(np.mean(liver)), 3),
              "cases_without_liver": [c["case"] for c in cases if not c["liver_voxels"]],
              "orientations": sorted({c["orientation"] for c in cases}),
              "spacing_median": [round(float(s), 4) for s in np.median([c["spacing"] for c in cases], axis=0)]}
    return {"root": str(root), "modality": dataset_modality(root), "cases": cases, "totals": totals,
            "problems": problems}


def dataset_problems(root: str | Path, found: int) -> list[str]:
    """What makes a folder not a finished dataset, each an error: no dataset.json (the writers put it
    last: an interrupted write or copy, or a folder made by hand), or a case count that differs from
    its `numTraining` (an incomplete conversion or copy)."""
    meta_path = Path(root) / "dataset.json"
    if not meta_path.is_file():
        raise DataError(meta_path, "missing: not a complete dataset (an interrupted write or copy leaves none; "
                                   "for a folder made by hand write one: channel_names, labels, numTraining)")
    declared = read_dataset_json(root).get("numTraining")
    if declared is not None and declared != found:
        raise DataError(meta_path, f"numTraining is {declared} but {found} labelled case(s) were found: "
                                   "incomplete conversion or copy")
    return []


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{report['root']} (modality: {report['modality'] or 'unknown'})",
             f"{'case':<24} {'shape':<16} {'spacing mm':<20} {'orient':<6} {'labels':<12} {'liver ml':>9}"]
    for c in report["cases"]:
        lines.append(f"{c['case']:<24} {'x'.join(map(str, c['shape'])):<16} "
                     f"{'x'.join(f'{s:g}' for s in c['spacing']):<20} {c['orientation']:<6} "
                     f"{','.join(map(str, c['labels'])):<12} {c['liver_ml']:>9.1f}")
    t = report["totals"]
    lines.append(f"total: {t['cases']} cases, {t['patients']} patients, liver {t['liver_ml_total']:.1f} ml "
                 f"(mean {t['liver_ml_mean']:.1f} ml), median spacing {t['spacing_median']}, "
                 f"orientations {', '.join(t['orientations'])}")
    if t["cases_without_liver"]:
        lines.append(f"warning: no liver in {', '.join(t['cases_without_liver'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="liverbench data inspect", description=__doc__.splitlines()[0])
    p.add_argument("dir", help="dataset folder (imagesTr/, labelsTr/, dataset.json)")
    p.add_argument("--json", action="store_true", help="print one JSON object with a `cases` list")
    p.add_argument("--liver-labels", default=None,
                   help="comma-separated label values that count as liver (default: named in dataset.json, else every label > 0)")
    args = p.parse_args(argv)
    try:
        report = inspect_dataset(args.dir, parse_label_option(args.liver_labels))
    except DataError as exc:
        print(f"error: {exc.path}: {exc.problem}", file=sys.stderr)
        return 2
    for problem in report["problems"]:
        print(f"warning: {problem}", file=sys.stderr)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
