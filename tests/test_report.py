"""`liverbench report` on synthetic result folders with known per-case values."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import stats as sps

from benchmark.report import main
from benchmark.report.stats import bootstrap_ci, mean_std, paired_wilcoxon, pareto_front

CASES = {"ct": [f"ct_{i}" for i in range(8)], "mri": [f"p{i}_{s}" for i in range(4) for s in ("t1", "t2")]}
VARIANTS = {"unet_baseline": ("U-Net Baseline", 0.80, 2000.0), "unet3d": ("3D CNN", 0.86, 5000.0)}


def _dice(variant, modality, seed):
    """Deterministic per-case Dice: a variant offset, a case pattern and a small seed effect."""
    base = VARIANTS[variant][1] + (0.02 if modality == "ct" else 0.0)
    return [round(base + 0.01 * ((3 * i) % 5) + 0.004 * seed * (i % 2) + (0.003 * i if variant == "unet3d" else 0), 4)
            for i in range(len(CASES[modality]))]


def _write_run(root, variant, modality, seed, status="ok", started="2026-11-24T04:00:00", suite="paper"):
    label, _, ms = VARIANTS.get(variant, (variant, 0, 0))
    run = root / suite / f"{variant}__{modality}__seed{seed}"
    run.mkdir(parents=True)
    record = {"status": status, "error": None, "suite": suite, "variant": variant, "label": label,
              "model": "unet", "modality": modality, "seed": seed, "preset": "cpu", "data": "phantom",
              "started": started, "finished": started, "device": "Test CPU (2 cores)", "git_commit": "abc123",
              "command": "liverbench run --suite paper", "params": 1_234_567, "flops": 5e9}
    if status != "ok":
        record["error"] = "RuntimeError: out of memory | in predict"
    else:
        dice = _dice(variant, modality, seed)
        with (run / "per_case.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["case", "dice", "jaccard", "precision", "recall", "hd95", "assd", "failed", "patient"])
            for case, d in zip(CASES[modality], dice):
                w.writerow([case, d, d / (2 - d), d, d, "nan" if d < 0 else 3.0, 1.0, 0, case.split("_")[0] if modality == "mri" else case])
        record["metrics"] = {"dice": float(np.mean(dice)), "jaccard": 0.7, "precision": 0.9, "recall": 0.85,
                             "hd95": 4.0 + seed, "assd": 1.0, "failed": 0}
        record["timing"] = {"volume_ms": ms + 100 * seed, "volume_ms_iqr": 5.0, "model_volume_ms": ms / 2,
                            "slice_ms": 3.0 if variant == "unet_baseline" else None, "device": "Test CPU (2 cores)",
                            "precision": "fp32", "batch_size": 1, "peak_memory_mb": 900.0, "repeats": 5}
    (run / "result.json").write_text(json.dumps(record))


@pytest.fixture
def results(tmp_path):
    for i, variant in enumerate(["unet3d", "unet_baseline"]):  # baseline must still come first
        for modality in ("ct", "mri"):
            for seed in (0, 1):
                _write_run(tmp_path, variant, modality, seed, started=f"2026-11-24T04:0{i}:00")
    _write_run(tmp_path, "resnet_tl", "ct", 0, status="failed")
    return tmp_path


def _row(text, label):
    return next(line for line in text.splitlines() if line.startswith(f"| {label} |"))


def test_leaderboard_numbers(results, capsys):
    out = results / "leaderboard.md"
    assert main(["--results", str(results), "--out", str(out)]) == 0
    text = out.read_text()
    assert "do not edit by hand" in text and "Test CPU (2 cores)" in text and "liverbench run --suite paper" in text

    # Table 1: mean ± std over the two seeds of each run's Dice, CT then MRI, then seconds per volume
    row = _row(text.split("## Ranking")[0], "U-Net Baseline")
    ct = [np.mean(_dice("unet_baseline", "ct", s)) for s in (0, 1)]
    assert f"{np.mean(ct):.4f} ± {np.std(ct, ddof=1):.4f}" in row  # the schema's format for dice
    assert row.rstrip(" |").endswith("2.05 ± 0.07 | 2.05 ± 0.07")  # (2000 ms, 2100 ms) -> s
    assert text.index("| U-Net Baseline |") < text.index("| 3D CNN |")
    assert "| **Paper (quoted, not measured)** | 0.89–0.94 |" in text and "| 2.4–3.0 | 2.4–3.0 |" in text

    # CI over patients: per-case Dice averaged over seeds, MRI cases of one patient resampled together
    per_case = np.mean([_dice("unet3d", "mri", s) for s in (0, 1)], axis=0)
    patients = [c.split("_")[0] for c in CASES["mri"]]
    lo, hi = bootstrap_ci(per_case, patients)
    acc = _row(text.split("### Accuracy")[1], "3D CNN | MRI")
    assert f"[{lo:.4f}, {hi:.4f}] (n=4)" in acc and lo < per_case.mean() < hi

    # Paired Wilcoxon vs scipy on the same cases
    for modality, name in (("ct", "CT"), ("mri", "MRI")):
        x = np.mean([_dice("unet3d", modality, s) for s in (0, 1)], axis=0)
        y = np.mean([_dice("unet_baseline", modality, s) for s in (0, 1)], axis=0)
        expected = sps.wilcoxon(x, y)
        wrow = _row(text.split("## Paired Wilcoxon")[1], f"3D CNN | {name}")
        assert f"| 8 | {np.mean(x - y):+.4f} | {expected.statistic:g} | {expected.pvalue:.3f} |" in wrow

    # failed run listed with its error; PNG written and linked
    assert "resnet_tl" in text and "RuntimeError: out of memory \\| in predict" in text
    png = results / "leaderboard_pareto.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(leaderboard_pareto.png)" in text
    assert "wrote" in capsys.readouterr().out


def test_report_twice_gives_identical_bytes(results, tmp_path):
    """The same results and command give byte-identical leaderboard.md and figures (no date, no PNG metadata)."""
    out = results / "lb" / "leaderboard.md"
    out.parent.mkdir()
    files = ("leaderboard.md", "leaderboard_pareto.png", "leaderboard_ranks.png")
    outputs = []
    for _ in range(2):
        assert main(["--results", str(results), "--out", str(out)]) == 0
        outputs.append({f: (out.parent / f).read_bytes() for f in files})
        for f in files:
            (out.parent / f).unlink()
    assert outputs[0] == outputs[1]
    for f in files[1:]:
        assert outputs[0][f][:8] == b"\x89PNG\r\n\x1a\n" and b"Matplotlib" not in outputs[0][f]
    assert "Command: `liverbench report --results" in outputs[0]["leaderboard.md"].decode()


def test_several_suites_are_kept_apart(results):
    _write_run(results, "unet_baseline", "ct", 0, suite="smoke", started="2026-11-23T10:00:00")
    out = results / "lb.md"
    assert main(["--results", str(results), "--out", str(out)]) == 0
    table1 = out.read_text().split("## Ranking")[0]
    smoke = _row(table1, "U-Net Baseline [smoke]")
    assert f"{np.mean(_dice('unet_baseline', 'ct', 0)):.4f} |" in smoke  # one seed: no ± std
    assert table1.index("[smoke]") < table1.index("U-Net Baseline [paper]") < table1.index("3D CNN [paper]")
    text = out.read_text()  # each suite ranked on its own; the smoke suite has only its baseline
    assert "### CT [smoke]\n\n**CT [smoke]**: only the baseline U-Net Baseline [smoke] has results" in text
    assert text.index("### CT [smoke]") < text.index("### CT [paper]") < text.index("### MRI [paper]")


def test_errors(tmp_path, capsys):
    assert main(["--results", str(tmp_path / "missing")]) == 2
    assert "results folder not found" in capsys.readouterr().err
    assert main(["--results", str(tmp_path), "--out", str(tmp_path / "x.md")]) == 2
    assert "no result.json" in capsys.readouterr().err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "result.json").write_text("{broken")
    assert main(["--results", str(tmp_path), "--out", str(tmp_path / "x.md")]) == 0
    assert "unreadable result.json" in (tmp_path / "x.md").read_text()


def test_bootstrap_ci_against_scipy_and_edge_cases():
    rng = np.random.default_rng(1)
    values = rng.normal(0.9, 0.03, size=30)
    lo, hi = bootstrap_ci(values, n_boot=20000)
    ref = sps.bootstrap((values,), np.mean, method="percentile", n_resamples=20000, random_state=0).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.002) and hi == pytest.approx(ref.high, abs=0.002)
    assert bootstrap_ci(values) == bootstrap_ci(values)  # seeded
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    # grouped: two identical cases per patient give the same CI as one case per patient
    g_lo, g_hi = bootstrap_ci(np.repeat(values[:10], 2), np.repeat(np.arange(10), 2))
    assert (g_lo, g_hi) == pytest.approx(bootstrap_ci(values[:10]))


def test_stats_helpers():
    assert mean_std([1.0, 3.0])[:2] == (2.0, pytest.approx(np.sqrt(2)))
    assert np.isnan(mean_std([1.0])[1]) and mean_std([float("nan")])[2] == 0
    same = paired_wilcoxon({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0, "c": 0.0})
    assert same["n"] == 2 and same["p"] == 1.0
    assert paired_wilcoxon({"a": 1.0}, {"b": 1.0}) is None
    assert pareto_front([1, 2, 3, 2], [0.8, 0.9, 0.85, 0.7]) == [True, True, False, False]


def test_a_malformed_record_is_flagged_and_counted_as_failed(results, capsys):
    """Issue 27, item 5: `"metrics": "oops"` is not ok: counted failed, listed with its problem, warned
    about, and its per_case.csv is neither ranked nor tested."""
    path = results / "paper" / "unet3d__ct__seed1" / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "metrics": "oops"}))
    out = results / "leaderboard.md"
    assert main(["--results", str(results), "--out", str(out)]) == 0
    text = out.read_text()
    err = capsys.readouterr().err
    assert f"warning: {path}: `metrics` must be a mapping with at least dice, got 'oops'; counted as failed" in err
    assert "(7 ok, 2 failed)" in text
    failed = text.split("## Failed runs")[1]
    assert "`unet3d__ct__seed1`" in failed and "malformed result.json: `metrics` must be a mapping" in failed
    acc = _row(text.split("### Accuracy")[1], "3D CNN | CT")
    assert acc.startswith("| 3D CNN | CT | 1 |")  # one seed left: ranked and tested from seed 0 alone


def test_report_into_a_read_only_or_missing_folder_names_the_output(results, tmp_path, capsys, monkeypatch):
    """Issue 27, item 6: no traceback for an I/O condition; the message names --out, not a temp file."""
    import errno
    import os

    out = results / "ro" / "leaderboard.md"
    out.parent.mkdir()
    real_fsync = os.fsync

    def full(fd):  # the disk fills up as the leaderboard is flushed
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert main(["--results", str(results), "--out", str(out)]) == 2
    assert f"error: {out}: No space left on device" in capsys.readouterr().err
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(out.parent.iterdir()) == []  # no temp file left
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--results", str(results), "--out", str(blocker / "leaderboard.md")]) == 2
    assert f"error: {blocker / 'leaderboard.md'}: " in capsys.readouterr().err
