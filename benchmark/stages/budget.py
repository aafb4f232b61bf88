"""The training budget in one unit for every variant: optimiser steps x samples per step, and the
wall-clock seconds of fit; plus the validation Dice curve, which flags a variant still improving at
the end of its budget (a ranking of unfinished trainings says little about the architectures)."""
from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from models.base import MONITOR

STILL_IMPROVING_MARGIN = 0.002  # the last check beats every earlier one by at least this much


class ValidationCurve(Callback):
    """Collects `val/dice_grid` after every validation (sanity checks excluded)."""

    def __init__(self):
        self.dice: list[float] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(MONITOR)
        if not trainer.sanity_checking and value is not None:
            self.dice.append(round(float(value), 6))


def still_improving(curve: list[float]) -> bool:
    """True when the last validation Dice is the best by `STILL_IMPROVING_MARGIN` (still rising)."""
    return len(curve) >= 2 and curve[-1] >= max(curve[:-1]) + STILL_IMPROVING_MARGIN


def budget_record(trainer, batch_size: int, seconds: float, limit: dict, curve: list[float]) -> dict:
    """result.json `budget`: samples = steps x batch x processes x gradient accumulation."""
    per_step = int(batch_size) * int(trainer.world_size) * int(trainer.accumulate_grad_batches)
    steps = int(trainer.global_step)
    return {"unit": "samples", "steps": steps, "samples_per_step": per_step, "samples": steps * per_step,
            "seconds": round(float(seconds), 2), "limit": limit, "val_dice": list(curve),
            "still_improving": still_improving(curve)}
