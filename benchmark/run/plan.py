"""The run plan: suite x modality x seed, from a suite and a preset.

Suites and presets are plain YAML (`benchmark/suites/`, `benchmark/presets/`), read and checked here;
`benchmark.run.run_config.build_config` turns one planned run into the exact config `liverbench fit` would
take, plus the runner-only sections.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from benchmark.run.convergence import convergence_rule
from benchmark.run.dependencies import order
from benchmark.run.keys import (ENTRY_KEYS, INIT_FROM_KEYS, SUITE_BUDGETS, SUITE_KEYS, check_entry_config,
                                check_keys, check_preset_layer, mapping, model_class)
from benchmark.run.overrides import check_force
from benchmark.run.records import run_dir, run_name
from common.files import DataError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # benchmark/: its presets/ and suites/
DATAMODULES = {"ct": "datamodules.datamodule.CTDataModule", "mri": "datamodules.datamodule.MRIDataModule"}


@dataclass
class RunSpec:
    """One run to do: which entry, modality, seed, budget, and where its folder is."""

    suite: str
    variant: str
    label: str
    entry_config: Path
    modality: str
    seed: int
    preset: dict
    data: str  # "phantom" or a dataset folder
    folder: Path
    smoke: bool = False
    index: int = 0  # position of the entry in the suite: the report's row order
    dry_run: bool = False  # `--dry-run`: the preset on CPU for a few steps (see `cpu_dry_run`)
    source: Path | None = None  # folder of the run whose model.ckpt this one starts from (`init_from`)

    @property
    def name(self) -> str:
        return run_name(self.variant, self.modality, self.seed)

    @property
    def preset_name(self) -> str:
        return self.preset["name"]


def read_yaml(path: Path) -> dict:
    """A YAML mapping, or a `DataError` naming the file."""
    import yaml

    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(path, f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(path, "expected a YAML mapping at the top level")
    return data


def _named_file(name_or_path: str, folder: str) -> Path:
    """`paper` -> benchmark/<folder>/paper.yaml; anything with a suffix or a slash is a path."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        return Path(name_or_path).expanduser().resolve()
    path = PACKAGE_DIR / folder / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (PACKAGE_DIR / folder).glob("*.yaml"))
        raise DataError(path, f"no {folder[:-1]} named {name_or_path!r} (known: {', '.join(known) or 'none'})")
    return path


def load_suite(name_or_path: str) -> dict:
    """`{name, description, entries: [{variant, label, config}]}`; config paths made absolute."""
    path = _named_file(name_or_path, "suites")
    suite = read_yaml(path)
    check_keys(suite, SUITE_KEYS, path)
    entries = suite.get("entries")
    if not isinstance(entries, list) or not entries:
        raise DataError(path, "a suite needs a non-empty list `entries`")
    if suite.get("budget") is not None and suite["budget"] not in SUITE_BUDGETS:
        raise DataError(path, f"`budget` must be one of {', '.join(SUITE_BUDGETS)}, got {suite['budget']!r}")
    suite.setdefault("name", path.stem)
    variants = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "variant" not in entry or "config" not in entry:
            raise DataError(path, f"entry {i} needs `variant` and `config`")
        check_keys(entry, ENTRY_KEYS, path, f"entry {i}: ")
        if not isinstance(entry["variant"], str) or not isinstance(entry["config"], str):
            raise DataError(path, f"entry {i}: `variant` and `config` must be strings")
        if entry["variant"] in variants:
            raise DataError(path, f"variant {entry['variant']!r} appears twice")
        variants.add(entry["variant"])
        entry["config"] = (path.parent / entry["config"]).resolve()
        check_entry_config(entry["config"], read_yaml(entry["config"]))  # typos refused before any run
        entry.setdefault("label", entry["variant"])
    for i, entry in enumerate(entries):
        _check_dependency(path, i, entry, variants)
    suite["path"] = path
    return suite


def _check_dependency(path: Path, i: int, entry: dict, variants: set) -> None:
    """`modalities: [mri]` limits an entry's modalities; `init_from: {variant, modality}` starts each of its
    runs from that entry's run of the same seed (see benchmark/run/dependencies.py)."""
    mods = entry.get("modalities")
    if mods is not None and (not isinstance(mods, list) or set(mods) - set(DATAMODULES)):
        raise DataError(path, f"entry {i}: `modalities` must be a list of {', '.join(DATAMODULES)}")
    src = entry.get("init_from")
    if src is None:
        return
    if isinstance(src, dict):
        check_keys(src, INIT_FROM_KEYS, path, f"entry {i}: init_from: ")
    if not isinstance(src, dict) or src.get("variant") not in variants - {entry["variant"]} \
            or src.get("modality") not in DATAMODULES:
        raise DataError(path, f"entry {i}: `init_from` needs `variant` (another entry of this suite) and "
                              f"`modality` ({', '.join(DATAMODULES)})")


