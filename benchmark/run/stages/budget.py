"""The training budget in one unit for every variant (optimiser steps x samples per step, wall-clock
seconds of fit), the learning curve (validation Dice against steps and seconds), and the stop on a
plateau (`benchmark.run.convergence`): a ranking of unfinished trainings says little about architectures."""
from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback

from benchmark.run.convergence import converged, convergence_rule, plateaued, still_improving
from models.base import MONITOR


class ValidationCurve(Callback):
    """Collects `val/dice_grid` after every validation (sanity checks excluded) with the step, the
    seconds since training began and the learning rate; on a plateau, drops the learning rate while the
    rule has `lr_drops` left, else (with `rule["stop"]`) ends the fit. With `drop_by`, the next drop is made at
    the first point at or after that fraction of max_steps if no plateau made it before. Points taken while the
    learning rate was still rising (the warm-up) are not part of the first phase."""

    def __init__(self, rule: dict | None = None):
        self.rule = convergence_rule(rule)
        self.points: list[dict] = []
        self.drops_at: list[int] = []  # index in `points` of the first point after each learning-rate drop
        self.drop_reasons: list[str] = []  # "plateau" or "drop_by" (the deadline), one per drop
        self.warm = 0  # index of the first point after the learning-rate warm-up (the first phase starts there)
        self.stopped_on_plateau = False
        self._start = None
        self.validation_seconds = 0.0  # wall-clock seconds of the validation loops: the fit's cost of its curve
        self._validation_start = None

    @property
    def dice(self) -> list[float]:
        return [p["val_dice"] for p in self.points]

    def on_train_start(self, trainer, pl_module) -> None:
        schedule = getattr(pl_module, "hparams", {}).get("lr_schedule", "constant")
        if self.rule["lr_drops"] and schedule not in DROPPABLE_SCHEDULES:
            raise ValueError(f"convergence.lr_drops needs model.lr_schedule in {DROPPABLE_SCHEDULES} "
                             f"(a schedule that sets the learning rate itself would undo the drop), got {schedule!r}")
        if self.rule["drop_by"] is not None and trainer.max_steps in (None, -1):
            raise ValueError("convergence.drop_by is a fraction of trainer.max_steps, but the trainer has no step cap")
        self._start = time.perf_counter()

    @property
    def converged(self) -> bool:
        return converged(self.dice, self.drops_at, self.rule, self.warm)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._validation_start = None if trainer.sanity_checking else time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        took = time.perf_counter() - self._validation_start if self._validation_start is not None else 0.0
        self._validation_start = None
        self.validation_seconds += took
        value = trainer.callback_metrics.get(MONITOR)
        if trainer.sanity_checking or value is None:
            return
        seconds = time.perf_counter() - self._start if self._start is not None else 0.0
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        self.points.append({"step": int(trainer.global_step), "seconds": round(seconds, 2),
                            "val_seconds": round(took, 2), "val_dice": round(float(value), 6), "lr": lr})
        before = self.points[-2]["lr"] if len(self.points) > 1 else None
        if not self.drops_at and None not in (lr, before) and lr > before:
            self.warm = len(self.points)  # still warming up: a stall here is not a plateau
        drops_left = len(self.drops_at) < self.rule["lr_drops"]
        if drops_left and "drop_by" not in self.drop_reasons and past_drop_by(trainer, self.rule["drop_by"]):
            self._drop(trainer, "drop_by")
            return
        start = self.drops_at[-1] if self.drops_at else self.warm
        if not plateaued(self.dice[start:], self.rule, first_phase=not self.drops_at):
            return
        if drops_left:
            self._drop(trainer, "plateau")
        elif self.rule["stop"]:
            self.stopped_on_plateau = True
            trainer.should_stop = True

    def _drop(self, trainer, reason: str) -> None:
        scale_learning_rate(trainer, self.rule["lr_factor"])
        self.drops_at.append(len(self.points))
        self.drop_reasons.append(reason)


def past_drop_by(trainer, fraction: float | None) -> bool:
    """True once the fit has run `fraction` of its max_steps."""
    return fraction is not None and trainer.global_step >= fraction * trainer.max_steps


DROPPABLE_SCHEDULES = ("constant", "warmup")


def scale_learning_rate(trainer, factor: float) -> None:
    """Multiply the learning rate now and for the rest of the fit: the optimisers' groups and the base of
    a LambdaLR-style scheduler (which recomputes lr = base x lambda(step) every step)."""
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            group["lr"] *= factor
    for config in trainer.lr_scheduler_configs:
        if hasattr(config.scheduler, "base_lrs"):
            config.scheduler.base_lrs = [lr * factor for lr in config.scheduler.base_lrs]


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
    curve (each point with the seconds its validation took); `converged` (the rule holds on the final curve,
    whatever ended the run) and `stop_reason`; `validation_seconds`, the part of `seconds` spent validating."""
    per_step = int(batch_size) * int(trainer.world_size) * int(trainer.accumulate_grad_batches)
    steps = int(trainer.global_step)
    dice = curve.dice
    return {"unit": "samples", "steps": steps, "samples_per_step": per_step, "samples": steps * per_step,
            "seconds": round(float(seconds), 2), "validation_seconds": round(curve.validation_seconds, 2),
            "limit": limit, "val_dice": dice, "curve": list(curve.points),
            "still_improving": still_improving(dice), "converged": curve.converged,
            "lr_drops_at_step": [curve.points[i - 1]["step"] for i in curve.drops_at],
            "lr_drop_reasons": list(curve.drop_reasons),
            "stop_reason": stop_reason(trainer, curve, limit), "rule": dict(curve.rule)}
