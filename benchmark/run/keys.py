"""Suite, entry and preset files refuse unknown keys, naming the nearest valid one.

An ignored typo changes the experiment in silence (`budgt: smoke` ran a 200-step budget instead of
4 steps), so every key of these files is checked when the file is loaded, before any training.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
from pathlib import Path
from typing import Any, Iterable

from benchmark.run.convergence import CONVERGENCE_DEFAULTS
from common.files import DataError

SUITE_KEYS = {"name", "description", "entries", "budget"}
SUITE_BUDGETS = ("smoke",)  # named preset layers a suite may select
ENTRY_KEYS = {"variant", "label", "config", "modalities", "init_from", "description"}
INIT_FROM_KEYS = {"variant", "modality"}
CONFIG_KEYS = {"model", "data", "trainer", "seed_everything", "optimizer", "lr_scheduler", "ckpt_path"}
CLASS_KEYS = {"class_path", "init_args", "dict_kwargs"}
LAYER_SECTIONS = ("trainer", "model", "data", "timing", "evaluation", "convergence")
LAYER_KEYS = {*LAYER_SECTIONS, "force", "budget"}
PRESET_KEYS = {"name", "description", "extends", "dims", "models", "smoke", *LAYER_KEYS}
TIMING_KEYS = {"volume", "reference", "warmup", "repeats", "precision", "flops", "channels_last"}
EVALUATION_KEYS = {"largest_component", "opening_mm", "precision"}
SECTION_KEYS = {"timing": TIMING_KEYS, "evaluation": EVALUATION_KEYS, "convergence": set(CONVERGENCE_DEFAULTS)}


def check_keys(found: Iterable, allowed: Iterable[str], path, where: str = "") -> None:
    """DataError for the first key of `found` not in `allowed`, with the nearest valid key."""
    allowed = sorted(set(allowed))
    for key in found:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"did you mean `{near[0]}`?" if near else f"valid keys: {', '.join(allowed)}"
            raise DataError(path, f"{where}unknown key `{key}` ({hint})")


def mapping(value: Any, path, where: str) -> dict:
    """`value` when it is a mapping (None: empty), else a DataError naming `where`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DataError(path, f"`{where}` must be a mapping, got {type(value).__name__} {value!r}")
    return value


def init_params(cls) -> set[str] | None:
    """The keyword arguments `cls(...)` accepts, following `**kwargs` up the base classes; None when
    the chain stays open-ended (nothing can be checked)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names
    return None


def import_class(class_path: str):
    """The class of a `class_path`, or None when it does not import (LightningCLI reports that)."""
    module, _, name = str(class_path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def check_init_args(cls, args: dict, path, where: str) -> None:
    params = init_params(cls) if cls is not None else None
    if params is not None:
        check_keys(args, params, path, where)


def check_entry_config(path: Path, config: dict) -> None:
    """A suite entry's LightningCLI YAML: top-level keys, `class_path`/`init_args`, and the init_args
    of its model and DataModule classes."""
    check_keys(config, CONFIG_KEYS, path)
    for section in ("model", "data"):
        part = mapping(config.get(section), path, section)
        check_keys(part, CLASS_KEYS, path, f"{section}: ")
        args = mapping(part.get("init_args"), path, f"{section}.init_args")
        check_init_args(import_class(part.get("class_path", "")), args, path, f"{section}.init_args: ")
    check_init_args(_trainer_class(), mapping(config.get("trainer"), path, "trainer"), path, "trainer: ")


def check_preset_layer(path, layer: dict, where: str, model_class=None) -> None:
    """One preset layer (the preset itself, `smoke`, a `dims`/`models` entry): its keys and sections."""
    from datamodules.datamodule import LiverDataModule
    from models.base import SegmentationModule

    allowed = PRESET_KEYS if where == "" else LAYER_KEYS | ({"dims", "models"} if where == "smoke: " else set())
    check_keys(layer, allowed, path, where)
    classes = {"model": model_class or SegmentationModule, "data": LiverDataModule, "trainer": _trainer_class()}
    for section in LAYER_SECTIONS:
        values = mapping(layer.get(section), path, f"{where}{section}")
        if section in classes:
            check_init_args(classes[section], values, path, f"{where}{section}: ")
        else:
            check_keys(values, SECTION_KEYS[section], path, f"{where}{section}: ")


def model_class(key: str, path, where: str):
    """The model a preset's `models:` key names (registry or class name, any case)."""
    import models

    names = {n.lower(): models.get_model_class(n) for n in models.list_models()}
    names.update({cls.__name__.lower(): cls for cls in list(names.values())})
    if str(key).lower() not in names:
        check_keys([str(key).lower()], names, path, where)
    return names[str(key).lower()]


def _trainer_class():
    from lightning.pytorch import Trainer

    return Trainer
