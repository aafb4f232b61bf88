"""`liverbench report`: every result record under a results folder -> `leaderboard.md` + Pareto PNG.

Runs are grouped by (variant, modality): mean ± std over seeds of each run's metrics, a 95%
bootstrap CI over patients of the per-case Dice (averaged over seeds per case), and a paired
Wilcoxon test of each variant against the U-Net baseline on the cases both were tested on.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.stats import bootstrap_ci, mean_std, paired_wilcoxon, pareto_front
from datamodules.files import DataError, atomic_path, atomic_write_text

BASELINE = "unet_baseline"
OVERLAP = ("dice", "jaccard", "precision", "recall")
MODALITY_NAMES = {"ct": "CT", "mri": "MRI", "mr": "MRI"}
# DESIGN.md: the seed paper's own numbers; ranges only, hardware and "image" undefined.
PAPER = {"ct_dice": "0.89–0.94", "mri_dice": "0.87–0.92", "time": "2.4–3.0"}


@dataclass
class Run:
    path: Path
    record: dict
    cases: dict = field(default_factory=dict)  # case -> {"dice": float, ..., "patient": str}
    external_cases: dict = field(default_factory=dict)  # the same for the external set

    def get(self, *keys, default=None):
        value = self.record
        for key in keys:
            if not isinstance(value, dict) or key not in value or value[key] is None:
                return default
            value = value[key]
        return value


def _float(text) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_per_case(path: Path) -> dict:
    """per_case.csv -> {case: {"dice", "jaccard", ..., "patient"}}; empty when the file is absent."""
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "case" not in reader.fieldnames or "dice" not in reader.fieldnames:
            raise DataError(path, "per-case CSV needs at least the columns case,dice")
        return {row["case"]: {**{k: _float(v) for k, v in row.items() if k not in ("case", "patient")},
                              "patient": row.get("patient") or row["case"]} for row in reader}


def load_runs(results: Path) -> list[Run]:
    """Every `result.json` under `results`; an unreadable one becomes a failed run naming its error."""
    runs = []
    for path in sorted(results.rglob("result.json")):
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            record = {"status": "failed", "error": f"unreadable result.json: {exc}"}
        run = Run(path.parent, record)
        if record.get("status") == "ok":
            run.cases = read_per_case(path.parent / "per_case.csv")
            if (record.get("external") or {}).get("metrics"):
                run.external_cases = read_per_case(path.parent / "external_per_case.csv")
        runs.append(run)
    return runs


def _label(run: Run) -> str:
    return run.get("label") or run.get("variant") or run.path.name


def _fmt(mean: float, std: float = math.nan, digits: int = 3) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _md(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def summarise_group(runs: list[Run]) -> dict:
    """One (variant, modality): seed statistics of run metrics and timings, per-case Dice pooled over seeds."""
    g: dict = {"seeds": sorted({r.get("seed") for r in runs}, key=str), "runs": runs}
    for key in (*OVERLAP, "hd95", "assd", "failed"):
        g[key] = mean_std([r.get("metrics", key, default=math.nan) for r in runs])
    for key in ("volume_ms", "model_volume_ms", "slice_ms", "peak_memory_mb"):
        g[key] = mean_std([r.get("timing", key, default=math.nan) for r in runs])
    per_case: dict[str, list[float]] = defaultdict(list)
    patient: dict[str, str] = {}
    for run in runs:
        for case, row in run.cases.items():
            per_case[case].append(row["dice"])
            patient[case] = row["patient"]
    g["case_dice"] = {c: sum(v) / len(v) for c, v in per_case.items()}
    cases = sorted(g["case_dice"])
    g["ci"] = bootstrap_ci([g["case_dice"][c] for c in cases], [patient[c] for c in cases]) if cases else (math.nan, math.nan)
    g["n_patients"] = len({patient[c] for c in cases})
    g["external"] = summarise_external(runs)
    first = runs[0]
    for key in ("params", "flops", "preset", "data", "device"):
        g[key] = first.get(key)
    g["device"] = g["device"] or first.get("timing", "device")
    g["compute_precision"] = first.get("timing", "precision")
    return g


def summarise_external(runs: list[Run]) -> dict | None:
    """External set of one (variant, modality): seed statistics of its Dice, per-case Dice averaged over
    seeds with a bootstrap CI over cases, failed cases (mean over seeds); None when no run has one."""
    scored = [r for r in runs if r.get("external", "metrics")]
    errors = [r.get("external", "error") for r in runs if r.get("external", "error")]
    if not scored and not errors:
        return None
    per_case: dict[str, list[float]] = defaultdict(list)
    for run in scored:
        for case, row in run.external_cases.items():
            per_case[case].append(row["dice"])
    case_dice = {c: sum(v) / len(v) for c, v in per_case.items()}
    cases = sorted(case_dice)
    names = sorted({str(r.get("external", "name")) for r in runs if r.get("external", "name")})
    return {"name": ", ".join(names) or "–", "n": len(cases), "runs": len(scored), "errors": errors,
            "dice": mean_std([r.get("external", "metrics", "dice", default=math.nan) for r in scored]),
            "case_mean": sum(case_dice.values()) / len(cases) if cases else math.nan,
            "min": min(case_dice.values()) if cases else math.nan,
            "ci": bootstrap_ci([case_dice[c] for c in cases]) if cases else (math.nan, math.nan),
            "failed": mean_std([r.get("external", "failed", default=math.nan) for r in scored])}


def build_groups(runs: list[Run], baseline: str = BASELINE) -> tuple[list, dict, dict]:
    """Variant keys `(suite, variant)` in run order (each suite's baseline first), their labels
    (suffixed with the suite when several suites are present), and {(key, modality): summary}."""
    by_key: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.get("status") == "ok":
            vkey = (str(run.get("suite", default="")), run.get("variant") or run.path.name)
            by_key[(vkey, run.get("modality", default="?"))].append(run)
    start: dict = {}
    for (vkey, _), rs in by_key.items():
        first = min(str(r.get("started", default="")) for r in rs)
        start[vkey] = min(start.get(vkey, first), first)
    suite_start: dict = {}
    for (suite, _), t in start.items():
        suite_start[suite] = min(suite_start.get(suite, t), t)
    # Within a suite: the suite file's entry order (`entry`), so sharded and single-process runs give
    # the same tables; records without it (older runs) by start time.
    entry: dict = {}
    for (vkey, _), rs in by_key.items():
        for r in rs:
            if isinstance(r.get("entry"), int):
                entry[vkey] = min(entry.get(vkey, r.get("entry")), r.get("entry"))
    position = {k: (0, entry[k], "") if k in entry else (1, 0, start[k]) for k in start}
    order = sorted(start, key=lambda k: (suite_start[k[0]], k[0], k[1] != baseline, position[k], k[1]))
    several = len(suite_start) > 1
    labels = {}
    for k in order:
        label = _label(next(r for (kk, _), rs in by_key.items() if kk == k for r in rs))
        labels[k] = f"{label} [{k[0]}]" if several else label
    return order, labels, {key: summarise_group(rs) for key, rs in by_key.items()}


def _modalities(groups: dict) -> list[str]:
    present = {m for _, m in groups}
    return [m for m in ("ct", "mri")if m in present] + sorted(present - {"ct", "mri"})


def table1(order, labels, groups, modalities) -> str:
    """The paper's Table 1 layout: overlap metrics per modality, then time per volume."""
    headers = ["Variant"] + [f"{MODALITY_NAMES.get(m, m)} {k}" for m in modalities
                             for k in ("DSC", "Jaccard", "Precision", "Recall")]
    external = [m for m in modalities if any(g.get("external") for (_, gm), g in groups.items() if gm == m)]
    headers += [f"{MODALITY_NAMES.get(m, m)} external DSC (real scans)" for m in external]
    headers += [f"{MODALITY_NAMES.get(m, m)} time/volume (s)" for m in modalities]
    rows = []
    for v in order:
        row = [labels[v]]
        for m in modalities:
            g = groups.get((v, m))
            row += [_fmt(*g[k][:2]) if g else "–" for k in OVERLAP]
        for m in external:
            ext = (groups.get((v, m)) or {}).get("external")
            row.append(_fmt(*ext["dice"][:2]) if ext and ext["runs"] else "–")
        for m in modalities:
            g = groups.get((v, m))
            row.append(_fmt(g["volume_ms"][0] / 1000, g["volume_ms"][1] / 1000, 2) if g else "–")
        rows.append(row)
    paper = ["**Paper (quoted, not measured)**"]
    for m in modalities:
        paper += [PAPER.get(f"{m}_dice", "–"), "–", "–", "–"]
    paper += ["–"] * len(external) + [PAPER["time"]] * len(modalities)
    return _md(headers, rows + [paper])


def detail_tables(order, labels, groups, modalities) -> str:
    acc, cost = [], []
    for v in order:
        for m in modalities:
            g = groups.get((v, m))
            if not g:
                continue
            name, mod = labels[v], MODALITY_NAMES.get(m, m)
            lo, hi = g["ci"]
            acc.append([name, mod, len(g["seeds"]), _fmt(*g["dice"][:2]),
                        "–" if math.isnan(lo) else f"[{lo:.3f}, {hi:.3f}] (n={g['n_patients']})",
                        _fmt(*g["hd95"][:2], 2), _fmt(*g["assd"][:2], 2), _fmt(g["failed"][0], digits=1)])
            flops = g["flops"]
            cost.append([name, mod, _fmt(*g["volume_ms"][:2], 0), _fmt(*g["model_volume_ms"][:2], 0),
                         _fmt(*g["slice_ms"][:2], 1), f"{g['params'] / 1e6:.2f}" if g["params"] else "–",
                         f"{flops / 1e9:.1f}" if flops else "–", _fmt(g["peak_memory_mb"][0], digits=0),
                         g["device"] or "–", g["compute_precision"] or "–", g["preset"] or "–", g["data"] or "–"])
    a = _md(["Variant", "Modality", "Seeds", "DSC (mean ± std over seeds)", "DSC 95% CI (bootstrap over patients)",
             "HD95 (mm)", "ASSD (mm)", "Failed cases (mean)"], acc)
    c = _md(["Variant", "Modality", "Volume end-to-end (ms)", "Volume model-only (ms)", "Slice model-only (ms)",
             "Params (M)", "GFLOPs/volume", "Peak memory (MB)", "Device", "Precision", "Preset", "Data"], cost)
    return f"### Accuracy\n\n{a}\n\n### Cost\n\n{c}"


def external_table(order, labels, groups, modalities) -> str:
    """The real-scan table: each variant and modality on its external set."""
    rows = []
    for m in modalities:
        for v in order:
            ext = (groups.get((v, m)) or {}).get("external")
            if not ext:
                continue
            lo, hi = ext["ci"]
            failed = _fmt(ext["failed"][0], digits=1) if ext["runs"] else "–"
            if ext["errors"]:
                failed += f" ({len(ext['errors'])} run(s) not scored: " + \
                          "; ".join(e.replace("|", "\\|").replace("\n", " ")[:120] for e in ext["errors"]) + ")"
            rows.append([labels[v], MODALITY_NAMES.get(m, m), ext["name"], ext["n"], ext["runs"],
                         _fmt(ext["case_mean"]), "–" if math.isnan(lo) else f"[{lo:.3f}, {hi:.3f}]",
                         _fmt(ext["min"]), failed])
    if not rows:
        return ""
    return _md(["Variant", "Modality", "Set", "n cases", "Seeds", "DSC mean", "DSC 95% CI (bootstrap over cases)",
                "Worst case DSC", "Failed cases (mean over seeds)"], rows)


def wilcoxon_table(order, labels, groups, modalities, baseline: str = BASELINE) -> str:
    rows = []
    for m in modalities:
        for v in order:
            g, base = groups.get((v, m)), groups.get(((v[0], baseline), m))
            if v[1] == baseline or not g or not base:
                continue
            res = paired_wilcoxon(g["case_dice"], base["case_dice"])
            if res is None:
                rows.append([labels[v], MODALITY_NAMES.get(m, m), 0, "–", "–", "no shared test cases"])
            else:
                rows.append([labels[v], MODALITY_NAMES.get(m, m), res["n"], f"{res['mean_diff']:+.4f}",
                             "–" if math.isnan(res["statistic"]) else f"{res['statistic']:g}", _p(res["p"])])
    if not rows:
        return f"No paired test: the baseline `{baseline}` or a second variant is missing."
    return _md(["Variant", "Modality", "n cases", "Mean ΔDSC vs baseline", "W", "p (two-sided)"], rows)


def failed_table(runs: list[Run]) -> str:
    rows = [[f"`{r.path.name}`", r.get("variant", default="?"), r.get("modality", default="?"),
             r.get("seed", default="?"), str(r.get("error", default="(no error recorded)")).replace("|", "\\|").replace("\n", " ")]
            for r in runs if r.get("status") != "ok"]
    return _md(["Run", "Variant", "Modality", "Seed", "Error"], rows) if rows else "None."


def pareto_plot(order, labels, groups, modalities, out: Path) -> None:
    """Mean Dice vs end-to-end time per volume, one panel per modality, Pareto front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(modalities), figsize=(6 * len(modalities), 4.5), squeeze=False)
    for ax, m in zip(axes[0], modalities):
        pts = [(labels[v], groups[(v, m)]) for v in order if (v, m) in groups]
        pts = [(n, g["volume_ms"][0], g["dice"][0]) for n, g in pts]  # runs without end-to-end time are left out
        pts = [p for p in pts if not (math.isnan(p[1]) or math.isnan(p[2]))]
        front = pareto_front([p[1] for p in pts], [p[2] for p in pts])
        for (name, t, d), on in zip(pts, front):
            ax.scatter(t / 1000, d, s=70 if on else 40, c="tab:red" if on else "tab:blue", zorder=3)
            ax.annotate(name, (t / 1000, d), textcoords="offset points", xytext=(5, 4), fontsize=8)
        line = sorted((t / 1000, d) for (_, t, d), on in zip(pts, front) if on)
        if line:
            ax.plot(*zip(*line), "--", c="tab:red", label="Pareto front", zorder=2)
            ax.legend(loc="lower right")
        times = [p[1] for p in pts]
        if times and min(times) > 0 and max(times) / min(times) > 20:
            ax.set_xscale("log")
        ax.set(title=MODALITY_NAMES.get(m, m), xlabel="time per volume, end-to-end (s)", ylabel="Dice (mean over seeds)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _values(runs, *keys) -> str:
    vals = sorted({str(r.get(*keys)) for r in runs if r.get(*keys) is not None})
    return ", ".join(vals) if vals else "unknown"


def real_scan_section(order, labels, groups, modalities) -> list[str]:
    table = external_table(order, labels, groups, modalities)
    if not table:
        return []
    return ["## Real scans (external validation)", "",
            "Each run scored on every case of the external real set of its modality (`liverbench run "
            "--external`), in each scan's original geometry with the test split's metrics; liver label by name "
            "from the set's dataset.json. Per-case Dice averaged over seeds; CI: percentile bootstrap over "
            "cases; a failed case is an empty prediction (Dice 0).", "", table, ""]


def render(runs: list[Run], results: Path, out: Path, argv: list[str], now: dt.datetime,
           baseline: str = BASELINE) -> str:
    order, labels, groups = build_groups(runs, baseline)
    modalities = _modalities(groups)
    plot = out.with_name(f"{out.stem}_pareto.png")
    if groups:
        pareto_plot(order, labels, groups, modalities, plot)
    ok = [r for r in runs if r.get("status") == "ok"]
    commands = sorted({str(r.get("command")) for r in runs if r.get("command")})
    finished = sorted(str(r.get("finished")) for r in ok if r.get("finished"))
    header = [
        "# LiverBench leaderboard", "",
        "<!-- generated by `liverbench report` — do not edit by hand -->",
        f"_Generated — do not edit by hand._ Command: `liverbench report {' '.join(argv)}`, "
        f"{now:%Y-%m-%d %H:%M} UTC, from {len(runs)} result records under `{results}` "
        f"({len(ok)} ok, {len(runs) - len(ok)} failed).", "",
        f"- Runs: {'; '.join(f'`{c}`' for c in commands) or 'command not recorded'}"
        + (f", finished {finished[0]} – {finished[-1]}" if finished else ""),
        f"- Hardware: {_values(ok, 'device')}", f"- Suite: {_values(ok, 'suite')}; preset: {_values(ok, 'preset')}; "
        f"data: {_values(ok, 'data')}; seeds: {_values(ok, 'seed')}; git commit: {_values(ok, 'git_commit')}",
        "- DSC etc.: mean ± std over seeds of each run's per-case mean (test split, original geometry, 3D). "
        "HD95/ASSD in mm, MONAI surface convention (mask XOR 6-connected erosion); failed = empty prediction.",
        "- Post-processing: largest connected component only: "
        + (", ".join(sorted({"yes" if (r.get("postprocessing") or {}).get("largest_component") else "no"
                             for r in ok})) or "–") + ".",
        "- Time per volume: end-to-end (read → preprocess → model → resample to original grid), median over "
        "repeats; model-only and per-slice (2D models) times in the Cost table.",
    ]
    body = [
        "## Table 1 (the paper's layout)", "", table1(order, labels, groups, modalities), "",
        "The paper row is **quoted from the paper, not measured here**: DSC ranges over its variants and "
        "2.4–3.0 s \"per image\" (its hardware and the meaning of \"image\" are not stated).", "",
        *real_scan_section(order, labels, groups, modalities),
        "## Details", "", detail_tables(order, labels, groups, modalities), "",
        f"## Paired Wilcoxon signed-rank test vs `{baseline}`", "",
        "Per-case Dice averaged over seeds, paired on the test cases both variants share.", "",
        wilcoxon_table(order, labels, groups, modalities, baseline), "",
        "## Pareto plot", "", f"![Dice vs time per volume]({plot.name})" if groups else "No successful runs.", "",
        "## Failed runs", "", failed_table(runs), "",
    ]
    return "\n".join(header + [""] + body)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="liverbench report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="folder searched for result.json")
    parser.add_argument("--out", type=Path, default=Path("leaderboard.md"), help="markdown file to write")
    parser.add_argument("--baseline", default=BASELINE, help="variant id the paired tests compare against")
    parser.add_argument("--wandb", nargs="?", const="auto", default=None,
                        choices=["auto", "disabled", "offline", "online"],
                        help="also log one W&B summary run per suite (after all shards are done); "
                             "mode as for `liverbench run` (default: online with an API key, else offline)")
    parser.add_argument("--project", default=os.environ.get("WANDB_PROJECT", "liverbench"), help="W&B project")
    args = parser.parse_args(argv)
    try:
        if not args.results.is_dir():
            raise DataError(args.results, "results folder not found")
        runs = load_runs(args.results)
        if not runs:
            raise DataError(args.results, "no result.json found (run `liverbench run` first)")
        text = render(runs, args.results, args.out, argv, dt.datetime.now(dt.timezone.utc), args.baseline)
    except DataError as exc:
        print(f"error: {exc.path}: {exc.problem}", file=sys.stderr)
        return 2
    atomic_write_text(args.out, text)
    print(f"wrote {args.out} ({len(runs)} runs)")
    if args.wandb:
        log_summaries(runs, args.results, args.wandb, args.project)
    return 0


def log_summaries(runs: list[Run], results: Path, mode: str, project: str) -> None:
    """One W&B summary run per suite over every record (all shards'), in `RESULTS/<suite>/wandb`."""
    from benchmark.wandb_logging import log_suite_summary, resolve_mode

    mode = resolve_mode(None if mode == "auto" else mode)
    suites: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        if run.get("suite"):
            suites[str(run.get("suite"))].append(run.record)
    for suite, records in sorted(suites.items()):
        log_suite_summary(mode, project, suite, records, results / suite)
        print(f"W&B summary run {suite}__summary ({mode}): {len(records)} runs")
