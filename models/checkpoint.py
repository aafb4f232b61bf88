"""Checkpoints: restore any registered model from its file alone; initialise from another run.

`load_module(path)` is what inference, the runner and `liverbench predict` use (reading the file itself:
`models.checkpoint_format`).
`init_weights_from(module, path)` is cross-modality transfer (`init_from=CKPT`): copy every
weight whose name and shape match, and say clearly which ones did not.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from common.files import DataError
from models.checkpoint_format import read_checkpoint, state_dict_of, stored_preprocessing
from models.registry import get_model_class

log = logging.getLogger(__name__)


def saved_model_class(ckpt: dict[str, Any], path: str | os.PathLike) -> type:
    """The registered class that saved `ckpt` (read from `path`): the one place a checkpoint meets the registry."""
    name = ckpt.get("liverbench_model")
    if not name:
        raise DataError(path, "not a LiverBench checkpoint (no 'liverbench_model' entry naming a registered model)")
    try:
        return get_model_class(name)
    except ValueError as err:
        raise DataError(path, f"checkpoint was saved by model {name!r}, which is not registered: {err}") from None


def load_module(path: str | os.PathLike, map_location: str | torch.device = "cpu", **overrides: Any):
    """Rebuild the model of a LiverBench checkpoint -> `(module in eval mode, preprocessing config)`.

    `overrides` replace saved constructor arguments (e.g. `roi_size=[128, 128, 64]`: other sliding
    windows for the same weights). The preprocessing config is None when the checkpoint was saved
    without a DataModule.
    """
    ckpt = read_checkpoint(path)
    cls = saved_model_class(ckpt, path)
    hparams = {k: v for k, v in (ckpt.get("hyper_parameters") or {}).items() if not k.startswith("_")}
    hparams.update({**cls.weight_init_off, **overrides})
    try:
        module = cls(**hparams)
        module.load_state_dict(state_dict_of(ckpt))
    except (TypeError, RuntimeError) as err:
        raise DataError(path, f"cannot rebuild model {cls.model_name!r} from this checkpoint: {err}") from None
    module.checkpoint_path = str(path)  # named by errors about the network's output
    return module.to(map_location).eval(), stored_preprocessing(ckpt)


@dataclass
class InitReport:
    """What `init_weights_from` did: copied keys and the ones that did not fit."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    mismatched: list[str] = field(default_factory=list)  # same name, different shape

    def summary(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        lines = [f"init_from {self.source}: loaded {len(self.loaded)} tensors"]
        if self.missing:
            lines.append(f"  missing in checkpoint (kept random init): {few(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected in checkpoint (ignored): {few(self.unexpected)}")
        if self.mismatched:
            lines.append(f"  shape mismatch (kept random init): {few(self.mismatched)}")
        return "\n".join(lines)


def init_weights_from(module: torch.nn.Module, path: str | os.PathLike) -> InitReport:
    """Copy every tensor of checkpoint `path` whose name and shape match `module`'s.

    Mismatches are logged (not fatal: e.g. a CT model's weights fine-tuned on MRI with a
    different head); nothing matching at all is an error, as the checkpoint is surely wrong.
    """
    source = state_dict_of(read_checkpoint(path))
    target = module.state_dict()
    report = InitReport(str(path))
    usable = {}
    for key, value in source.items():
        if key not in target:
            report.unexpected.append(key)
        elif target[key].shape != value.shape:
            report.mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(target[key].shape)}")
        else:
            usable[key] = value
            report.loaded.append(key)
    report.missing = [k for k in target if k not in source]
    if not usable:
        raise DataError(path, f"no weight matches model {type(module).__name__}\n{report.summary()}")
    module.load_state_dict(usable, strict=False)
    if report.missing or report.unexpected or report.mismatched:
        log.warning(report.summary())
    else:
        log.info(report.summary())
    module.init_report = report
    return report


def describe_source(path: str | os.PathLike) -> dict[str, Any]:
    """`transfer` of a model initialised from `path`: a LiverBench run's model.ckpt (result.json beside
    it) is named by its run folder and that run's own transfer source; any other file by its path."""
    import json

    record_path = Path(path).parent / "result.json"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return {"source": "path", "detail": str(path)}
    if not isinstance(record, dict):
        return {"source": "path", "detail": str(path)}
    before = record.get("transfer") or {}
    via = " ".join(str(v) for v in (before.get("source"), before.get("detail")) if v)
    return {"source": "run", "detail": Path(path).parent.name + (f" (its encoder: {via})" if via else "")}
