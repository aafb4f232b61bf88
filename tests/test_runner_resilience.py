"""Runner resilience (issue 11 item 5): NaN training fails the run, checkpoints are atomic, finished
runs are never cleared, unwritable results folders and bad arguments give `error: <path>: <problem>`."""
from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from benchmark.run import records, runner
from benchmark.run.stages.guards import AtomicCheckpointIO, FiniteGuard, NonFiniteError
from common.files import DataError


class _Tiny(L.LightningModule):
    def __init__(self, poison_at: int | None = None, poison_weights: bool = False):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.poison_at, self.poison_weights = poison_at, poison_weights

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        if self.poison_at is not None and batch_idx >= self.poison_at:
            loss = loss * float("nan")
        return loss

    def on_train_epoch_end(self):
        if self.poison_weights:
            with torch.no_grad():
                self.layer.weight[0, 0] = float("inf")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.ones(8, 2))
        return torch.utils.data.DataLoader(data, batch_size=2)


def _trainer(tmp_path):
    return L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, accelerator="cpu", callbacks=[FiniteGuard()],
                     default_root_dir=str(tmp_path))


def test_non_finite_loss_or_weights_end_training(tmp_path):
    with pytest.raises(NonFiniteError, match=r"non-finite training loss \(nan\) at batch 2 of epoch 0"):
        _trainer(tmp_path).fit(_Tiny(poison_at=2))
    with pytest.raises(NonFiniteError, match="non-finite weights in layer.weight (after epoch 0|at the end of training)"):
        _trainer(tmp_path).fit(_Tiny(poison_weights=True))
    _trainer(tmp_path).fit(_Tiny())  # a finite run is untouched


def test_checkpoint_io_is_atomic(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "model.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, target)
    before = target.read_bytes()
    with pytest.raises(Exception):
        io.save_checkpoint({"w": torch.zeros(3), "bad": lambda: 0}, target)  # fails while pickling
    assert target.read_bytes() == before  # the old checkpoint survives, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]  # no temp file left


def test_finished_or_unreadable_run_is_never_cleared(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.ckpt").write_bytes(b"weights")
    (folder / "result.json").write_text(json.dumps({"status": "ok"}))
    with pytest.raises(DataError, match=r"result\.json: run already finished"):
        records.prepare_run_dir(folder)
    (folder / "result.json").write_text("{half a rec")
    with pytest.raises(DataError, match=r"result\.json: unreadable run record; the run's files are kept"):
        records.prepare_run_dir(folder)
    assert (folder / "model.ckpt").read_bytes() == b"weights"
    (folder / "result.json").write_text(json.dumps({"status": "failed"}))
    assert records.prepare_run_dir(folder) == folder and not any(folder.iterdir())  # a failed run restarts clean


def test_bad_seeds_and_unwritable_out_are_clear_errors(tmp_path, capsys):
    assert runner.main(["--suite", "smoke", "--seeds", "abc", "--out", str(tmp_path / "r"), "--wandb", "disabled"]) == 2
    assert "error: --seeds: expected comma-separated integers" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "results"
    assert runner.main(["--suite", "smoke", "--modalities", "ct", "--out", str(out), "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err
    assert f"error: {out}" in err and "Not a directory" in err
    assert blocker.read_text() == "not a folder"