def load_preset(name_or_path: str, _seen: tuple = ()) -> dict:
    """A preset YAML; `extends: NAME|FILE` starts from that preset (see `_extend`)."""
    path = _named_file(name_or_path, "presets")
    preset = read_yaml(path)
    preset.setdefault("name", path.stem)
    _check_layers(path, preset)
    for where, layer in _layers(preset):  # a bad `force`/`budget` fails now, not in every run
        try:
            check_force(layer.get("force"), where)
            if layer.get("budget") is not None:
                time_budget(layer["budget"], where)
            if layer.get("convergence") is not None:
                convergence_rule(layer["convergence"])
        except ValueError as exc:
            raise DataError(path, str(exc)) from None
    if preset.get("extends") is not None:
        preset = _extend(path, preset, _seen)
    preset["path"] = str(path)
    return preset


def _extend(path: Path, preset: dict, seen: tuple) -> dict:
    """`extends`: the named preset, with this one's keys merged over it (a list, `force` too, replaces the base's)."""
    base_name = preset.pop("extends")
    if not isinstance(base_name, str):
        raise DataError(path, f"`extends` must name a preset or a preset file, got {base_name!r}")
    if path in seen:
        raise DataError(path, "presets extend each other in a circle: " + " -> ".join(map(str, (*seen, path))))
    if base_name.endswith((".yaml", ".yml")):  # a file name is relative to the extending preset
        base_name = str(path.parent / base_name)
    return deep_merge(load_preset(base_name, (*seen, path)), preset)


def _check_layers(path: Path, preset: dict) -> None:
    """Every layer's keys and section keys (`benchmark.run.keys`), and the models a `models:` layer names."""
    for where, layer in (("", preset), ("smoke: ", mapping(preset.get("smoke"), path, "smoke"))):
        check_preset_layer(path, layer, where)
        for dims, sub in mapping(layer.get("dims"), path, f"{where}dims").items():
            if str(dims) not in ("2", "3"):
                raise DataError(path, f"{where}dims: keys must be 2 or 3, got {dims!r}")
            check_preset_layer(path, mapping(sub, path, f"{where}dims {dims}"), f"{where}dims {dims}: ")
        for name, sub in mapping(layer.get("models"), path, f"{where}models").items():
            cls = model_class(name, path, f"{where}models: ")
            check_preset_layer(path, mapping(sub, path, f"{where}models {name}"), f"{where}models {name}: ", cls)


def _layers(preset: dict):
    """(name, layer) for the preset, its dims/models layers and its smoke layer's."""
    for name, layer in (("preset", preset), ("smoke", preset.get("smoke") or {})):
        yield name, layer
        for key in ("dims", "models"):
            for sub, value in ((layer.get(key) or {}) if isinstance(layer, dict) else {}).items():
                if isinstance(value, dict):
                    yield f"{name} {key} {sub}", value


def _data_dirs(data: str, modalities: list[str]) -> dict[str, str]:
    if data == "phantom":
        return {m: "phantom" for m in modalities}
    if "=" in data:
        pairs = dict(part.split("=", 1) for part in data.split(","))
        missing = [m for m in modalities if m not in pairs]
        if missing:
            raise ValueError(f"--data gives no folder for {', '.join(missing)}")
        dirs = {m: pairs[m] for m in modalities}
    else:
        dirs = {m: data for m in modalities}
    for d in dirs.values():
        if not Path(d).is_dir():
            raise DataError(d, "data folder not found (use --data phantom for the generated phantom)")
    return {m: str(Path(d).resolve()) for m, d in dirs.items()}


def plan_runs(suite: dict, preset: dict, modalities: list[str], seeds: list[int], data: str,
              out: str | os.PathLike, dry_run: bool = False) -> list[RunSpec]:
    bad = [m for m in modalities if m not in DATAMODULES]
    if bad or not modalities:
        raise ValueError(f"--modalities must be a comma list of {', '.join(DATAMODULES)}, got {modalities}")
    if not seeds:
        raise ValueError("--seeds needs at least one integer seed")
    dirs = _data_dirs(data, modalities)
    smoke = suite["name"] == "smoke" or suite.get("budget") == "smoke"

    def source(e: dict, seed: int) -> Path | None:
        src = e.get("init_from")
        return run_dir(out, suite["name"], src["variant"], src["modality"], seed) if src else None

    return order([
        RunSpec(suite["name"], e["variant"], e["label"], Path(e["config"]), m, seed, preset, dirs[m],
                run_dir(out, suite["name"], e["variant"], m, seed), smoke, i, dry_run, source(e, seed))
        for i, e in enumerate(suite["entries"]) for m in modalities for seed in seeds
        if m in e.get("modalities", modalities)
    ])


def deep_merge(base: dict, override: dict | None) -> dict:
    out = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def time_budget(value, preset_name) -> dict:
    """A preset's `budget: {seconds: N}`, checked."""
    if not (isinstance(value, dict) and set(value) == {"seconds"} and isinstance(value["seconds"], (int, float))
            and value["seconds"] > 0):
        raise ValueError(f"preset {preset_name}: `budget` must be {{seconds: N}} with N > 0, got {value!r}")
    return {"seconds": float(value["seconds"])}
