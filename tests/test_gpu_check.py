"""GPU readiness without a GPU: the gpu preset's dry run on CPU and `make gpu-check DRY_RUN=1`."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from benchmark import gpu_check, plan, runner

REPO = Path(__file__).resolve().parents[1]


def test_every_paper_entry_builds_with_the_full_gpu_preset_on_cpu(tmp_path):
    """The gpu preset's own (non-smoke) layers, as a dry run: model, DataModule and Trainer are
    instantiated by the runner's LightningCLI for every paper variant (nothing is trained)."""
    runs = plan.plan_runs(plan.load_suite("paper"), plan.load_preset("gpu"), ["ct"], [0], "phantom",
                          tmp_path, dry_run=True)
    for spec in runs:
        config = plan.build_config(spec, spec.folder)
        t = config["trainer"]
        assert (t["accelerator"], t["devices"], t["precision"], t["max_steps"]) == ("cpu", 1, "bf16-mixed", 2)
        assert config["model"]["init_args"]["lr"] == 1e-4 and config["data"]["init_args"]["preset"] == "gpu"
        if config["model"]["init_args"].get("pretrained") == "imagenet":
            config["model"]["init_args"]["pretrained"] = "none"  # no ImageNet download on this machine
        model, datamodule, trainer = runner.instantiate(config, None, [], spec.folder)
        assert trainer.max_steps == 2 and datamodule.hparams.preset == "gpu"
        if config["data"]["init_args"]["dims"] == 3:
            assert list(datamodule.patch_size) == [128, 128, 128]  # the gpu preset's patch, kept


def test_gpu_check_dry_run_writes_its_report(tmp_path):
    """`make gpu-check DRY_RUN=1`: the gpu preset's smoke runs (dry run on CPU), predict timing per
    variant, training steps/s; JSON + markdown written; the Makefile calls exactly this."""
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "dry_run.json").read_text())
    s = report["sections"]
    assert report["dry_run"] and [s[k]["status"] for k in ("smoke", "predict", "training")] == ["ok"] * 3
    assert s["ddp_2gpu"]["status"] == "skipped"
    runs = s["smoke"]["runs"]
    assert set(runs) == {"unet_baseline__ct__seed0", "cnn3d__ct__seed0"}
    assert all(r["status"] == "ok" and r["precision"] == "bf16-mixed" for r in runs.values())
    assert set(s["predict"]["variants"]) == {"unet_baseline", "cnn3d"}
    assert all(v["volume_ms"] > 0 and v["model_volume_ms"] > 0 for v in s["predict"]["variants"].values())
    assert {m: r["steps_per_s"] > 0 for m, r in s["training"]["models"].items()} == {"unet2d": True, "unet3d": True}
    md = (tmp_path / "dry_run.md").read_text()
    assert "dry run on CPU" in md and "| unet_baseline | unet2d |" in md
    make = subprocess.run(["make", "-n", "gpu-check", "DRY_RUN=1"], cwd=REPO, capture_output=True, text=True)
    assert "-m benchmark.gpu_check --dry-run" in make.stdout, make.stdout + make.stderr
