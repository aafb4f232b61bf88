"""One run's config: a suite entry's LightningCLI config under the preset's layers (`build_config`), exactly
what `liverbench fit` would take plus the runner-only sections; the per-dims/per-model `budget` of a preset,
the trainer precision `auto` resolves to, and the CPU dry run. Suites and presets are read by
`benchmark.run.plan`."""
from __future__ import annotations

import copy
from pathlib import Path

from benchmark.run.convergence import convergence_rule
from benchmark.run.overrides import check_force, derive_from_data, get_dotted, list_overrides, set_dotted
from benchmark.run.plan import DATAMODULES, RunSpec, deep_merge, read_yaml, time_budget
from common.files import DataError


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
            out["limit"] = time_budget(layer["budget"], preset.get("name"))
    return out


def _entry_wins(preset_values: dict, entry_values: dict, forced: list[str], section: str) -> dict:
    """The preset's values under the entry's, then the keys the preset forces back on top."""
    out = deep_merge(preset_values, entry_values)
    for key in forced:
        head, _, rest = key.partition(".")
        if head == section and get_dotted(preset_values, rest, None) is not None:
            set_dotted(out, rest, get_dotted(preset_values, rest))
    return out


def check_opening(evaluation: dict) -> None:
    """The post-processing of `evaluation:` is checked before training, not at the test."""
    from benchmark.scoring.postprocessing import check_postprocessing

    try:
        check_postprocessing(evaluation["largest_component"], evaluation.get("opening_mm", 0))
    except ValueError as exc:
        raise ValueError(f"evaluation: {exc}") from None


def build_config(spec: RunSpec, folder: Path) -> dict:
    """The entry's LightningCLI config with the modality's DataModule, the preset, data and seed."""
    entry = read_yaml(spec.entry_config)
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
    check_opening(config["evaluation"])
    # the stopping rule, the same for every variant; a time budget has no step cap for `drop_by` to be a share of
    rule = {**b["convergence"], "drop_by": None} if b["limit"] else b["convergence"]
    config["convergence"] = convergence_rule(rule)
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

    Only where the run happens and how long changes (accelerator, devices, nodes, strategy, steps, a
    warm-up longer than them, validation batches, timing repeats); batch and patch sizes, loss, lr, resampling and the other preset
    settings stay as they are. bf16 stays on a CPU with AVX-512 BF16/AMX; elsewhere it is emulated and took
    the gpu preset's dry run past 8 minutes on a 2-core AVX2 machine, so there the run, its timing and its
    scoring use fp32 (listed in `overrides`, like every other change).
    """
    from benchmark.inference.predictor import resolve_precision

    cpu_precision = resolve_precision("auto", "cpu")  # bf16 where native, else fp32
    trainer = dict(config["trainer"])
    steps = trainer.get("max_steps") or -1
    trainer.update(accelerator="cpu", devices=1, num_nodes=1, strategy="auto", max_epochs=-1,
                   max_steps=min(steps, DRY_RUN_STEPS) if steps > 0 else DRY_RUN_STEPS,
                   check_val_every_n_epoch=None, limit_val_batches=1)
    trainer["val_check_interval"] = trainer["max_steps"]  # validate (and checkpoint) once, at the end
    if trainer.get("precision") == "16-mixed":  # fp16 autocast is GPU-only in Lightning
        trainer["precision"] = "bf16-mixed"
    if str(trainer.get("precision")).startswith("bf16"):
        trainer["precision"] = auto_trainer_precision("cpu")
    timing = {**config.get("timing", {}), "warmup": 0, "repeats": 1, "flops": False}
    evaluation = dict(config.get("evaluation", {}))
    for section in (timing, evaluation):
        if section.get("precision") in ("fp16", "bf16"):
            section["precision"] = cpu_precision
    data = dict(config["data"]["init_args"])
    data["num_workers"] = 0  # the CPU test machines have 2 cores
    model = dict(config["model"]["init_args"])
    if (model.get("warmup_steps") or 0) >= trainer["max_steps"]:  # the cpu preset's 300 steps: a tenth of the
        model["warmup_steps"] = None  # dry run's steps instead, as the smoke layer does
    return {**config, "trainer": trainer, "timing": timing, **({"evaluation": evaluation} if evaluation else {}),
            "model": {**config["model"], "init_args": model}, "data": {**config["data"], "init_args": data},
            "dry_run": True}
