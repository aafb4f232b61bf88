"""Lightning's own DDP: 2 CPU processes; validation metrics are synchronised across ranks."""
from __future__ import annotations

import json
import math

import lightning as L
import pytest

import models
from models.base import overlap_scores
from test_models import TinyVolumeDataModule


class RecordValidation(L.Callback):
    """Each rank writes the cases it validated, their Dice and the logged (synchronised) val/dice."""

    def __init__(self, out_dir: str):
        self.out_dir, self.cases = out_dir, {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        pred = pl_module.predict_volume(batch["image"]).argmax(1)
        self.cases[batch["case"][0]] = float(overlap_scores(pred, batch["label"][:, 0] > 0.5)["dice"])

    def on_validation_end(self, trainer, pl_module):
        record = {"rank": trainer.global_rank, "world": trainer.world_size, "cases": self.cases,
                  "val/dice": float(trainer.callback_metrics["val/dice"])}
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
    assert records[0]["val/dice"] == records[1]["val/dice"]  # the same value on both ranks
    all_cases = {**records[0]["cases"], **records[1]["cases"]}
    assert math.isclose(records[0]["val/dice"], sum(all_cases.values()) / 4, rel_tol=1e-5)
