"""Preset vs entry: the entry's values win unless the preset forces a key; every difference listed."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.run import plan, run_config
from benchmark.run.overrides import derive_from_data, flatten, list_overrides

ENTRY = """
model:
  class_path: models.unet2d.UNet2D
  init_args: {features: 16, lr: 0.0001, dropout: 0.1}
data:
  class_path: datamodules.CTDataModule
  init_args: {dims: 2, batch_size: 16}
trainer: {max_steps: 999}
"""


def _spec(tmp_path: Path, preset_text: str, modality: str = "ct", dry_run: bool = False) -> plan.RunSpec:
    (tmp_path / "entry.yaml").write_text(ENTRY)
    (tmp_path / "preset.yaml").write_text(preset_text)
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: mine\nentries:\n  - {variant: v, config: entry.yaml}\n")
    runs = plan.plan_runs(plan.load_suite(str(suite)), plan.load_preset(str(tmp_path / "preset.yaml")),
                          [modality], [3], "phantom", tmp_path / "out", dry_run=dry_run)
    return runs[0]


def test_entry_wins_unless_the_preset_forces_and_every_difference_is_listed(tmp_path):
    spec = _spec(tmp_path, "name: p\nforce: [model.lr]\nmodel: {lr: 0.001, dropout: 0.5, loss: ce}\n"
                           "data: {batch_size: 4, preset: cpu}\ntrainer: {max_steps: 10, accelerator: cpu}\n",
                 modality="mri")
    config = run_config.build_config(spec, tmp_path / "run")
    model, data, trainer = config["model"]["init_args"], config["data"]["init_args"], config["trainer"]
    assert model["lr"] == 0.001  # forced by the preset
    assert model["dropout"] == 0.1 and data["batch_size"] == 16 and trainer["max_steps"] == 999  # entry wins
    assert model["loss"] == "ce" and data["preset"] == "cpu" and trainer["accelerator"] == "cpu"  # defaults
    assert data["seed"] == 3  # sampling follows the run's seed
    assert config["budget_limit"] == {"steps": 999}
    assert config["overrides"] == [
        {"key": "data.class_path", "entry": "datamodules.CTDataModule",
         "used": "datamodules.datamodule.MRIDataModule", "source": "runner"},
        {"key": "model.init_args.lr", "entry": 0.0001, "used": 0.001, "source": "preset p (forced)"},
    ]


def test_time_budget_replaces_steps_and_is_listed(tmp_path):
    spec = _spec(tmp_path, "name: t\nbudget: {seconds: 90}\ntrainer: {max_steps: 10}\n")
    config = run_config.build_config(spec, tmp_path / "run")
    assert config["trainer"]["max_time"] == {"seconds": 90.0} and config["trainer"]["max_steps"] == -1
    assert config["budget_limit"] == {"seconds": 90.0}
    assert {"key": "trainer.max_steps", "entry": 999, "used": -1, "source": "preset t (forced)"} in config["overrides"]
    dry = run_config.build_config(_spec(tmp_path, "name: t\nbudget: {seconds: 90}\n", dry_run=True), tmp_path / "run")
    assert dry["budget_limit"] == {"steps": run_config.DRY_RUN_STEPS}


def test_a_time_budget_drops_the_step_deadline_of_the_rule(tmp_path):
    """`drop_by` is a share of max_steps; a time budget has none, so the recorded rule says drop_by: null."""
    rule = "convergence: {lr_drops: 1, drop_by: 0.6}\n"
    timed = run_config.build_config(_spec(tmp_path, "name: t\nbudget: {seconds: 90}\n" + rule), tmp_path / "run")
    assert timed["convergence"]["drop_by"] is None and timed["convergence"]["lr_drops"] == 1
    stepped = run_config.build_config(_spec(tmp_path, "name: s\n" + rule), tmp_path / "run2")
    assert stepped["convergence"]["drop_by"] == 0.6


@pytest.mark.parametrize("text, message", [
    ("name: b\nbudget: {seconds: 0}\n", "budget` must be"),
    ("name: b\nbudget: {steps: 5}\n", "budget` must be"),
    ("name: b\nforce: model.lr\n", "must be a list"),
    ("name: b\nforce: [lr]\n", "must start with model., data. or trainer."),
])
def test_bad_force_or_budget_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(plan.DataError, match=message) as err:  # when the preset is read, before any run
        _spec(tmp_path, text)
    assert str(tmp_path / "preset.yaml") in str(err.value)


def test_cpu_preset_lists_what_it_changes_in_the_paper_recipe(tmp_path):
    runs = plan.plan_runs(plan.load_suite("paper"), plan.load_preset("cpu"), ["ct"], [0], "phantom", tmp_path)
    config = run_config.build_config(runs[0], tmp_path / "run")  # U-Net baseline: paper lr 1e-4, batch 16
    listed = {o["key"]: (o["entry"], o["used"], o["source"]) for o in config["overrides"]}
    assert listed == {"model.init_args.lr": (0.0001, 0.003, "preset cpu (forced)"),
                      "model.init_args.loss": ("ce", "dice_ce", "preset cpu (forced)"),
                      "model.init_args.lr_schedule": (None, "warmup", "preset cpu (forced)"),
                      "data.init_args.batch_size": (16, 8, "preset cpu (forced)"),
                      "model.init_args.ema_decay": (None, 0.99, "preset cpu (forced)")}
    gpu = run_config.build_config(plan.plan_runs(plan.load_suite("paper"), plan.load_preset("gpu"), ["ct"], [0],
                                           "phantom", tmp_path)[0], tmp_path / "run")
    assert gpu["overrides"] == []  # the gpu preset is the paper's recipe
    assert gpu["budget_limit"] == {"epochs": 100}


def test_a_3d_run_config_names_its_sliding_window_the_training_patch(tmp_path):
    """roi_size follows from the data where the run config is built (result.json names it, the module never
    sets it at setup): the preset's patch, else the DataModule's default; the entry's own value wins."""
    from benchmark.run.reuse import comparable

    for preset, patch in (("cpu", [48, 48, 48]), ("gpu", [128, 128, 128])):
        runs = plan.plan_runs(plan.load_suite("paper"), plan.load_preset(preset), ["ct"], [0], "phantom", tmp_path)
        configs = {r.variant: run_config.build_config(r, tmp_path / "run") for r in runs}
        assert configs["cnn3d"]["model"]["init_args"]["roi_size"] == patch
        assert "roi_size" not in configs["unet_baseline"]["model"]["init_args"]  # 2D: no windows
        assert not [o for o in configs["cnn3d"]["overrides"] if "roi_size" in o["key"]]  # the entry left it unset
    unset = {"model": {"init_args": {}}, "data": {"init_args": {"dims": 3, "preset": "gpu"}}}
    assert derive_from_data(unset)["model"]["init_args"]["roi_size"] == [128, 128, 64]  # DataModule default
    own = {"model": {"init_args": {"roi_size": [16, 16, 16]}}, "data": {"init_args": {"dims": 3, "patch_size": [8] * 3}}}
    assert derive_from_data(own)["model"]["init_args"]["roi_size"] == [16, 16, 16]
    # a record written before roi_size was named (its module took the patch at setup) is the same experiment
    config = configs["cnn3d"]
    before = {**config, "model": {**config["model"], "init_args": {
        k: v for k, v in config["model"]["init_args"].items() if k != "roi_size"}}}
    assert comparable(before) == comparable(config)
    other = {**config, "model": {**config["model"], "init_args": {**config["model"]["init_args"], "roi_size": [64] * 3}}}
    assert comparable(other) != comparable(config)


def test_list_overrides_compares_class_paths_by_class_and_flattens():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}
    entry = {"data": {"class_path": "datamodules.CTDataModule", "init_args": {"x": 1}}}
    used = {"data": {"class_path": "datamodules.datamodule.CTDataModule", "init_args": {"x": 1}}}
    assert list_overrides(entry, used, {}) == []


def test_still_improving_flags_a_curve_that_rises_at_the_end():
    from benchmark.run.stages.budget import still_improving

    assert still_improving([0.5, 0.6, 0.7]) is True
    assert still_improving([0.5, 0.7, 0.701]) is False  # within the 0.002 margin: flat
    assert still_improving([0.7, 0.6]) is False and still_improving([0.7]) is False
