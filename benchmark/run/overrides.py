"""Who decides each value of a run: the suite entry or the preset.

Order: a preset's layers are defaults under the entry's own config, so the entry's values win, except
for the keys a preset layer names in `force:` (for example `force: [model.lr, data.batch_size]`: the
cpu preset's short budget needs its own learning rate and batch). Every used value that differs from
the entry's config is listed with its source (result.json `overrides`, the leaderboard), so a budget
never silently replaces a paper recipe.

Values the data decides (a 3D model's sliding window) are written into the run config by
`derive_from_data`, so result.json and the checkpoint's hyperparameters name them; modules never
change their own hyperparameters at setup.
"""
from __future__ import annotations

from typing import Any

SECTION_ARGS = {"model": ("model", "init_args"), "data": ("data", "init_args"), "trainer": ("trainer",)}
_MISSING = object()


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in (tree or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def get_dotted(tree: dict, key: str, default: Any = _MISSING) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is _MISSING:
                raise KeyError(key)
            return default
        node = node[part]
    return node


def set_dotted(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def check_force(force: Any, where: str) -> list[str]:
    """A layer's `force:` list, validated: `section.key` with section in model/data/trainer."""
    if force is None:
        return []
    if not isinstance(force, list) or not all(isinstance(k, str) for k in force):
        raise ValueError(f"{where}: `force` must be a list of keys like model.lr or data.batch_size")
    bad = [k for k in force if k.split(".", 1)[0] not in SECTION_ARGS or "." not in k]
    if bad:
        raise ValueError(f"{where}: `force` keys must start with model., data. or trainer.: {', '.join(bad)}")
    return list(force)


def _normalise(key: str, value: Any) -> Any:
    """Class paths compare by class name (`datamodules.CTDataModule` is `datamodules.datamodule.CTDataModule`)."""
    if key.endswith("class_path") and isinstance(value, str):
        return value.rsplit(".", 1)[-1]
    return value


def list_overrides(entry: dict, used: dict, sources: dict[str, str], default_source: str = "runner") -> list[dict]:
    """Every leaf of the entry's model/data/trainer config whose used value differs, and every forced key the
    entry does not set, sorted by key.

    `sources`: dotted key (as in `used`) -> who set it (e.g. "preset cpu (forced)")."""
    rows = []
    leaves = {k: v for section in ("model", "data", "trainer") for k, v in flatten(entry.get(section) or {}, section + ".").items()}
    forced_unset = {k: None for k in sources if k not in leaves}  # a forced key the entry leaves to its default
    for key, value in {**leaves, **forced_unset}.items():
        now = get_dotted(used, key, None)
        if _normalise(key, now) != _normalise(key, value):
            rows.append({"key": key, "entry": value, "used": now, "source": sources.get(key, default_source)})
    return sorted(rows, key=lambda r: r["key"])


def derive_from_data(config: dict) -> dict:
    """Model arguments that follow from the data, in a LightningCLI config (changed in place, returned):
    a 3D model whose entry leaves `roi_size` unset slides windows of its training patch size."""
    model_args, data_args = config["model"].setdefault("init_args", {}), config["data"].get("init_args") or {}
    if int(data_args.get("dims", 2)) == 3 and model_args.get("roi_size") is None:
        model_args["roi_size"] = training_patch_size(data_args)
    return config


def training_patch_size(data_args: dict) -> list[int]:
    """The patch a LiverDataModule with these arguments trains on: its `patch_size`, else its preset's default."""
    if data_args.get("patch_size"):
        return [int(p) for p in data_args["patch_size"]]
    from datamodules.datamodule import DEFAULT_PATCH  # the DataModule's own rule

    dims = int(data_args.get("dims", 2))
    return list(DEFAULT_PATCH[("gpu" if data_args.get("preset") == "gpu" else "cpu", dims)])
