"""Models: registry, the shared SegmentationModule, one file per architecture.

Importing this package imports every module in it (so a new architecture is one new file)
and loads third-party models from the `liverbench.models` entry-point group.
"""
from __future__ import annotations

import importlib
import pkgutil

from models.base import SegmentationModule
from models.checkpoint import load_module
from models.registry import (
    ENTRY_POINT_GROUP,
    create_model,
    get_model_class,
    list_models,
    load_entry_points,
    register_model,
)

__all__ = [
    "ENTRY_POINT_GROUP", "SegmentationModule", "create_model", "get_model_class", "list_models",
    "load_entry_points", "load_module", "register_model",
]


def _import_builtin_models() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_builtin_models()
load_entry_points()
