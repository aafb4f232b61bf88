"""`liverbench external-eval`: score one checkpoint on an external real set, per case and mean.

The quick check during experiments: loads the model once, predicts every case of DIR in its
original geometry and scores it exactly as `liverbench run --external` does (same set checks,
liver label by name from dataset.json, same metrics).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmark.scoring.metrics import format_metric, METRIC_KEYS
from common.files import DataError

COLUMN_WIDTH = 9  # a metric column of the printed table


def parse_args(argv):
    p = argparse.ArgumentParser(prog="liverbench external-eval", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="model.ckpt of a run (or any LiverBench checkpoint)")
    p.add_argument("--external", required=True,
                   help="dataset folder in nnU-Net raw layout; DIR:N (or DIR:N+M) sets the liver label(s)")
    p.add_argument("--out", help="write the per-case metrics to this CSV")
    p.add_argument("--overlays", metavar="DIR", help="write one PNG per case to DIR: the axial slice with the most "
                   "liver, the scored prediction filled red, the label outlined green (where the model goes wrong)")
    p.add_argument("--largest-component", action="store_true", help="keep only the largest component first")
    p.add_argument("--opening-mm", type=float, default=0.0, help="with --largest-component: choose it after an "
                   "opening by a ball of this radius (a run's own: result.json `postprocessing`)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"),
                   help="network precision (a run's own: result.json `evaluation.precision`; default fp32)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="network memory layout (a run's own: result.json `evaluation.channels_last`; default: "
                        "channels-last with bf16, and with auto on a CPU)")
    return p.parse_args(argv)


def table_line(first: str, values: dict) -> str:
    """One line of the printed table: every metric of the schema (`benchmark.scoring.metrics.METRICS`) in its
    own format, so a new metric is a new column without touching this command."""
    return f"{first:<24}" + "".join(f" {format_metric(k, values.get(k)):>{COLUMN_WIDTH}}" for k in METRIC_KEYS)


def table_header() -> str:
    return f"{'case':<24}" + "".join(f" {k:>{COLUMN_WIDTH}}" for k in METRIC_KEYS)


def main(argv: list[str] | None = None) -> int:
    from benchmark.scoring.external import load_external_set, parse_external, score, summary_block
    from benchmark.scoring.postprocessing import check_postprocessing

    args = parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    try:
        check_postprocessing(args.largest_component, args.opening_mm)
        sets = parse_external(args.external)
        if len(sets) != 1:
            raise ValueError("external-eval scores one set: --external DIR[:N] or ct=DIR / mri=DIR")
        ((modality, (directory, labels)),) = sets.items()
        ext = load_external_set(directory, modality, labels)
        if not Path(args.checkpoint).is_file():
            raise DataError(args.checkpoint, "checkpoint not found")
        from benchmark.inference.predictor import Predictor

        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, modality=ext.modality,
                                              precision=args.precision, channels_last=args.channels_last)
        trained = predictor.config.get("modality")
        if trained and trained != ext.modality:
            print(f"warning: the checkpoint was trained on {trained.upper()}, the set is {ext.modality.upper()}",
                  file=sys.stderr)
        rows, overlays = score(predictor.module, predictor.config, ext, args.largest_component, args.opening_mm,
                               predictor.precision, predictor.channels_last, overlays=bool(args.overlays))
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{ext.name} ({ext.modality.upper()}, liver labels {ext.liver_labels}, {ext.n} cases): {ext.path}")
    print(table_header())
    for row in rows:
        print(table_line(row["case"], row))
    print(table_line("mean", summary_block(ext, rows)["metrics"]) +
          f"   (min dice {min(r['dice'] for r in rows):.4f}, {time.perf_counter() - start:.1f} s)")
    if args.out:
        from benchmark.run.records import write_per_case

        try:
            write_per_case(Path(args.out).parent, rows, Path(args.out).name)
        except OSError as exc:  # read-only or full output folder
            print(f"error: {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}")
    if args.overlays:
        from common.files import atomic_write_bytes

        try:
            for overlay in overlays:
                atomic_write_bytes(Path(args.overlays) / overlay.filename, overlay.png())
        except OSError as exc:
            print(f"error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"wrote {len(overlays)} overlays to {args.overlays}")
    return 0
