"""Does bf16 training change accuracy? Validation Dice at the same final step, a results folder trained
in fp32 against one trained in bf16 with several seeds, per variant and modality.

    .venv/bin/python -m tools.speed.precision_dice --fp32 RESULTS_FP32 --bf16 RESULTS_BF16

"Within noise" means the fp32 value lies inside the bf16 seeds' mean ± 2 std (the seed-to-seed spread),
for the last validation Dice (`budget.val_dice[-1]`, the same step count in both) and the test Dice.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def final_scores(results: Path) -> dict[tuple[str, str], dict[str, list[float]]]:
    """(variant, modality) -> {"val": [...], "test": [...], "steps": [...], "fit_s": [...]}, one per seed."""
    out: dict[tuple[str, str], dict[str, list[float]]] = {}
    for path in sorted(Path(results).glob("*/*/result.json")):
        r = json.loads(path.read_text())
        if r.get("status") != "ok" or not (r.get("budget") or {}).get("val_dice"):
            continue
        row = out.setdefault((r["variant"], r["modality"]), {"val": [], "test": [], "steps": [], "fit_s": []})
        row["val"].append(r["budget"]["val_dice"][-1])
        row["test"].append(r["metrics"]["dice"])
        row["steps"].append(r["budget"]["steps"])
        row["fit_s"].append(r["budget"]["seconds"])
    return out


def compare(fp32: dict, bf16: dict) -> list[dict]:
    rows = []
    for key in sorted(set(fp32) & set(bf16)):
        a, b = fp32[key], bf16[key]
        if len(b["val"]) < 2 or set(a["steps"]) != set(b["steps"]):
            continue  # needs a seed spread, and the same step count
        row = {"variant": key[0], "modality": key[1], "steps": b["steps"][0], "seeds": len(b["val"])}
        for metric in ("val", "test"):
            mean, std = statistics.mean(b[metric]), statistics.stdev(b[metric])
            row[metric] = {"fp32": statistics.mean(a[metric]), "bf16_mean": mean, "bf16_std": std,
                           "within_noise": abs(statistics.mean(a[metric]) - mean) <= 2 * std}
        row["fit_s"] = {"fp32": statistics.mean(a["fit_s"]), "bf16": statistics.mean(b["fit_s"])}
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fp32", required=True, help="results folder of the fp32 runs")
    p.add_argument("--bf16", required=True, help="results folder of the bf16 runs (>= 2 seeds)")
    args = p.parse_args(argv)
    rows = compare(final_scores(Path(args.fp32)), final_scores(Path(args.bf16)))
    if not rows:
        print("no variant has fp32 runs and >= 2 bf16 seeds at the same step count")
        return 1
    print("| variant | modality | steps | val Dice fp32 | val Dice bf16 (mean ± std, n) | test Dice fp32 | "
          "test Dice bf16 | within noise (val, test) | fit s fp32 → bf16 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        v, t = r["val"], r["test"]
        print(f"| {r['variant']} | {r['modality']} | {r['steps']} | {v['fp32']:.3f} | {v['bf16_mean']:.3f} ± "
              f"{v['bf16_std']:.3f} ({r['seeds']}) | {t['fp32']:.3f} | {t['bf16_mean']:.3f} ± {t['bf16_std']:.3f} | "
              f"{'yes' if v['within_noise'] else 'no'}, {'yes' if t['within_noise'] else 'no'} | "
              f"{r['fit_s']['fp32']:.0f} → {r['fit_s']['bf16']:.0f} |")
    held = sum(r["val"]["within_noise"] for r in rows)
    print(f"\nval Dice within noise for {held} of {len(rows)} variant x modality pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
