"""The training budget each run used (optimiser steps × samples per step, wall-clock seconds, its limit,
whether it converged and what stopped it) and every value that differs from the entry's own config.
Records written before these fields existed show n/a."""
from __future__ import annotations

import json
import math
from collections import defaultdict

from benchmark.report.columns import cell, fmt_ms, md_table
from benchmark.report.ranking import MODALITY_NAMES
from benchmark.report.stats import mean_std
from benchmark.run.convergence import convergence_rule, describe_rule

NA = "n/a"
YES_NO = {True: "yes", False: "no"}


def _samples(b: dict) -> str:
    try:
        return f"{int(b['steps'])} × {int(b['samples_per_step'])} = {int(b['samples'])}"
    except (KeyError, TypeError, ValueError):
        return NA


def _limit(b: dict) -> str:
    limit = b.get("limit")
    if not isinstance(limit, dict) or not limit:
        return NA
    return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in sorted(limit.items()))


def _flag(budgets: list[dict], key: str, alarm: bool) -> str:
    """yes/no over the seeds; the `alarm` value (the one that needs attention) in bold, with its count."""
    flags = [b.get(key) for b in budgets if isinstance(b.get(key), bool)]
    if not flags:
        return NA
    n = flags.count(alarm)
    if n == 0:
        return YES_NO[not alarm]
    return f"**{YES_NO[alarm]}**" + ("" if n == len(flags) else f" ({n} of {len(flags)} seeds)")


def _stops(budgets: list[dict]) -> str:
    reasons = [f"{b['stop_reason']} at {b.get('steps')}" for b in budgets if b.get("stop_reason")]
    return "; ".join(reasons) if reasons else NA


def _distinct(values: list[str]) -> str:
    return "; ".join(sorted(set(values))) if values else NA


def _validation_share(budgets: list[dict]) -> str:
    """Mean share of the fit's seconds spent validating (the learning curve's cost)."""
    shares = [b["validation_seconds"] / b["seconds"] for b in budgets
              if isinstance(b.get("validation_seconds"), (int, float)) and isinstance(b.get("seconds"), (int, float))
              and b["seconds"] > 0]
    return f"{sum(shares) / len(shares):.0%}" if shares else NA


def budget_rows(order, labels, runs_by: dict, modality: str) -> list[list[str]]:
    rows = []
    for v in order:
        runs = [r for r in runs_by.get((v, modality), []) if r.ok]
        if not runs:
            continue
        budgets = [r.get("budget") for r in runs if isinstance(r.get("budget"), dict)]
        seconds = mean_std([b.get("seconds") if isinstance(b.get("seconds"), (int, float)) else math.nan for b in budgets])
        unit = _distinct([str(b.get("unit")) for b in budgets if b.get("unit")])
        rows.append([labels[v], len(runs), _distinct([_samples(b) for b in budgets]), unit,
                     _distinct([_limit(b) for b in budgets]), _flag(budgets, "converged", alarm=False),
                     _stops(budgets), _flag(budgets, "still_improving", alarm=True),
                     NA if not budgets or math.isnan(seconds[0]) else fmt_ms(*seconds[:2], 1),
                     _validation_share(budgets)])
    return rows


def _value(v) -> str:
    return "not set" if v is None else f"`{json.dumps(v, sort_keys=True)}`"


def overrides_rows(order, labels, runs_by: dict, modalities: list[str]) -> tuple[list[list], list[str]]:
    """Rows (variant, modality, key, entry, used, source, runs) and the runs that did not record overrides."""
    found: dict = defaultdict(list)
    missing = []
    for v in order:
        for m in modalities:
            for r in sorted((r for r in runs_by.get((v, m), []) if r.ok), key=lambda r: str(r.get("seed"))):
                items = r.record.get("overrides")
                if not isinstance(items, list):
                    name = f"{labels[v]} {MODALITY_NAMES.get(m, m)}"
                    missing += [] if name in missing else [name]
                    continue
                for o in items:
                    if isinstance(o, dict):
                        key = (str(o.get("key")), _value(o.get("entry")), _value(o.get("used")), str(o.get("source")))
                        found[(v, m) + key].append(str(r.get("seed")))
    rows = []
    for v in order:
        for m in modalities:
            for k in sorted(k for k in found if k[:2] == (v, m)):
                rows.append([labels[v], MODALITY_NAMES.get(m, m), f"`{cell(k[2])}`", cell(k[3]), cell(k[4]), cell(k[5]),
                             ", ".join(sorted(found[k], key=str))])
    return rows, missing


def _rules(runs) -> str:
    rules = set()
    for r in runs:
        try:
            rules.add(describe_rule(convergence_rule(r.get("budget", "rule"))) if r.get("budget", "rule") else None)
        except (ValueError, TypeError):  # a malformed stored rule: said so, not guessed
            rules.add(f"unreadable rule in {r.path}")
    rules.discard(None)
    return "; ".join(sorted(rules)) if rules else "n/a (runs recorded before the rule existed)"


def ok_runs_by(runs) -> dict:
    """{(variant key, modality): [ok runs]}."""
    runs_by: dict = defaultdict(list)
    for r in runs:
        if r.ok:
            runs_by[(r.variant_key(), r.get("modality", default="?"))].append(r)
    return runs_by


def budget_section(order, labels, runs, modalities, curves_png: str | None = None) -> list[str]:
    runs_by = ok_runs_by(runs)
    lines = ["## Training budget and convergence", "",
             "One unit for every variant: optimiser steps × samples per step = samples seen, the wall-clock seconds of "
             "the fit (mean ± std over seeds) and the share of them spent validating, the cap, whether the run "
             "converged (**no**: it was still learning, so "
             "its row says more about the step budget than the architecture, and no verdict uses it), what ended "
             "it (per seed: `plateau` = the rule below, else the cap) and whether the last validation Dice was the "
             "best. n/a: not recorded.", "", f"Convergence rule (every variant alike): {_rules([r for r in runs if r.ok])}.", ""]
    if curves_png:
        lines += [f"![Validation Dice against steps and seconds]({curves_png})", ""]
    for m in modalities:
        rows = budget_rows(order, labels, runs_by, m)
        if rows:
            lines += [f"### {MODALITY_NAMES.get(m, m)}", "",
                      md_table(["Variant", "Seeds", "Steps × samples/step = samples", "Unit", "Cap", "Converged",
                                "Stopped by (at step)", "Still improving", "Fit seconds", "Validating"], rows), ""]
    rows, missing = overrides_rows(order, labels, runs_by, modalities)
    lines += ["## Overrides", "", "Every value a run used that differs from its suite entry's own config, and where "
              "it came from (a preset, a key the preset forces, or the runner).", ""]
    if rows:
        lines += [md_table(["Variant", "Modality", "Key", "Entry config", "Used", "Source", "Seeds"], rows), ""]
    elif not missing and runs_by:
        lines += ["None: every run used its entry's own config.", ""]
    if missing:
        lines += [f"n/a (not recorded) for: {'; '.join(missing)}.", ""]
    return lines
