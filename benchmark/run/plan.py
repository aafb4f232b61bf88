"""The run plan: suite x modality x seed, each with its LightningCLI config after the preset's layers.

Suites and presets are plain YAML (`benchmark/suites/`, `benchmark/presets/`); `build_config` turns
one suite entry into the exact config `liverbench fit` would take, plus the runner-only sections.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

from benchmark.run.convergence import convergence_rule
from benchmark.run.dependencies import order
from benchmark.run.keys import (ENTRY_KEYS, INIT_FROM_KEYS, SUITE_BUDGETS, SUITE_KEYS, check_entry_config,
                           check_keys, check_preset_layer, mapping, model_class)
from benchmark.run.overrides import check_force, derive_from_data, get_dotted, list_overrides, set_dotted
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


def _yaml(path: Path) -> dict:
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
    suite = _yaml(path)
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
        check_entry_config(entry["config"], _yaml(entry["config"]))  # typos refused before any run
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
    preset = _yaml(path)
    preset.setdefault("name", path.stem)
    _check_layers(path, preset)
    for where, layer in _layers(preset):  # a bad `force`/`budget` fails now, not in every run
        try:
            check_force(layer.get("force"), where)
            if layer.get("budget") is not None:
                _time_budget(layer["budget"], where)
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


def model_name(class_path: str) -> str:
    """Registry name of a model class path (`models.unet2d.UNet2D` -> `unet2d`), else the class name."""
    name = class_path.rsplit(".", 1)[-1]
    try:
        import models

        return next((n for n in models.list_models() if models.get_model_class(n).__name__ == name), name)
    except Exception:  # unknown class: the CLI reports it when the run starts
        return name


def _model_keys(class_path: str) -> set[str]:
    """Names a preset's `models:` section may use for a model: class name or registry name."""
    name = class_path.rsplit(".", 1)[-1]
    keys = {name.lower()}
    try:
        import models

        keys |= {n.lower() for n in models.list_models() if models.get_model_class(n).__name__ == name}
    except Exception:  # unknown class: the CLI reports it when the run starts
        pass
    return keys


SECTIONS = ("trainer", "model", "data", "timing", "evaluation", "convergence")
RUNNER_ONLY = ("timing", "evaluation", "convergence", "dry_run", "overrides", "budget_limit")  # runner-only, not LightningCLI keys


def budget(preset: dict, dims: int, smoke: bool, class_path: str = "") -> dict:
    """The preset's `trainer`/`model`/`data`/`timing`/`evaluation`/`convergence` for one dimensionality, then its per-model
    `models:` overrides, then (for smoke suites) the `smoke:` layer with its own dims/models.

    Also `force` (the keys these layers force over the entry's own values, see benchmark/run/overrides.py)
    and `limit` (`budget: {seconds: N}`: equal wall-clock per variant, else None)."""

    def by_dims(layer):
        d = (layer or {}).get("dims") or {}
        return d.get(dims) or d.get(str(dims))

    def by_model(layer):
        keys = _model_keys(class_path) if class_path else set()
        found = {k.lower(): v for k, v in ((layer or {}).get("models") or {}).items()}
        return next((found[k] for k in sorted(keys) if k in found), None)

    layers = [preset, by_dims(preset), by_model(preset)]
    if smoke:
        s = preset.get("smoke") or {}
        layers += [s, by_dims(s), by_model(s)]
    out: dict = {"force": [], "limit": None}
    for layer in layers:
        for section in SECTIONS:
            out[section] = deep_merge(out.get(section, {}), (layer or {}).get(section))
        out["force"] += check_force((layer or {}).get("force"), f"preset {preset.get('name')}")
        if (layer or {}).get("budget") is not None:
            out["limit"] = _time_budget(layer["budget"], preset.get("name"))
    return out


def _time_budget(value, preset_name) -> dict:
    if not (isinstance(value, dict) and set(value) == {"seconds"} and isinstance(value["seconds"], (int, float))
            and value["seconds"] > 0):
        raise ValueError(f"preset {preset_name}: `budget` must be {{seconds: N}} with N > 0, got {value!r}")
    return {"seconds": float(value["seconds"])}


def _entry_wins(preset_values: dict, entry_values: dict, forced: list[str], section: str) -> dict:
    """The preset's values under the entry's, then the keys the preset forces back on top."""
    out = deep_merge(preset_values, entry_values)
    for key in forced:
        head, _, rest = key.partition(".")
        if head == section and get_dotted(preset_values, rest, None) is not None:
            set_dotted(out, rest, get_dotted(preset_values, rest))
    return out


