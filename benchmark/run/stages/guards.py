"""Callbacks and checkpoint IO that keep a run honest: non-finite training ends the run as failed,
and every checkpoint Lightning writes is atomic (temp file + rename)."""
from __future__ import annotations

import math

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from common.files import atomic_path


class NonFiniteError(RuntimeError):
    """Training produced NaN/Inf: the run is recorded as failed with this reason."""


class FiniteGuard(Callback):
    """Stop at the first non-finite training loss, and check the weights after each epoch and
    before the final checkpoint: a NaN model must never be recorded as `ok`."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteError(f"non-finite training loss ({float(loss)}) at batch {batch_idx} of epoch {trainer.current_epoch}")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        check_weights(pl_module, f"after epoch {trainer.current_epoch}")

    def on_train_end(self, trainer, pl_module) -> None:
        check_weights(pl_module, "at the end of training")


def check_weights(module: torch.nn.Module, when: str) -> None:
    for name, p in module.named_parameters():
        if not torch.isfinite(p).all():
            raise NonFiniteError(f"non-finite weights in {name} {when}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but into a temp file renamed over the target: a crash or a
    full disk leaves the previous checkpoint (or none), never half of one."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path, suffix=".ckpt") as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
