"""W&B logging: mode choice, and what an offline run really contains (read back from `.wandb`)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from benchmark.tracking import wandb_logging as wl
from benchmark.tracking.overlays import overlay_image
from wandb_offline import find_offline_runs, iter_records


def _record(variant="unet_baseline", modality="ct", dice=0.93, volume_ms=812.0, status="ok"):
    return {
        "status": status, "suite": "smoke", "variant": variant, "model": "unet2d", "modality": modality,
        "seed": 0, "preset": "cpu", "data": "phantom", "config": {"model": {"init_args": {"lr": 1e-3}}},
        "metrics": {"dice": dice, "jaccard": 0.87, "precision": 0.95, "recall": 0.91, "hd95": 4.5,
                    "assd": 1.25, "failed": 0},
        "timing": {"volume_ms": volume_ms, "slice_ms": 3.5, "model_volume_ms": 400.0},
        "params": 1234, "flops": 5678,
    }


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc-absent"))


def test_importing_wandb_logging_leaves_lightning_and_torch_unimported():
    """The W&B module is imported where no model is trained (mode checks, the report's summary run): it
    must not pull Lightning or torch in, e.g. through a helper imported from models.base."""
    code = ("import sys, benchmark.tracking.wandb_logging; "
            "print(sorted(m for m in ('lightning', 'torch', 'models.base') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_mode_defaults_offline_without_key_and_online_with_one(no_key, monkeypatch, tmp_path):
    assert wl.resolve_mode(None) == "offline"
    assert wl.resolve_mode("disabled") == "disabled"
    with pytest.warns(UserWarning, match="no API key"):
        assert wl.resolve_mode("online") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wl.resolve_mode(None) == "disabled"
    assert wl.resolve_mode("offline") == "offline"  # the flag beats the environment
    monkeypatch.delenv("WANDB_MODE")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert wl.resolve_mode(None) == "online"
    with pytest.raises(ValueError, match="--wandb"):
        wl.resolve_mode("sometimes")


def test_disabled_mode_makes_no_logger(tmp_path):
    assert wl.make_logger("disabled", "p", "smoke", _record(), tmp_path) is None
    wl.log_suite_summary("disabled", "p", "smoke", [_record()], tmp_path)
    assert not any(tmp_path.iterdir())


def test_offline_run_holds_summary_table_images_and_config(tmp_path):
    record = _record()
    logger = wl.make_logger("offline", "liverbench-test", "smoke", record, tmp_path)
    logger.experiment.log({"val/dice_grid": 0.5})  # what Lightning logs during training
    gt = np.zeros((16, 12, 5), bool)
    gt[4:10, 3:8, 1:4] = True
    pred = np.roll(gt, 1, axis=0)
    image = np.random.default_rng(0).normal(size=gt.shape).astype(np.float32)
    per_case = [{"case": "ph_000", "dice": 0.9, "hd95": 1.0}, {"case": "ph_001", "dice": 0.8, "hd95": 2.0}]
    wl.log_result(logger, record, per_case, [overlay_image(image, pred, gt, "ph_000")])

    (run,) = find_offline_runs(tmp_path)
    assert (run.project, run.group, run.job_type) == ("liverbench-test", "smoke", "ct")
    assert set(run.tags) == {"unet2d", "unet_baseline"}
    assert run.config["variant"] == "unet_baseline" and run.config["config"]["model"]["init_args"]["lr"] == 1e-3
    expected = {"test/dice": 0.93, "test/jaccard": 0.87, "test/precision": 0.95, "test/recall": 0.91,
                "test/hd95": 4.5, "test/assd": 1.25, "time/volume_ms": 812.0, "time/slice_ms": 3.5,
                "params": 1234, "flops": 5678}
    for key, value in expected.items():
        assert run.summary[key] == pytest.approx(value), key
    assert run.history[0]["val/dice_grid"] == 0.5
    table = run.table("test/per_case")
    assert table["columns"] == ["case", "dice", "hd95"]
    assert table["data"] == [["ph_000", 0.9, 1.0], ["ph_001", 0.8, 2.0]]
    pngs = run.images()
    assert any(p.name.endswith(".mask.png") for p in pngs) and any(not p.name.endswith(".mask.png") for p in pngs)
    from PIL import Image

    base = next(p for p in pngs if not p.name.endswith(".mask.png"))
    assert Image.open(base).size == (16, 12)  # (X, Y) slice shown with X across
    assert run.exit_code == 0


def test_summary_run_has_leaderboard_and_scatter(tmp_path):
    records = [_record(), _record("unet3d_baseline", "mri", 0.88, 1500.0),
               _record("broken", "ct", None, None, status="failed")]
    wl.log_suite_summary("offline", "liverbench-test", "smoke", records, tmp_path)
    (run,) = find_offline_runs(tmp_path)
    assert run.job_type == "summary" and run.group == "smoke"
    board = run.table("leaderboard")
    assert board["columns"] == wl.LEADERBOARD_COLUMNS
    assert [row[0] for row in board["data"]] == ["unet_baseline", "unet3d_baseline", "broken"]
    scatter = run.table("accuracy_vs_time_table")
    assert sorted(scatter["data"]) == sorted([["unet_baseline", "ct", 812.0, 0.93],
                                              ["unet3d_baseline", "mri", 1500.0, 0.88]])


def test_reader_rejects_files_that_are_not_wandb_logs(tmp_path):
    bad = tmp_path / "run-x.wandb"
    bad.write_bytes(b"not a log at all")
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        list(iter_records(bad))
