"""timm-style model registry: `@register_model("name")`, `list_models()`, `create_model(name, **kw)`.

Built-in architectures register themselves when `models` is imported (every module of the
package is imported automatically, by name: this module imports nothing of the package, so the
architectures, `models.base` and `models.checkpoint` can all import it without a circle). Third-party packages register through the entry-point
group `liverbench.models`: the entry point may name a module (importing it registers its
models) or a `SegmentationModule` subclass (registered under the entry point's name).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import pkgutil
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

ENTRY_POINT_GROUP = "liverbench.models"

_MODELS: dict[str, type] = {}
_builtins_imported = False
_ENTRY_POINTS_SEEN: set[tuple[str, str]] = set()


def _same_class(a: type, b: type) -> bool:
    """A re-imported module (reload, entry point already imported) is not a duplicate."""
    return a is b or (a.__module__ == b.__module__ and a.__qualname__ == b.__qualname__)


def is_segmentation_module(obj: Any) -> bool:
    """A `models.base.SegmentationModule` subclass. Looked up in `sys.modules`: a class can only derive from
    it once `models.base` is imported, so the registry never has to import it."""
    base = getattr(sys.modules.get("models.base"), "SegmentationModule", None)
    return isinstance(obj, type) and base is not None and issubclass(obj, base)


def missing_requirements(cls: type) -> list[str]:
    """The packages in `cls.requires` that cannot be imported here."""
    return [name for name in getattr(cls, "requires", ()) if importlib.util.find_spec(name) is None]


def register_model(name: str) -> Callable[[type], type]:
    """Class decorator: register a `SegmentationModule` subclass under `name`."""
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"invalid model name {name!r}: use letters, digits, '_' or '-'")

    def decorator(cls: type) -> type:
        if not is_segmentation_module(cls):
            raise TypeError(f"@register_model({name!r}) needs a SegmentationModule subclass, got {cls!r}")
        old = _MODELS.get(name)
        if old is not None and not _same_class(old, cls):
            raise ValueError(
                f"model name {name!r} is already registered by {old.__module__}.{old.__qualname__}; "
                f"cannot register {cls.__module__}.{cls.__qualname__} under the same name"
            )
        cls.model_name = name
        _MODELS[name] = cls
        return cls

    return decorator


def load_entry_points() -> list[str]:
    """Import models registered by installed distributions (group `liverbench.models`).

    Returns the names of newly loaded entry points. A broken plugin warns and is skipped, so
    one bad third-party package cannot break `liverbench`.
    """
    loaded = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, ep.value)
        if key in _ENTRY_POINTS_SEEN:
            continue
        _ENTRY_POINTS_SEEN.add(key)
        try:
            obj = ep.load()
        except Exception as err:  # noqa: BLE001 - report and keep the other models usable
            warnings.warn(f"liverbench.models entry point {ep.name!r} ({ep.value}) failed to load: {err}")
            continue
        if is_segmentation_module(obj) and ep.name not in _MODELS:
            register_model(ep.name)(obj)
        loaded.append(ep.name)
    return loaded


def import_builtin_models() -> None:
    """Import every module of the `models` package (registering its architectures) and the entry points; once."""
    global _builtins_imported
    if _builtins_imported:
        return
    _builtins_imported = True
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not info.name.startswith("_"):
            importlib.import_module(f"models.{info.name}")
    load_entry_points()


def list_models() -> list[str]:
    """Sorted names of every registered model (built-in and from entry points)."""
    import_builtin_models()
    load_entry_points()
    return sorted(_MODELS)


def get_model_class(name: str) -> type:
    if name not in _MODELS:
        import_builtin_models()
        load_entry_points()
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(sorted(_MODELS))}") from None


def create_model(name: str, **kwargs: Any):
    """Instantiate a registered model with plain-value keyword arguments."""
    return get_model_class(name)(**kwargs)


def describe_models() -> list[dict[str, Any]]:
    """One row per model, built with default arguments: name, class, dims, parameter count.

    A model whose optional packages are missing shows `params: None` and what to install.
    """
    rows = []
    for name in list_models():
        cls = _MODELS[name]
        row = {"name": name, "class_path": f"{cls.__module__}.{cls.__qualname__}",
               "dims": cls.spatial_dims, "params": None, "missing": missing_requirements(cls)}
        if not row["missing"]:
            model = cls()
            row["dims"] = model.spatial_dims
            row["params"] = sum(p.numel() for p in model.parameters())
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="liverbench models", description="List registered models.")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows = describe_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max([len(r["name"]) for r in rows] + [4])
    print(f"{'name':<{width}}  dims  {'params':>11}  class_path")
    for r in rows:
        params = f"{r['params']:>11,}" if r["params"] is not None else f"{'-':>11}"
        note = f"  (needs: pip install {' '.join(r['missing'])})" if r["missing"] else ""
        print(f"{r['name']:<{width}}  {r['dims']:>3}D  {params}  {r['class_path']}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
