"""Per suite and modality: rank variants by mean per-case Dice, bootstrap the ranking over test patients
and seeds, the probability of beating the baseline, paired Wilcoxon tests with Holm correction, and the
noise floor (seed-to-seed spread vs spread between variants). See docs/evaluation.md for the sources."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from benchmark.report.stats import (average_ranks, bootstrap_means, holm, noise_floor, paired_wilcoxon,
                                    rank_frequencies)
from benchmark.scoring import metrics as schema

MODALITY_NAMES = {"ct": "CT", "mri": "MRI", "mr": "MRI"}
N_BOOT, BOOT_SEED, ALPHA = 10000, 0, 0.05
METRIC = "dice"  # the ranked metric (its direction comes from the schema)


@dataclass
class Ranking:
    suite: str
    modality: str
    labels: dict
    keys: list = field(default_factory=list)  # ranked variant keys, report order
    baseline: tuple | None = None
    n_cases: int = 0
    n_patients: int = 0
    seeds: dict = field(default_factory=dict)
    dice: dict = field(default_factory=dict)  # observed mean over cases of the seed-averaged Dice
    rank: dict = field(default_factory=dict)
    mean_rank: dict = field(default_factory=dict)
    freq: dict = field(default_factory=dict)  # key -> fractions for ranks 1..len(keys)
    median_rank: dict = field(default_factory=dict)
    rank_interval: dict = field(default_factory=dict)  # key -> (2.5th, 97.5th percentile) of the bootstrap ranks
    p_beats: dict = field(default_factory=dict)
    tests: dict = field(default_factory=dict)  # key -> paired_wilcoxon(...) + p_holm
    converged: dict = field(default_factory=dict)  # key -> every seed's run converged (result.json budget)
    noise: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def name(self) -> str:
        mod = MODALITY_NAMES.get(self.modality, self.modality)
        return f"{mod} [{self.suite}]" if self._several_suites else mod

    _several_suites: bool = False

    def comparable(self, key) -> bool:
        """A verdict against the baseline needs both trainings finished: every seed of both converged."""
        return bool(self.converged.get(key)) and bool(self.converged.get(self.baseline))

    def significant(self, key) -> bool:
        t = self.tests.get(key)
        return bool(t) and t["p_holm"] < ALPHA and self.comparable(key)


def _seed_list(runs) -> str:
    return ", ".join(str(r.get("seed")) for r in sorted(runs, key=lambda r: str(r.get("seed"))))


def _rankable_runs(r: Ranking, modality, keys, labels, groups, failed) -> dict:
    """Per variant its runs with per-case results, sorted by seed; why a variant or seed is left out goes to `r.notes`."""
    runs: dict = {}
    for k in keys:
        bad = failed.get((k, modality), [])
        ok = [run for run in (groups.get((k, modality)) or {}).get("runs", [])]
        with_cases = [run for run in ok if run.cases]
        if not with_cases:
            why = "no successful run" if not ok else "no per-case results (per_case.csv)"
            r.notes.append(f"Not ranked: {labels[k]}: {why}" + (f"; failed seed(s) {_seed_list(bad)}, see Failed runs." if bad else "."))
            continue
        if bad:
            r.notes.append(f"{labels[k]}: ranked on seed(s) {_seed_list(with_cases)}; seed(s) {_seed_list(bad)} failed (see Failed runs).")
        if len(with_cases) < len(ok):
            r.notes.append(f"{labels[k]}: seed(s) {_seed_list([x for x in ok if not x.cases])} have no per-case results; left out.")
        runs[k] = sorted(with_cases, key=lambda x: str(x.get("seed")))
    return runs


def rank_one(suite, modality, keys, labels, groups, failed, baseline, n_boot=N_BOOT) -> Ranking:
    """The ranking of one suite and modality; `keys` every variant that has a run there (ok or failed)."""
    r = Ranking(suite, modality, labels)
    runs = _rankable_runs(r, modality, keys, labels, groups, failed)
    r.keys = list(runs)
    if not r.keys:
        return r
    all_cases = [set(run.cases) for rs in runs.values() for run in rs]
    cases = sorted(set.intersection(*all_cases))
    if len(cases) < max(len(s) for s in all_cases):
        r.notes.append(f"Ranked on the {len(cases)} test cases every run has; {len(set.union(*all_cases)) - len(cases)} case(s) "
                       "missing from some run are left out.")
    if not cases:
        r.keys = []
        return r
    patients = [next(iter(runs.values()))[0].cases[c]["patient"] for c in cases]
    r.n_cases, r.n_patients = len(cases), len(set(patients))
    dice = [np.array([[run.cases[c][METRIC] for c in cases] for run in runs[k]]) for k in r.keys]
    higher = schema.METRIC_BY_NAME[METRIC].direction == "max"
    observed = np.array([d.mean(axis=0).mean() for d in dice])
    boot = bootstrap_means(dice, patients, n_boot=n_boot, seed=BOOT_SEED)
    ranks = average_ranks(boot, higher)
    freq = rank_frequencies(ranks)
    for j, k in enumerate(r.keys):
        r.seeds[k] = [run.get("seed") for run in runs[k]]
        r.converged[k] = all(run.get("budget", "converged") is True for run in runs[k])
        r.dice[k] = float(observed[j])
        r.rank[k] = float(average_ranks(observed, higher)[j])
        r.mean_rank[k] = float(ranks[:, j].mean())
        r.freq[k] = freq[j].tolist()
        r.median_rank[k] = float(np.median(ranks[:, j]))
        lo, hi = np.percentile(ranks[:, j], [2.5, 97.5])
        r.rank_interval[k] = (float(lo), float(hi))
    r.noise = noise_floor({k: d.mean(axis=1).tolist() for k, d in zip(r.keys, dice)})
    base = (suite, baseline)
    if base in runs:
        r.baseline = base
        b = r.keys.index(base)
        seed_mean = {k: dict(zip(cases, d.mean(axis=0))) for k, d in zip(r.keys, dice)}
        for j, k in enumerate(r.keys):
            if k == base:
                continue
            r.p_beats[k] = float(np.mean(boot[:, j] > boot[:, b]) if higher else np.mean(boot[:, j] < boot[:, b]))
            r.tests[k] = paired_wilcoxon(seed_mean[k], seed_mean[base])
        tested = [k for k in r.keys if k in r.tests]
        for k, p in zip(tested, holm([r.tests[k]["p"] for k in tested])):
            r.tests[k]["p_holm"] = p
    return r


def compute_rankings(order, labels, groups, runs, baseline, modalities, n_boot=N_BOOT) -> list[Ranking]:
    failed: dict = defaultdict(list)
    for run in runs:
        if not run.ok and run.get("variant"):
            failed[(run.variant_key(), run.get("modality", default="?"))].append(run)
    mods = list(modalities) + sorted({m for _, m in failed} - set(modalities))
    suites = list(dict.fromkeys(k[0] for k in order))
    out = []
    for suite in suites:
        for m in mods:
            keys = [k for k in order if k[0] == suite and ((k, m) in groups or (k, m) in failed)]
            if keys:
                r = rank_one(suite, m, keys, labels, groups, failed, baseline, n_boot)
                r._several_suites = len(suites) > 1
                out.append(r)
    return out


def significance(rankings: list[Ranking]) -> dict:
    """{(variant key, modality): True} where the Holm-adjusted p against the baseline is < 0.05."""
    return {(k, r.modality): True for r in rankings for k in r.keys if r.significant(k)}


def by_rank(r: Ranking) -> list:
    return sorted(r.keys, key=lambda k: (r.rank[k], r.keys.index(k)))


def rows(r: Ranking, groups: dict) -> list[dict]:
    """The numbers of one ranking, one dict per ranked variant (leaderboard.md and W&B show these)."""
    out = []
    for k in by_rank(r):
        g = groups[(k, r.modality)]
        t = r.tests.get(k) or {}
        row = {"suite": r.suite, "modality": r.modality, "variant": k[1], "label": r.labels[k],
               "seeds": len(r.seeds[k]), "n_cases": r.n_cases, "n_patients": r.n_patients,
               "dice": r.dice[k], "ci_low": g["ci"][0], "ci_high": g["ci"][1], "rank": r.rank[k],
               "mean_rank": r.mean_rank[k], "median_rank": r.median_rank[k], "rank_ci_low": r.rank_interval[k][0],
               "rank_ci_high": r.rank_interval[k][1], "p_beats_baseline": r.p_beats.get(k, math.nan),
               "mean_diff": t.get("mean_diff", math.nan), "p": t.get("p", math.nan),
               "p_holm": t.get("p_holm", math.nan), "significant": r.significant(k),
               "seed_std": r.noise["std"][k], "volume_ms": g["volume_ms"][0], "converged": r.converged[k]}
        row.update({f"rank_{i + 1}_pct": 100 * f for i, f in enumerate(r.freq[k])})
        out.append(row)
    return out