def build_config(spec: RunSpec, folder: Path) -> dict:
    """The entry's LightningCLI config with the modality's DataModule, the preset, data and seed."""
    entry = _yaml(spec.entry_config)
    for section in ("model", "data"):
        if not isinstance(entry.get(section), dict) or "class_path" not in entry[section]:
            raise DataError(spec.entry_config, f"needs `{section}:` with class_path and init_args")
    config = copy.deepcopy(entry)
    data_args = dict(config["data"].get("init_args") or {})
    dims = int(data_args.get("dims", 2))
    b = budget(spec.preset, dims, spec.smoke, config["model"]["class_path"])
    config["seed_everything"] = spec.seed
    config["model"]["init_args"] = _entry_wins(b["model"], config["model"].get("init_args") or {}, b["force"], "model")
    data_args = _entry_wins(b["data"], data_args, b["force"], "data")
    data_args["seed"] = spec.seed  # sampling and augmentation order; the split has its own `split_seed`
    data_args["data_dir"] = None if spec.data == "phantom" else spec.data
    # the DataModule saves its split there, or loads the entry's own fixed split (e.g. a cross-validation fold)
    data_args.setdefault("split_file", str(folder / "split.json"))
    if spec.source is not None:  # all weights from the source run: nothing else is fetched
        config["model"]["init_args"].update(init_from=str(spec.source / "model.ckpt"), pretrained="none")
    config["data"] = {"class_path": DATAMODULES[spec.modality], "init_args": data_args}
    derive_from_data(config)  # e.g. a 3D model's roi_size: recorded here, never set by the module at setup
    trainer = _entry_wins(b["trainer"], config.get("trainer") or {}, b["force"], "trainer")
    if b["limit"]:  # equal wall-clock per variant instead of equal steps
        trainer.update(max_time={"seconds": b["limit"]["seconds"]}, max_steps=-1)
    trainer.update(default_root_dir=str(folder), logger=False, enable_progress_bar=False,
                   enable_model_summary=False)
    if trainer.get("precision") == "auto":  # resolved here, so result.json names the one used
        trainer["precision"] = auto_trainer_precision(trainer.get("accelerator", "auto"))
    config["trainer"] = trainer
    config["timing"] = b["timing"]  # not LightningCLI keys: removed before instantiation
    config["evaluation"] = {"largest_component": False, "precision": "fp32", **b["evaluation"]}
    config["convergence"] = convergence_rule(b["convergence"])  # the stopping rule, the same for every variant
    if spec.dry_run:
        config = cpu_dry_run(config)
    limited = b["limit"] and not spec.dry_run
    config["budget_limit"] = b["limit"] if limited else _step_limit(config["trainer"])
    forced = f"preset {spec.preset_name} (forced)"
    sources = {config_key(k): forced for k in b["force"] + (["trainer.max_steps"] if b["limit"] else [])}
    config["overrides"] = list_overrides(entry, config, sources, "runner --dry-run" if spec.dry_run else "runner")
    return config


def auto_trainer_precision(accelerator: str) -> str:
    """Preset `trainer.precision: auto`: bf16 mixed precision where it is native (a CUDA GPU with bf16,
    a CPU with AVX-512 BF16/AMX: about 2x the fp32 steps per second), else fp32 (emulated bf16 is slower)."""
    from benchmark.inference.predictor import resolve_precision

    device = "cpu" if accelerator == "cpu" else ("cuda" if _cuda_available() else "cpu")
    return "bf16-mixed" if resolve_precision("auto", device) == "bf16" else "32-true"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _step_limit(trainer: dict) -> dict:
    steps = trainer.get("max_steps")
    return {"steps": steps} if steps not in (None, -1) else {"epochs": trainer.get("max_epochs")}


def config_key(force_key: str) -> str:
    """A `force:` key (`model.lr`) as a key of the LightningCLI config (`model.init_args.lr`)."""
    section, rest = force_key.split(".", 1)
    return force_key if section == "trainer" else f"{section}.init_args.{rest}"


DRY_RUN_STEPS = 2


def cpu_dry_run(config: dict) -> dict:
    """The same run on one CPU process for a few steps: catches a broken (e.g. gpu) preset without a GPU.

    Only where the run happens and how long changes (accelerator, devices, nodes, strategy, steps,
    validation batches, timing repeats); precision, batch and patch sizes, loss, lr, resampling and
    the other preset settings stay as they are. bf16 mixed precision runs on CPUs too.
    """
    trainer = dict(config["trainer"])
    steps = trainer.get("max_steps") or -1
    trainer.update(accelerator="cpu", devices=1, num_nodes=1, strategy="auto", max_epochs=-1,
                   max_steps=min(steps, DRY_RUN_STEPS) if steps > 0 else DRY_RUN_STEPS,
                   check_val_every_n_epoch=None, limit_val_batches=1)
    trainer["val_check_interval"] = trainer["max_steps"]  # validate (and checkpoint) once, at the end
    if trainer.get("precision") == "16-mixed":  # fp16 autocast is GPU-only in Lightning
        trainer["precision"] = "bf16-mixed"
    timing = {**config.get("timing", {}), "warmup": 0, "repeats": 1, "flops": False}
    if timing.get("precision") == "fp16":
        timing["precision"] = "bf16"
    data = dict(config["data"]["init_args"])
    data["num_workers"] = 0  # the CPU test machines have 2 cores
    return {**config, "trainer": trainer, "timing": timing,
            "data": {**config["data"], "init_args": data}, "dry_run": True}
