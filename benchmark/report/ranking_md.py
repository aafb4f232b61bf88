"""The ranking and significance sections of leaderboard.md, from `ranking.Ranking` objects."""
from __future__ import annotations

import math

from benchmark.report.columns import SIGNIFICANT, fmt_metric, fmt_num, fmt_p, fmt_signed, md_table, metric_title
from benchmark.report.ranking import ALPHA, BOOT_SEED, METRIC, N_BOOT, Ranking, by_rank, rows


def _signed(x: float) -> str:
    return fmt_signed(METRIC, x)


def verdict(r: Ranking) -> str:
    """One plain sentence (or two): which differences from the baseline hold at 95 % (Holm), which are noise."""
    head = f"**{r.name}**"
    if not r.keys:
        return f"{head}: no variant could be ranked."
    top = by_rank(r)[0]
    lead = (f" Rank 1 goes to {r.labels[top]} in {100 * r.freq[top][0]:.1f} % of the {N_BOOT} bootstrap samples."
            if len(r.keys) > 1 else "")
    if r.baseline is None:
        return f"{head}: no successful baseline run, so no paired tests; the ranking is descriptive only.{lead}"
    base = r.labels[r.baseline]
    tested = [k for k in r.keys if k in r.tests]
    if not tested:
        return f"{head}: only the baseline {base} has results; nothing to compare.{lead}"
    unfinished = ", ".join(r.labels[k] for k in [r.baseline, *tested] if not r.converged.get(k))
    comparable = [k for k in tested if r.comparable(k)]
    open_ = (f" No verdict where a run did not converge ({unfinished}): a difference between unfinished "
             "trainings measures their step budgets, not the variants." if unfinished else "")
    held = [k for k in comparable if r.significant(k)]
    noise = ", ".join(r.labels[k] for k in comparable if not r.significant(k))
    if not held:
        within = f"; {noise} within noise" if noise else ""
        head_text = (f"{head}: no difference from {base} holds at 95 % (Holm-corrected Wilcoxon){within}."
                     if comparable else f"{head}: no verdict.")
        return head_text + open_ + lead

    def one(k) -> str:
        t, p = r.tests[k], r.p_beats[k]
        text = (f"{r.labels[k]} is {'better' if t['mean_diff'] > 0 else 'worse'} than {base} "
                f"(ΔDSC {_signed(t['mean_diff'])}, Holm p {fmt_p(t['p_holm'])})")
        if max(len(r.seeds[k]), len(r.seeds[r.baseline])) > 1 and 0.025 < p < 0.975:
            text += f", but not robustly across seeds (P(beats baseline) {p:.3f} with seeds resampled)"
        return text

    tail = f"; {noise}: within noise (Holm p ≥ {ALPHA:g})" if noise else ""
    return f"{head}: at 95 % (Holm-corrected Wilcoxon), " + "; ".join(one(k) for k in held) + tail + "." + open_ + lead


def noise_line(r: Ranking) -> str:
    n = r.noise
    if not r.keys:
        return ""
    if math.isnan(n["mean_seed_std"]):
        return ("Noise floor: one seed per variant, so the seed-to-seed spread is not measured here "
                "(several seeds: `make bench-full`).")
    between = n["between_variants_std"]
    ratio = "" if math.isnan(between) or between == 0 else f" (ratio {n['mean_seed_std'] / between:.2f})"
    return (f"Noise floor: std over seeds of a variant's mean DSC {fmt_metric(METRIC, n['mean_seed_std'])} on average; "
            f"std of the variants' mean DSC {fmt_metric(METRIC, between)}{ratio}.")


def rank_table(r: Ranking, groups: dict) -> str:
    v = len(r.keys)
    headers = ["Variant", "Seeds", f"{metric_title(METRIC, arrow=True)} (mean over cases)", "Rank",
               "Mean rank (bootstrap)", "95% rank interval", *[f"Rank {i + 1} (%)" for i in range(v)],
               "P(beats baseline)", "Std over seeds"]
    out = []
    for row in rows(r, groups):
        mark = SIGNIFICANT if row["significant"] else ""
        base = (row["suite"], row["variant"]) == r.baseline
        out.append([row["label"] + (" (baseline)" if base else ""), row["seeds"], fmt_metric(METRIC, row["dice"]) + mark,
                    f"{row['rank']:.1f}", f"{row['mean_rank']:.2f}",
                    f"[{row['rank_ci_low']:g}, {row['rank_ci_high']:g}]",
                    *[f"{row[f'rank_{i + 1}_pct']:.1f}" for i in range(v)],
                    "–" if base else fmt_num(row["p_beats_baseline"]), fmt_metric(METRIC, row["seed_std"])])
    return md_table(headers, out)


def _holds(r: Ranking, k) -> str:
    if not r.comparable(k):
        return "no verdict (not converged)"
    return "yes" + SIGNIFICANT if r.significant(k) else "no (within noise)"


def wilcoxon_table(rankings: list[Ranking], baseline: str) -> str:
    out = []
    for r in rankings:
        for k in r.keys:
            t = r.tests.get(k)
            if t is None and k in r.p_beats:
                out.append([r.labels[k], r.name, 0, "–", "–", "–", "–", "no shared test cases"])
            elif t is not None:
                out.append([r.labels[k], r.name, t["n"], _signed(t["mean_diff"]),
                            "–" if math.isnan(t["statistic"]) else f"{t['statistic']:g}", fmt_p(t["p"]),
                            fmt_p(t["p_holm"]), _holds(r, k)])
    if not out:
        return f"No paired test: the baseline `{baseline}` or a second variant is missing."
    return md_table(["Variant", "Modality", "n cases", "Mean ΔDSC vs baseline", "W", "p (two-sided)", "p (Holm)",
                     "Holds at 95 %"], out)


def ranking_section(rankings: list[Ranking], groups: dict, baseline: str, figure: str | None) -> list[str]:
    lines = ["## Ranking and significance", "",
             f"Variants ranked by mean per-case DSC (seed-averaged per case; ties share the average rank). "
             f"Bootstrap: {N_BOOT} samples (seed {BOOT_SEED}) resampling test patients with replacement, a patient's "
             "cases together (MRI: T1 and T2), the same patients for every variant, and each variant's seeds with "
             "replacement; 95% rank interval: 2.5th–97.5th percentile of the bootstrap ranks; Rank k (%) is the share of samples with that rank, P(beats baseline) the share in which "
             "the variant's mean DSC is higher than the baseline's. "
             f"{SIGNIFICANT} = Holm-adjusted p < {ALPHA:g} in the paired Wilcoxon test against `{baseline}` "
             "(below). Method and sources: docs/evaluation.md.", ""]
    if figure:
        lines += [f"![Bootstrap rank frequencies]({figure})", ""]
    for r in rankings:
        lines += [f"### {r.name}", "", verdict(r), ""]
        if r.keys:
            lines += [f"{r.n_cases} test cases from {r.n_patients} patients.", "", rank_table(r, groups), "",
                      noise_line(r), ""]
        lines += [f"- {n}" for n in r.notes] + ([""] if r.notes else [])
    lines += [f"## Paired Wilcoxon signed-rank test vs `{baseline}`", "",
              "Two-sided, on per-case Dice averaged over seeds, paired by case id on the test cases both variants "
              "share; Holm correction over the variants of each modality.", "",
              wilcoxon_table(rankings, baseline), ""]
    return lines
