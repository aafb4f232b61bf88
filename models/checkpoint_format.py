"""What a LiverBench checkpoint holds and how to read it safely: the leaf every loader uses.

Reading needs nothing of ours but `common`: `liverbench predict` (models.network.load_network) reads a
checkpoint without the registry or Lightning; only `models.checkpoint.saved_model_class` (behind `load_module`)
dispatches to the registry.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch

from common.files import DataError

PREPROCESSING_KEY = "liverbench_preprocessing"  # top-level entry, beside `liverbench_model` / `liverbench_network`


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
    check_finite(state_dict_of(ckpt), path)
    return ckpt


def check_finite(state: dict[str, torch.Tensor], path) -> None:
    """Refuse NaN/Inf weights at load: a diverged model would otherwise predict empty masks in silence."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise DataError(path, f"non-finite weights (NaN/Inf) in {len(bad)} tensor(s), e.g. {bad[0]}: "
                              "the model diverged; retrain it or use another checkpoint")


def state_dict_of(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a Lightning checkpoint's `state_dict` (or of a bare state dict)."""
    state = ckpt.get("state_dict", ckpt)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


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
