"""Table 1 (the paper's layout), the accuracy/cost details, the real-scan table and the failed runs.

Metric columns, titles, formats and directions come from the metric schema (`benchmark.scoring.metrics.METRICS`):
Table 1 shows every metric aggregated as a plain mean over cases (the overlap metrics), the accuracy
details every other one, the real-scan table all of them."""
from __future__ import annotations

import math

from benchmark.report.columns import SIGNIFICANT, cell, fmt_metric, fmt_ms, md_table, metric_title
from benchmark.report.ranking import MODALITY_NAMES
from benchmark.report.stats import mean_std
from benchmark.scoring import metrics as schema

# DESIGN.md: the seed paper's own numbers; ranges only, hardware and "image" undefined.
PAPER = {"ct_dice": "0.89–0.94", "mri_dice": "0.87–0.92", "time": "2.4–3.0"}


def table1_metrics() -> list[str]:
    return [m.name for m in schema.METRICS if m.aggregation == "mean"]


def detail_metrics() -> list[str]:
    return [m.name for m in schema.METRICS if m.aggregation != "mean"]


def _mod(m: str) -> str:
    return MODALITY_NAMES.get(m, m)


def _stat(g: dict, name: str, sig: bool = False) -> str:
    text = fmt_metric(name, *g[name][:2])
    return text + SIGNIFICANT if sig and name == "dice" and text != "–" else text


def _ci(lo: float, hi: float) -> str:
    return "–" if math.isnan(lo) else f"[{fmt_metric('dice', lo)}, {fmt_metric('dice', hi)}]"


def table1(order, labels, groups, modalities, sig: dict) -> str:
    """The paper's Table 1 layout: overlap metrics per modality, then time per volume."""
    columns = table1_metrics()
    headers = ["Variant"] + [f"{_mod(m)} {metric_title(k)}" for m in modalities for k in columns]
    external = [m for m in modalities if any(g.get("external") for (_, gm), g in groups.items() if gm == m)]
    headers += [f"{_mod(m)} external DSC (real scans)" for m in external]
    headers += [f"{_mod(m)} time/volume (s)" for m in modalities]
    rows = []
    for v in order:
        if not any((v, m) in groups for m in modalities):
            continue  # every run failed: listed under the ranking notes and Failed runs
        row = [labels[v]]
        for m in modalities:
            g = groups.get((v, m))
            row += [_stat(g, k, sig.get((v, m), False)) if g else "–" for k in columns]
        for m in external:
            ext = (groups.get((v, m)) or {}).get("external")
            row.append(fmt_metric("dice", *ext["dice"][:2]) if ext and ext["runs"] else "–")
        for m in modalities:
            g = groups.get((v, m))
            row.append(fmt_ms(g["volume_ms"][0] / 1000, g["volume_ms"][1] / 1000, 2) if g else "–")
        rows.append(row)
    paper = ["**Paper (quoted, not measured)**"]
    for m in modalities:
        paper += [PAPER.get(f"{m}_{k}", "–") for k in columns]
    paper += ["–"] * len(external) + [PAPER["time"]] * len(modalities)
    return md_table(headers, rows + [paper])


def detail_tables(order, labels, groups, modalities, sig: dict) -> str:
    acc, cost, detail = [], [], detail_metrics()
    for v in order:
        for m in modalities:
            g = groups.get((v, m))
            if not g:
                continue
            name, mod = labels[v], _mod(m)
            acc.append([name, mod, len(g["seeds"]), _stat(g, "dice", sig.get((v, m), False)),
                        _ci(*g["ci"]) + ("" if math.isnan(g["ci"][0]) else f" (n={g['n_patients']})"),
                        *[_stat(g, k) for k in detail]])
            flops = g["flops"]
            cost.append([name, mod, fmt_ms(*g["volume_ms"][:2], 0), fmt_ms(*g["model_volume_ms"][:2], 0),
                         fmt_ms(*g["slice_ms"][:2], 1), f"{g['params'] / 1e6:.2f}" if g["params"] else "–",
                         f"{flops / 1e9:.1f}" if flops else "–", fmt_ms(g["peak_memory_mb"][0], digits=0),
                         g["device"] or "–", g["compute_precision"] or "–", g["preset"] or "–", g["data"] or "–",
                         transfer(g["runs"])])
    a = md_table(["Variant", "Modality", "Seeds", "DSC ↑ (mean ± std over seeds)", "DSC 95% CI (bootstrap over patients)",
                  *[metric_title(k, arrow=True) + (" (mean)" if k == "failed" else "") for k in detail]], acc)
    c = md_table(["Variant", "Modality", "Volume end-to-end (ms)", "Volume model-only (ms)", "Slice model-only (ms)",
                  "Params (M)", "GFLOPs/volume", "Peak memory (MB)", "Device", "Precision", "Preset", "Data",
                  "Transfer"], cost)
    return f"### Accuracy\n\n{a}\n\n### Cost\n\n{c}"


def transfer(runs) -> str:
    """Where the runs' initial weights came from (result.json `transfer`); n/a for older records."""
    found = sorted({" ".join(str(v) for v in (t.get("source"), t.get("detail")) if v)
                    for t in (r.get("transfer") for r in runs) if isinstance(t, dict)})
    return ", ".join(found) if found else "n/a"


def external_table(order, labels, groups, modalities) -> str:
    """The real-scan table: each variant and modality on its external set."""
    others = [m.name for m in schema.METRICS if m.name not in ("dice", "failed")]
    rows = []
    for m in modalities:
        for v in order:
            g = groups.get((v, m)) or {}
            ext = g.get("external")
            if not ext:
                continue
            failed = fmt_metric("failed", *ext["failed"][:1]) if ext["runs"] else "–"
            if ext["errors"]:
                failed += f" ({len(ext['errors'])} run(s) not scored: " + "; ".join(cell(e)[:120] for e in ext["errors"]) + ")"
            seed_stats = [mean_std([r.get("external", "metrics", k, default=math.nan) for r in g["runs"]
                                    if r.get("external", "metrics")]) for k in others]
            rows.append([labels[v], _mod(m), ext["name"], ext["n"], ext["runs"], fmt_metric("dice", ext["case_mean"]),
                         _ci(*ext["ci"]), fmt_metric("dice", ext["min"]),
                         *[fmt_metric(k, *s[:2]) for k, s in zip(others, seed_stats)], failed])
    if not rows:
        return ""
    return md_table(["Variant", "Modality", "Set", "n cases", "Seeds", "DSC mean", "DSC 95% CI (bootstrap over cases)",
                     "Worst case DSC", *[metric_title(k, arrow=True) for k in others],
                     "Failed cases (mean over seeds)"], rows)


def real_scan_section(order, labels, groups, modalities) -> list[str]:
    table = external_table(order, labels, groups, modalities)
    if not table:
        return []
    return ["## Real scans (external validation)", "",
            "Each run scored on every case of the external real set of its modality (`liverbench run "
            "--external`), in each scan's original geometry with the test split's metrics; liver label by name "
            "from the set's dataset.json. Per-case Dice averaged over seeds; CI: percentile bootstrap over "
            "cases; a failed case is an empty prediction (Dice 0); other metrics: mean ± std over seeds.", "", table, ""]


def failed_table(runs) -> str:
    rows = [[f"`{r.path.name}`", r.get("variant", default="?"), r.get("modality", default="?"),
             r.get("seed", default="?"), cell(r.get("error", default="(no error recorded)"))]
            for r in runs if not r.ok]
    return md_table(["Run", "Variant", "Modality", "Seed", "Error"], rows) if rows else "None."
