"""The learning-rate schedules a `SegmentationModule` offers (`lr_schedule`, `warmup_steps`)."""
from __future__ import annotations

from typing import Optional

import torch

LR_SCHEDULES = ("constant", "onecycle", "warmup")
WARMUP_FRACTION = 0.1  # of the trainer's length: the linear warm-up of "onecycle" and "warmup" by default


def check_schedule(lr_schedule: str, warmup_steps: Optional[int]) -> None:
    """Refuse an unknown schedule or a warm-up shorter than one step, when the module is built."""
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if warmup_steps is not None and int(warmup_steps) < 1:
        raise ValueError(f"warmup_steps must be >= 1 (or None: 10 % of the training length), got {warmup_steps}")


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, lr: float, total: float,
                 warmup_steps: Optional[int] = None) -> torch.optim.lr_scheduler.LRScheduler:
    """"warmup": linear warm-up, then constant (a convergence rule lowers it later); "onecycle": warm-up, then
    cosine decay to the end of `total` steps. The warm-up lasts `warmup_steps`, or 10 % of `total` when unset."""
    if not 0 < total < float("inf"):
        raise ValueError(f"lr_schedule {schedule!r} needs a finite training length (trainer max_steps or max_epochs)")
    if warmup_steps is not None and warmup_steps >= total:
        raise ValueError(f"warmup_steps {warmup_steps} must be shorter than the training length {total}")
    warmup = warmup_steps or max(1, int(WARMUP_FRACTION * total))
    if schedule == "warmup":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=int(total), cycle_momentum=False,
                                               pct_start=warmup / total if warmup_steps else WARMUP_FRACTION)
