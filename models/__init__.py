"""Models: registry, the shared SegmentationModule, one file per architecture.

Importing `models` itself is light (no Lightning), so `models.network` can rebuild a checkpoint's
network for `liverbench predict` quickly. The registry's names (`models.list_models()`,
`models.SegmentationModule`, ...) load on first use, and with them every module of this package
(so a new architecture is one new file) and the third-party models of the `liverbench.models`
entry-point group (`models.registry.import_builtin_models`).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SegmentationModule": "models.base", "load_module": "models.checkpoint",
    "ENTRY_POINT_GROUP": "models.registry", "create_model": "models.registry", "get_model_class": "models.registry",
    "import_builtin_models": "models.registry", "list_models": "models.registry",
    "load_entry_points": "models.registry", "register_model": "models.registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        from models.registry import import_builtin_models

        import_builtin_models()
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
