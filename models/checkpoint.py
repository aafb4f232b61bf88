"""Checkpoints: restore any registered model from its file alone; initialise from another run.

`load_module(path)` is what inference, the runner and `liverbench predict` use.
`init_weights_from(module, path)` is cross-modality transfer (`init_from=CKPT`): copy every
weight whose name and shape match, and say clearly which ones did not.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from common.files import DataError

log = logging.getLogger(__name__)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """`torch.load(weights_only=True)` with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt, truncated or unsafe pickles
        raise DataError(path, f"not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict):
        raise DataError(path, f"not a checkpoint: contains a {type(ckpt).__name__}, expected a dict")
    check_finite(_state_dict_of(ckpt), path)
    return ckpt


def check_finite(state: dict[str, torch.Tensor], path) -> None:
    """Refuse NaN/Inf weights at load: a diverged model would otherwise predict empty masks in silence."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise DataError(path, f"non-finite weights (NaN/Inf) in {len(bad)} tensor(s), e.g. {bad[0]}: "
                              "the model diverged; retrain it or use another checkpoint")


def _state_dict_of(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    state = ckpt.get("state_dict", ckpt)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


PREPROCESSING_KEY = "liverbench_preprocessing"  # top-level entry, beside `liverbench_model` / `liverbench_network`


def describe_checkpoint(module, trainer=None) -> dict[str, Any]:
    """A SegmentationModule's top-level checkpoint entries, so the file alone rebuilds and feeds it: the
    registry name (`load_module`), the network spec with its inference settings (`load_network`, no
    Lightning) and, when a trainer saves it, the DataModule's preprocessing config (None without one)."""
    entries: dict[str, Any] = {"liverbench_model": module.model_name,
                               "liverbench_class_path": f"{type(module).__module__}.{type(module).__qualname__}"}
    spec = getattr(module.net, "liverbench_spec", None)  # set by models.network.network()
    if spec is not None:
        entries["liverbench_network"] = {**spec, **module.inference_spec()}
    if trainer is not None:
        preprocessing = getattr(trainer.datamodule, "preprocessing", None)
        entries[PREPROCESSING_KEY] = dict(preprocessing) if isinstance(preprocessing, dict) else None
    return entries


def stored_preprocessing(ckpt: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The DataModule's preprocessing config a checkpoint was trained with (None: saved without one).

    Read by name from `liverbench_preprocessing`, written by `SegmentationModule.on_save_checkpoint`;
    a checkpoint without that entry is an older one (`legacy_preprocessing`)."""
    if PREPROCESSING_KEY in ckpt:
        found = ckpt[PREPROCESSING_KEY]
        return found if isinstance(found, dict) else None
    return legacy_preprocessing(ckpt)


def legacy_preprocessing(ckpt: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The only fallback: checkpoints saved by LiverBench up to commit f5b5766 (before the
    `liverbench_preprocessing` entry) hold the config only in the DataModule's state, which Lightning
    stores under the DataModule's qualname (or in `datamodule_hyper_parameters`): found by scanning."""
    for value in ckpt.values():
        if isinstance(value, dict) and isinstance(value.get("preprocessing"), dict):
            return value["preprocessing"]
    dm_hparams = ckpt.get("datamodule_hyper_parameters")
    if isinstance(dm_hparams, dict) and isinstance(dm_hparams.get("preprocessing"), dict):
        return dm_hparams["preprocessing"]
    return None


def load_module(path: str | os.PathLike, map_location: str | torch.device = "cpu", **overrides: Any):
    """Rebuild the model of a LiverBench checkpoint -> `(module in eval mode, preprocessing config)`.

    `overrides` replace saved constructor arguments (e.g. `roi_size=[128, 128, 64]`: other sliding
    windows for the same weights). The preprocessing config is None when the checkpoint was saved
    without a DataModule.
    """
    from models.registry import get_model_class

    ckpt = read_checkpoint(path)
    name = ckpt.get("liverbench_model")
    if not name:
        raise DataError(path, "not a LiverBench checkpoint (no 'liverbench_model' entry naming a registered model)")
    try:
        cls = get_model_class(name)
    except ValueError as err:
        raise DataError(path, f"checkpoint was saved by model {name!r}, which is not registered: {err}") from None
    hparams = {k: v for k, v in (ckpt.get("hyper_parameters") or {}).items() if not k.startswith("_")}
    hparams.update({**cls.weight_init_off, **overrides})
    try:
        module = cls(**hparams)
        module.load_state_dict(_state_dict_of(ckpt))
    except (TypeError, RuntimeError) as err:
        raise DataError(path, f"cannot rebuild model {name!r} from this checkpoint: {err}") from None
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
    source = _state_dict_of(read_checkpoint(path))
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
