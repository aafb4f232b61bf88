"""The training budget in one unit for every variant (optimiser steps x samples per step, wall-clock
seconds of fit), the learning curve (validation Dice against steps and seconds), and the stop on a
plateau (`benchmark.convergence`): a ranking of unfinished trainings says little about architectures."""
from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback

from benchmark.convergence import convergence_rule, plateaued, still_improving
from models.base import MONITOR


class ValidationCurve(Callback):
    """Collects `val/dice_grid` after every validation (sanity checks excluded) with the step and the
    seconds since training began; with `rule["stop"]`, ends the fit when the curve has plateaued."""

    def __init__(self, rule: dict | None = None):
        self.rule = convergence_rule(rule)
        self.points: list[dict] = []
        self.stopped_on_plateau = False
        self._start = None

    @property
    def dice(self) -> list[float]:
        return [p["val_dice"] for p in self.points]

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(MONITOR)
        if trainer.sanity_checking or value is None:
            return
        seconds = time.perf_counter() - self._start if self._start is not None else 0.0
        self.points.append({"step": int(trainer.global_step), "seconds": round(seconds, 2),
                            "val_dice": round(float(value), 6)})
        if self.rule["stop"] and plateaued(self.dice, self.rule):
            self.stopped_on_plateau = True
            trainer.should_stop = True


def stop_reason(trainer, curve: ValidationCurve, limit: dict) -> str:
    """Why the fit ended: `plateau` (the rule), or the cap that ended it."""
    if curve.stopped_on_plateau:
        return "plateau"
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        return "max_steps"
    if (limit or {}).get("seconds"):
        return "max_time"
    return "max_epochs"


def budget_record(trainer, batch_size: int, seconds: float, limit: dict, curve: ValidationCurve) -> dict:
    """result.json `budget`: samples = steps x batch x processes x gradient accumulation; the learning
    curve; `converged` (the rule holds on the final curve, whatever ended the run) and `stop_reason`."""
    per_step = int(batch_size) * int(trainer.world_size) * int(trainer.accumulate_grad_batches)
    steps = int(trainer.global_step)
    dice = curve.dice
    return {"unit": "samples", "steps": steps, "samples_per_step": per_step, "samples": steps * per_step,
            "seconds": round(float(seconds), 2), "limit": limit, "val_dice": dice, "curve": list(curve.points),
            "still_improving": still_improving(dice), "converged": plateaued(dice, curve.rule),
            "stop_reason": stop_reason(trainer, curve, limit), "rule": dict(curve.rule)}
