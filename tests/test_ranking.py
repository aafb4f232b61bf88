"""Ranking statistics (issue 9 §2/§5): ranks, bootstrap, Holm, P(beats baseline) on small tables with
hand-computed values; the leaderboard's ranking, budget and override sections; the metric schema as the
one source of report and progress columns; the W&B summary run's rank table."""
from __future__ import annotations

import csv
import itertools
import json
import math

import numpy as np
import pytest

from benchmark.report import main
from benchmark.report.stats import average_ranks, bootstrap_means, holm, noise_floor, rank_frequencies
from benchmark.scoring import metrics as schema

# 3 variants x 4 cases (one patient each). Means: A 0.75, B 0.75, C 0.65.
TABLE = {"unet_baseline": [0.90, 0.80, 0.70, 0.60], "b": [0.60, 0.90, 0.80, 0.70], "c": [0.50, 0.60, 0.70, 0.80]}
LABELS = {"unet_baseline": "Base", "b": "Bee", "c": "Cee"}


def _hand_rank(means: list[float]) -> list[float]:
    """Average ranks written out: 1 + the number strictly better + half the number of others tied."""
    eps = 1e-12
    return [1 + sum(o > m + eps for o in means) + 0.5 * (sum(abs(o - m) <= eps for o in means) - 1) for m in means]


def test_average_ranks_on_a_hand_table():
    means = [float(np.mean(v)) for v in TABLE.values()]
    assert average_ranks(means).tolist() == [1.5, 1.5, 3.0]
    assert average_ranks([0.1, 0.3, 0.2]).tolist() == [3.0, 1.0, 2.0]
    assert average_ranks([5.0, 2.0, 2.0], higher_is_better=False).tolist() == [3.0, 1.5, 1.5]  # e.g. HD95
    assert average_ranks([[0.2, 0.2, 0.2]]).tolist() == [[2.0, 2.0, 2.0]]


def test_bootstrap_mean_ranks_equal_the_exhaustive_enumeration():
    """Every one of the 4^4 patient resamples, each once: the exact bootstrap distribution, against a
    plain-Python enumeration with the hand rank rule."""
    dice = [np.array([v]) for v in TABLE.values()]
    picks = np.array(list(itertools.product(range(4), repeat=4)))
    ones = [np.zeros((len(picks), 1), int)] * 3
    boot = bootstrap_means(dice, ["p0", "p1", "p2", "p3"], patient_picks=picks, seed_picks=ones)
    expected_ranks = []
    for pick in itertools.product(range(4), repeat=4):
        means = [sum(v[i] for i in pick) / 4 for v in TABLE.values()]
        assert boot[len(expected_ranks)] == pytest.approx(means)
        expected_ranks.append(_hand_rank(means))
    expected = np.mean(expected_ranks, axis=0)
    assert average_ranks(boot).mean(axis=0) == pytest.approx(expected)
    # the random bootstrap converges to the same numbers
    rand = average_ranks(bootstrap_means(dice, ["p0", "p1", "p2", "p3"], n_boot=20000, seed=3)).mean(axis=0)
    assert rand == pytest.approx(expected, abs=0.03)


def test_seeds_are_resampled_and_a_patients_cases_stay_together():
    # one case, two seeds 0.8 and 0.6: seed resamples (0,0) (0,1) (1,0) (1,1) give 0.8 0.7 0.7 0.6
    seed_picks = [np.array([[0, 0], [0, 1], [1, 0], [1, 1]])]
    out = bootstrap_means([np.array([[0.8], [0.6]])], ["p"], patient_picks=np.zeros((4, 1), int), seed_picks=seed_picks)
    assert out[:, 0] == pytest.approx([0.8, 0.7, 0.7, 0.6])
    # MRI: T1 and T2 of a patient are drawn together; drawing patient 0 twice = mean of its two cases
    dice = [np.array([[0.9, 0.7, 0.2, 0.4]])]
    picks = np.array([[0, 0], [1, 1], [0, 1]])
    out = bootstrap_means(dice, ["p0", "p0", "p1", "p1"], patient_picks=picks, seed_picks=[np.zeros((3, 1), int)])
    assert out[:, 0] == pytest.approx([0.8, 0.3, 0.55])
    assert bootstrap_means(dice, ["p0", "p0", "p1", "p1"], n_boot=50).tolist() == \
        bootstrap_means(dice, ["p0", "p0", "p1", "p1"], n_boot=50).tolist()  # seeded


def test_holm_on_known_p_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([0.02]) == [0.02]


