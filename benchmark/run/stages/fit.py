"""Fit stage: train, keep the best-by-val/dice_grid checkpoint as `model.ckpt`, save the split, reload the best."""
from __future__ import annotations

import signal
import threading
import warnings
from pathlib import Path

from benchmark.run.stages.interrupt import on_sigint, STOP, stop_if_interrupted
from common.files import atomic_write_json
from models.base import MONITOR


def transfer_of(model) -> dict:
    """result.json `transfer`: where the model's pretrained weights came from (`none`: from scratch)."""
    return dict(getattr(model, "transfer", None) or {"source": "none", "detail": None})


def fit_stage(trainer, model, datamodule, folder: Path) -> dict:
    """Train, keep the selected checkpoint as `model.ckpt` and the split beside it; returns result.json
    `checkpoint`. The module to score is then `load_best(folder / "model.ckpt")`."""
    fit(trainer, model, datamodule)
    checkpoint = ensure_checkpoint(trainer, folder / "model.ckpt")
    if not (folder / "split.json").is_file():
        atomic_write_json(folder / "split.json", datamodule.split)
    return checkpoint


def fit(trainer, model, datamodule) -> None:
    """`trainer.fit`; Lightning turns Ctrl-C into `sys.exit(1)` (and ignores further Ctrl-C):
    give the suite its KeyboardInterrupt back so it stops cleanly."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            trainer.fit(model, datamodule=datamodule)
    except SystemExit as exc:
        if trainer.interrupted:
            STOP.set()
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, on_sigint)
            raise KeyboardInterrupt from exc
        raise
    stop_if_interrupted()


def ensure_checkpoint(trainer, path: Path) -> dict:
    """`model.ckpt` is the best by val/dice_grid; if validation never ran, the final weights."""
    callback = trainer.checkpoint_callback
    if callback is not None and callback.best_model_path:  # the same on every DDP rank
        score = callback.best_model_score if callback is not None else None
        return {"path": path.name, "selected_by": MONITOR, "val_dice": float(score) if score is not None else None}
    trainer.save_checkpoint(path)
    return {"path": path.name, "selected_by": "last step (no validation ran)", "val_dice": None}


def load_best(path: Path):
    """(module in eval mode, its preprocessing config) from a checkpoint."""
    from models import load_module

    module, preprocessing = load_module(path)
    return module.eval(), preprocessing
