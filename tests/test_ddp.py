"""DDP with 2 CPU processes (gloo): synchronised validation metrics; the runner's fit -> test -> record."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import lightning as L
import pytest
import yaml

import models
from benchmark.run import records
from models.base import overlap_scores
from test_models import TinyVolumeDataModule
from test_runner import REPO, TINY_UNET, blobs, write_suite  # noqa: F401
from wandb_offline import find_offline_runs


class RecordValidation(L.Callback):
    """Each rank writes the cases it validated, their Dice and the logged (synchronised) val/dice_grid."""

    def __init__(self, out_dir: str):
        self.out_dir, self.cases = out_dir, {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        pred = pl_module.predict_volume(batch["image"]).argmax(1)
        self.cases[batch["case"][0]] = float(overlap_scores(pred, batch["label"][:, 0] > 0.5)["dice"])

    def on_validation_end(self, trainer, pl_module):
        record = {"rank": trainer.global_rank, "world": trainer.world_size, "cases": self.cases,
                  "val/dice_grid": float(trainer.callback_metrics["val/dice_grid"])}
        with open(f"{self.out_dir}/rank{trainer.global_rank}.json", "w") as fh:
            json.dump(record, fh)


@pytest.mark.timeout(300)
def test_ddp_two_cpu_processes_log_the_same_synchronised_val_dice(tmp_path):
    L.seed_everything(0)
    model = models.create_model("unet2d", features=4, depth=2, lr=1e-3)
    dm = TinyVolumeDataModule(dims=2, train_cases=1, val_cases=4, shape=(16, 16, 6), batch_size=4)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, limit_train_batches=2,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[RecordValidation(str(tmp_path))], default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)

    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in records] == [2, 2]
    seen = [set(r["cases"]) for r in records]
    assert seen[0] and seen[1] and not seen[0] & seen[1], "each rank validates its own share of the cases"
    assert seen[0] | seen[1] == {"case1", "case2", "case3", "case4"}
    assert records[0]["val/dice_grid"] == records[1]["val/dice_grid"]  # the same value on both ranks
    all_cases = {**records[0]["cases"], **records[1]["cases"]}
    assert math.isclose(records[0]["val/dice_grid"], sum(all_cases.values()) / 4, rel_tol=1e-5)



@pytest.mark.slow
@pytest.mark.timeout(600)
def test_runner_ddp_two_cpu_processes_fit_test_record_once(blobs, tmp_path):
    """`liverbench run` with a preset asking for `devices: 2, strategy: ddp` (gloo on CPU): Lightning's
    launcher starts rank 1 as a second `liverbench run`; both train, only rank zero tests, times, logs
    to W&B and writes the record (the fast check of that gating is in test_shard.py)."""
    preset = yaml.safe_load((REPO / "benchmark" / "presets" / "cpu.yaml").read_text())
    preset.update(name="ddp2")
    preset["trainer"].update(devices=2, strategy="ddp")
    (tmp_path / "ddp2.yaml").write_text(yaml.safe_dump(preset))
    suite = write_suite(tmp_path / "suite", "ddp", {"unet": TINY_UNET})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmark.cli", "run", "--suite", str(suite), "--data", str(blobs),
           "--modalities", "ct", "--preset", str(tmp_path / "ddp2.yaml"), "--out", str(out), "--wandb", "offline"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.communicate(timeout=540)[0]
    assert proc.returncode == 0, output
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output  # a real second rank joined the fit
    assert output.count("LiverBench: suite ddp") == 1  # the summary table: rank zero only
    folder = records.run_dir(out, "ddp", "unet", "ct", 0)
    record = json.loads((folder / "result.json").read_text())
    assert record["status"] == "ok", record.get("error")
    assert record["world_size"] == 2 and record["pid"] == proc.pid  # written by rank zero
    assert record["config"]["trainer"]["strategy"] == "ddp" and record["config"]["trainer"]["devices"] == 2
    rows = list(csv.DictReader((folder / "per_case.csv").open()))
    split = json.loads((folder / "split.json").read_text())
    assert [r["case"] for r in rows] == split["test"] and rows  # every test case once, on rank zero
    assert record["timing"]["volume_ms"] > 0 and record["checkpoint"]["selected_by"] == "val/dice_grid"
    (run,) = find_offline_runs(folder)  # one W&B run: rank zero's
    assert run.summary["test/dice"] == pytest.approx(record["metrics"]["dice"])
    assert [r for r in find_offline_runs(out / "ddp" / "wandb") if r.job_type == "summary"]
    assert not list((out / ".locks").rglob("*.lock"))
