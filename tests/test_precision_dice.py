"""tools.speed.precision_dice: fp32 vs bf16 training compared at the same step count, on known records."""
from __future__ import annotations

import json

import pytest

from tools.speed import precision_dice


def _record(root, variant, seed, val, test, steps=200, seconds=100.0, status="ok"):
    folder = root / "paper" / f"{variant}__ct__seed{seed}"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({
        "status": status, "variant": variant, "modality": "ct", "seed": seed, "metrics": {"dice": test},
        "budget": {"steps": steps, "seconds": seconds, "val_dice": [0.1, val]}}))


def test_fp32_inside_two_std_of_the_bf16_seeds_is_within_noise(tmp_path, capsys):
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    _record(fp32, "unet", 0, val=0.80, test=0.85, seconds=150)
    _record(fp32, "cnn3d", 0, val=0.50, test=0.85)
    _record(fp32, "other_steps", 0, val=0.5, test=0.5, steps=100)  # not the same step count: skipped
    for seed, (val, test) in enumerate([(0.78, 0.84), (0.80, 0.86), (0.82, 0.85)]):  # val mean 0.80, std 0.02
        _record(bf16, "unet", seed, val, test, seconds=75)
        _record(bf16, "cnn3d", seed, val - 0.2, test)  # val mean 0.60: 0.50 is 5 std away
        _record(bf16, "other_steps", seed, val, test)
    _record(bf16, "unet", 3, val=0.0, test=0.0, status="failed")  # failed runs do not count
    rows = {r["variant"]: r for r in precision_dice.compare(precision_dice.final_scores(fp32),
                                                            precision_dice.final_scores(bf16))}
    assert sorted(rows) == ["cnn3d", "unet"]
    unet = rows["unet"]
    assert unet["seeds"] == 3 and unet["steps"] == 200
    assert unet["val"]["bf16_mean"] == pytest.approx(0.80) and unet["val"]["bf16_std"] == pytest.approx(0.02)
    assert unet["val"]["within_noise"] and unet["test"]["within_noise"]
    assert unet["fit_s"] == {"fp32": 150, "bf16": 75}
    assert not rows["cnn3d"]["val"]["within_noise"] and rows["cnn3d"]["test"]["within_noise"]
    assert precision_dice.main(["--fp32", str(fp32), "--bf16", str(bf16)]) == 0
    assert "val Dice within noise for 1 of 2" in capsys.readouterr().out
    assert precision_dice.main(["--fp32", str(fp32), "--bf16", str(tmp_path / "none")]) == 1
