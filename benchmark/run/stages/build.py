"""Plan stage: a run's config (exactly what `liverbench fit` would take) -> model, DataModule, Trainer."""
from __future__ import annotations

import contextlib
import copy
import io
import warnings
from pathlib import Path

from benchmark.run.plan import RunSpec
from benchmark.run.run_config import RUNNER_ONLY, build_config


def plan(spec: RunSpec, folder: Path) -> dict:
    """The run's full config (result.json `config`; its `overrides` lists every value that differs
    from the entry's own config)."""
    return build_config(spec, folder)


def wait_for_source(spec: RunSpec) -> None:
    """A run that starts from another run's model.ckpt waits for that run (it may be running
    elsewhere); a source missing or failed is a DataError."""
    if spec.source is not None:
        from benchmark.run.dependencies import source_checkpoint

        source_checkpoint(spec.source, spec.suite)


def instantiate(config: dict, loggers: list, callbacks: list, folder: Path):
    """Model, DataModule and Trainer through `liverbench fit`'s LightningCLI (runner and CLI cannot
    drift); then the run's tracker loggers, progress callback and checkpoint location are attached."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from benchmark.run.lightning_cli import LiverBenchCLI, user_error
    from benchmark.run.stages.guards import AtomicCheckpointIO, FiniteGuard
    from models.base import MONITOR

    errors = io.StringIO()
    try:  # the CLI prints usage and exits on a bad config: turn that into this run's error
        with contextlib.redirect_stderr(errors), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            # a copy: the parser turns nested values (a preset's `trainer.callbacks`) into Namespaces in place,
            # and `config` is what result.json records
            cli = LiverBenchCLI(args=copy.deepcopy({k: v for k, v in config.items() if k not in RUNNER_ONLY}),
                                run=False)
    except SystemExit:
        message = errors.getvalue()
        message = message[message.find("error:"):] if "error:" in message else message
        raise ValueError(f"invalid run config: {message.strip()}") from None
    except Exception as exc:  # record the user's problem (bad data, no weights), not jsonargparse's wrapper
        cause = user_error(exc)
        if cause is None or cause is exc:
            raise
        raise cause from exc
    trainer = cli.trainer
    trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    if loggers:
        trainer.loggers = loggers
    checkpoints = trainer.checkpoint_callbacks
    if not checkpoints:
        checkpoints = [ModelCheckpoint(monitor=MONITOR, mode="max")]
        trainer.callbacks.append(checkpoints[0])
    for cb in checkpoints:  # the CLI's best-by-val/dice_grid checkpoint, saved as OUT/.../model.ckpt
        cb.dirpath, cb.filename, cb.save_last, cb.save_top_k = str(folder), "model", False, 1
    trainer.callbacks[:0] = [FiniteGuard(), *callbacks]
    return cli.model, cli.datamodule, trainer
