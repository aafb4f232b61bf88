"""`liverbench fit|validate|test|predict --config ...`: LightningCLI over any registered model.

Subclass mode for both the model (`SegmentationModule` subclasses, i.e. the registry) and the
data (any `LightningDataModule`, normally `datamodules.CTDataModule` / `MRIDataModule`).
Every Trainer setting (devices, strategy, num_nodes, precision, accumulate_grad_batches, ...)
passes through unchanged, so GPUs and clusters scale with Lightning's own DDP.
"""
from __future__ import annotations

import sys
import warnings
from typing import Optional

from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

import models
from common.files import DataError
from models.base import MONITOR, SegmentationModule
from models.resnet_unet import PretrainedWeightsUnavailable

models.import_builtin_models()  # every architecture, so class paths and short names resolve

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def best_checkpoint_callback() -> ModelCheckpoint:
    """Keep the checkpoint with the best per-patient validation Dice (and the last one)."""
    return ModelCheckpoint(monitor=MONITOR, mode="max", save_last=True, filename="best-{epoch}-{step}",
                           auto_insert_metric_name=False)


class LiverBenchCLI(LightningCLI):
    """LightningCLI with LiverBench defaults (checkpoint on `val/dice_grid`)."""

    def __init__(self, args: Optional[list[str]] = None, run: bool = True, **kwargs):
        # `liverbench fit ...` hands us sys.argv's options as args; Lightning warns about both being set
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        super().__init__(
            SegmentationModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": [best_checkpoint_callback()]},
            parser_kwargs={"default_env": False},
            **kwargs,
        )


def main(argv: Optional[list[str]] = None) -> int:
    """argv[0] is the subcommand (fit/validate/test/predict), the rest LightningCLI options."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        print(f"usage: liverbench {{{','.join(SUBCOMMANDS)}}} --config FILE [options]", file=sys.stderr)
        return 2
    try:
        LiverBenchCLI(args=argv)
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
    return 0


def user_error(err: BaseException) -> Optional[BaseException]:
    """Bad input or unavailable weights, possibly wrapped by jsonargparse's instantiation errors."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (DataError, PretrainedWeightsUnavailable)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