def test_rank_frequencies_and_noise_floor():
    freq = rank_frequencies(np.array([[1.0, 2.0], [1.5, 1.5], [2.0, 1.0], [1.0, 2.0]]))
    assert freq.tolist() == [[0.625, 0.375], [0.375, 0.625]]
    n = noise_floor({"a": [0.8, 0.9], "b": [0.5, 0.7], "single": [0.6]})
    assert n["std"]["a"] == pytest.approx(math.sqrt(0.005)) and math.isnan(n["std"]["single"])
    assert n["mean_seed_std"] == pytest.approx((math.sqrt(0.005) + math.sqrt(0.02)) / 2)
    assert n["between_variants_std"] == pytest.approx(np.std([0.85, 0.6, 0.6], ddof=1))


# --- the leaderboard sections -----------------------------------------------------------------------

def write_run(root, variant, modality, seed, dice=None, status="ok", suite="paper", extra=None, patients=None,
              converged=True):
    run = root / suite / f"{variant}__{modality}__seed{seed}"
    run.mkdir(parents=True)
    record = {"status": status, "suite": suite, "variant": variant, "label": LABELS.get(variant, variant),
              "modality": modality, "seed": seed, "started": "2026-12-01T00:00:00", "finished": "2026-12-01T00:10:00",
              "command": "liverbench run --suite paper", "git_commit": "abc123", "device": "Test CPU",
              "entry": list(LABELS).index(variant) if variant in LABELS else 9, **(extra or {})}
    if status == "ok":
        cases = [f"{modality}_{i}" for i in range(len(dice))]
        with (run / "per_case.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["case", "patient", "dice"])
            for i, (case, d) in enumerate(zip(cases, dice)):
                w.writerow([case, patients[i] if patients else case, d])
        record["metrics"] = {"dice": float(np.mean(dice)), "failed": 0}
        record["timing"] = {"volume_ms": 1000.0 + 100 * len(variant)}
        if converged is not None:  # verdicts compare converged runs only; None: an old record without budget
            record.setdefault("budget", {"converged": converged})
    else:
        record["error"] = "RuntimeError: boom"
    (run / "result.json").write_text(json.dumps(record))


def _section(text: str, title: str) -> str:
    return text.split(title, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def _cells(text: str, first: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {first}"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_rank_table_probability_and_sentence(tmp_path):
    for v, d in TABLE.items():
        write_run(tmp_path, v, "ct", 0, d)
    # MRI: Bee beats the baseline on every case (P = 1), Cee loses on every case (P = 0); 8 cases of 4 patients
    base = [0.80, 0.82, 0.70, 0.75, 0.90, 0.85, 0.78, 0.81]
    patients = [f"p{i // 2}" for i in range(8)]
    for seed in (0, 1):
        write_run(tmp_path, "unet_baseline", "mri", seed, [x + 0.01 * seed for x in base], patients=patients)
        write_run(tmp_path, "b", "mri", seed, [x + 0.05 + 0.01 * seed for x in base], patients=patients)
        write_run(tmp_path, "c", "mri", seed, [x - 0.1 for x in base], patients=patients)
    write_run(tmp_path, "d", "mri", 0, status="failed")
    write_run(tmp_path, "c", "mri", 2, status="failed")
    out = tmp_path / "leaderboard.md"
    assert main(["--results", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()

    ct = _section(text, "### CT\n")
    assert "4 test cases from 4 patients." in ct
    # observed ranks by mean DSC: Base and Bee tie (0.75) -> 1.5 each, Cee 3; frequencies sum to 100 %
    for label, rank in (("Base (baseline)", "1.5"), ("Bee", "1.5"), ("Cee", "3.0")):
        cells = _cells(ct, label + " |")
        assert cells[3] == rank
        assert sum(float(c) for c in cells[6:9]) == pytest.approx(100.0, abs=0.2)
    assert "no difference from Base holds at 95 % (Holm-corrected Wilcoxon); Bee, Cee within noise." in ct

    mri = _section(text, "### MRI\n")
    assert "8 test cases from 4 patients." in mri
    bee, cee = _cells(mri, "Bee |"), _cells(mri, "Cee |")
    assert bee[2].endswith("†") and cee[2].endswith("†")  # 8 cases: Wilcoxon p = 0.0078, Holm over 2 -> 0.0156
    assert bee[9] == "1.000" and cee[9] == "0.000"  # P(beats baseline): always / never
    assert bee[3] == "1.0" and cee[3] == "3.0" and bee[6] == "100.0" and cee[8] == "100.0"
    assert bee[5] == "[1, 1]" and cee[5] == "[3, 3]"
    assert "Not ranked: d: no successful run; failed seed(s) 0, see Failed runs." in mri
    assert "Cee: ranked on seed(s) 0, 1; seed(s) 2 failed (see Failed runs)." in mri
    # noise floor: seeds of Base and Bee differ by 0.01 on every case, Cee's seeds are equal
    assert "std over seeds of a variant's mean DSC " + f"{np.mean([0.01 / math.sqrt(2)] * 2 + [0.0]):.4f}" in mri

    wil = _section(text, "## Paired Wilcoxon")
    from scipy.stats import wilcoxon

    p = wilcoxon(np.array(base) + 0.055, np.array(base) + 0.005).pvalue
    row = _cells(wil, "Bee | MRI")
    assert row[2:] == ["8", "+0.0500", "0", f"{p:.3f}", f"{min(1.0, 2 * p):.3f}", "yes†"]
    assert "Bee is better than Base" in mri and "Cee is worse than Base" in mri
    assert _cells(text.split("## Ranking")[0], "Bee |")[5] == f"{np.mean(base) + 0.055:.4f} ± 0.0071†"  # Table 1
    assert (tmp_path / "leaderboard_ranks.png").is_file() and "(leaderboard_ranks.png)" in text


def test_budget_and_overrides_render_with_na_for_old_records(tmp_path):
    budget = {"unit": "samples", "steps": 400, "samples_per_step": 8, "samples": 3200, "seconds": 612.5,
              "limit": {"steps": 400}, "val_dice": [0.5, 0.7, 0.8], "still_improving": True,
              "rule": {"stop": True, "min_points": 5, "window": 1 / 3, "min_delta": 0.005},
              "curve": [{"step": 100 * i, "seconds": 10.0 * i, "val_dice": d, "lr": lr}  # x0.1 at the last point
                        for i, (d, lr) in enumerate(zip((0.5, 0.7, 0.8), (1e-3, 1e-3, 1e-4)))]}
    overrides = [{"key": "model.init_args.lr", "entry": 1e-4, "used": 1e-3, "source": "preset cpu"},
                 {"key": "trainer.max_steps", "entry": None, "used": 400, "source": "preset cpu (forced)"}]
    for seed, secs, improving, reason in ((0, 600.0, True, "max_steps"), (1, 625.0, False, "plateau")):
        validating = {"validation_seconds": 150.0} if seed == 0 else {}  # seed 1: recorded before the field existed
        write_run(tmp_path, "unet_baseline", "ct", seed, [0.9, 0.8], extra={
            "budget": {**budget, "seconds": secs, "still_improving": improving, "converged": reason == "plateau",
                       "stop_reason": reason, **validating}, "overrides": overrides,
            "test_set": {"name": "phantom_test", "n_patients": 2, "n_cases": 2, "split_seed": 0, "fixed": True}})
    write_run(tmp_path, "b", "ct", 0, [0.7, 0.8], converged=None)  # an older record: no budget, no overrides
    out = tmp_path / "lb.md"
    assert main(["--results", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    section = text.split("## Training budget")[1].split("\n## ")[0]
    assert _cells(section, "Base |") == ["Base", "2", "400 × 8 = 3200", "samples", "steps 400",
                                         "**no** (1 of 2 seeds)", "max_steps at 400; plateau at 400",
                                         "**yes** (1 of 2 seeds)", "612.5 ± 17.7", "25%"]
    assert _cells(section, "Bee |") == ["Bee", "1"] + ["n/a"] * 8
    assert "the best validation Dice of the last 33% of them beats the best before by less than 0.005" in section
    assert (tmp_path / "lb_curves.png").is_file() and "(lb_curves.png)" in section
    # Bee has no convergence record and one Base seed did not converge: no verdict between them
    ct = _section(text, "### CT\n")
    assert "**CT**: no verdict. No verdict where a run did not converge (Base, Bee)" in ct
    ov = _section(text, "## Overrides")
    assert _cells(ov, "Base | CT | `model") == ["Base", "CT", "`model.init_args.lr`", "`0.0001`", "`0.001`",
                                                 "preset cpu", "0, 1"]
    assert _cells(ov, "Base | CT | `trainer")[3:6] == ["not set", "`400`", "preset cpu (forced)"]
    assert "n/a (not recorded) for: Bee CT." in ov
    assert "- Test set: phantom_test (2 patients, 2 cases, split seed 0)" in text


def test_a_new_metric_entry_reaches_csv_report_and_progress(tmp_path, monkeypatch):
    """One Metric entry (here: relative volume difference) and nothing else: it is computed per case, is a
    per-case CSV column, a Table 1 column in its own format, and a progress-table column."""
    from rich.console import Console

    from benchmark.run import records
    from benchmark.run.progress import summary_table

    rvd = schema.Metric("rvd", lambda c: (c.tp + c.fp) / (c.tp + c.fn) - 1.0, "mean", ".3f", "test/rvd", "min")
    fake = (*schema.METRICS, rvd)
    monkeypatch.setattr(schema, "METRICS", fake)
    monkeypatch.setattr(schema, "METRIC_KEYS", tuple(m.name for m in fake))
    monkeypatch.setattr(schema, "METRIC_BY_NAME", {m.name: m for m in fake})
    monkeypatch.setattr(records, "METRICS", schema.METRIC_KEYS)  # records.py binds the key list at import

    gt = np.zeros((8, 8, 4), bool)
    gt[2:6, 2:6, 1:3] = True
    pred = gt.copy()
    pred[6, 2:6, 1:3] = True  # 8 extra voxels on 32: rvd = 40/32 - 1 = 0.25
    row = schema.case_metrics(pred, gt)
    assert row["rvd"] == pytest.approx(0.25)
    run = tmp_path / "paper" / "unet_baseline__ct__seed0"
    run.mkdir(parents=True)
    records.write_per_case(run, [{"case": "c0", "patient": "c0", **row}])
    header = (run / "per_case.csv").read_text().splitlines()[0].split(",")
    assert "rvd" in header
    summary = schema.summarise([row])
    record = {"status": "ok", "suite": "paper", "variant": "unet_baseline", "modality": "ct", "seed": 0,
              "metrics": {k: v for k, v in summary.items() if k != "convention"}, "timing": {"volume_ms": 10.0}}
    (run / "result.json").write_text(json.dumps(records.json_safe(record)))
    out = tmp_path / "lb.md"
    assert main(["--results", str(tmp_path), "--out", str(out)]) == 0
    table1 = out.read_text().split("## Ranking")[0]
    header_cells = _cells(table1, "Variant |")
    assert "CT rvd" in header_cells
    assert _cells(table1, "unet_baseline |")[header_cells.index("CT rvd")] == "0.250"

    console = Console(width=300, record=True)
    console.print(summary_table([record]))
    printed = console.export_text()
    assert "rvd" in printed and "0.250" in printed


def test_wandb_summary_run_has_the_rank_table_and_dice_vs_time(tmp_path, monkeypatch):
    from wandb_offline import find_offline_runs

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    base = [0.80, 0.82, 0.70, 0.75, 0.90, 0.85, 0.78, 0.81]
    write_run(tmp_path, "unet_baseline", "ct", 0, base)
    write_run(tmp_path, "b", "ct", 0, [x + 0.05 for x in base])
    write_run(tmp_path, "c", "ct", 0, status="failed")
    assert main(["--results", str(tmp_path), "--out", str(tmp_path / "lb.md"), "--wandb", "offline"]) == 0
    text = (tmp_path / "lb.md").read_text()
    (run,) = [r for r in find_offline_runs(tmp_path / "paper" / "wandb") if r.job_type == "summary"]
    ranking = run.table("ranking")
    rows = {row[ranking["columns"].index("variant")]: dict(zip(ranking["columns"], row)) for row in ranking["data"]}
    assert sorted(rows) == ["b", "unet_baseline"]  # the failed variant is not ranked
    b = rows["b"]
    assert b["rank"] == 1.0 and b["p_beats_baseline"] == 1.0 and b["significant"] is True
    assert b["rank_1_pct"] == 100.0 and rows["unet_baseline"]["p_beats_baseline"] is None
    assert f"{b['dice']:.4f}†" in _cells(_section(text, "### CT\n"), "Bee |")[2]  # the same numbers as the leaderboard
    assert b["p_holm"] == pytest.approx(b["p"]) and f"{b['p']:.3f}" in _cells(text, "Bee | CT")[5]
    scatter = run.table("dice_vs_time_table")
    assert scatter["columns"][-4:] == ["dice", "ci_low", "ci_high", "significant"]
    for row in scatter["data"]:
        d, lo, hi = row[-4:-1]
        assert lo <= d <= hi
    assert run.images(), "the Dice-vs-time figure is logged as an image"
    assert len(run.table("leaderboard")["data"]) == 3  # failed runs too
