"""`liverbench fit|test --config ...` (LightningCLI): the paper's suite configs, Trainer pass-through."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy

import models
from benchmark.cli import main as liverbench
from benchmark.run.lightning_cli import LiverBenchCLI
from models.base import SegmentationModule
from models.registry import missing_requirements

SUITES = Path(__file__).resolve().parents[1] / "benchmark" / "suites"
PAPER = {  # the paper's Table 1 (DESIGN.md): variant -> (label, model, dims, augmentation, advanced)
    "unet_baseline": ("U-Net Baseline", "unet2d", 2, False, False),
    "unet_augmentation": ("U-Net + Augmentation", "unet2d", 2, "paper", False),
    "unet_advanced_preprocessing": ("U-Net + Advanced Preprocessing", "unet2d", 2, False, True),
    "cnn3d": ("3D CNN", "unet3d", 3, False, False),
    "cnn3d_augmentation": ("3D CNN + Augmentation", "unet3d", 3, "paper", False),
    "resnet_transfer": ("ResNet + Transfer Learning", "resnet_unet", 2, False, False),
}
# A small phantom and small crops keep the CLI runs inside the CI budget.
TINY_DATA = ["--data.init_args.phantom_cases=3", "--data.init_args.batch_size=2",
             "--data.init_args.samples_per_epoch=4"]


def _config(variant: str) -> str:
    return str(SUITES / "paper" / f"{variant}.yaml")


@pytest.mark.parametrize("suite", ["paper", "smoke"])
def test_suites_list_the_six_paper_variants(suite):
    spec = yaml.safe_load((SUITES / f"{suite}.yaml").read_text())
    assert spec["name"] == suite and spec["description"]
    six = [e for e in spec["entries"] if "init_from" not in e]
    assert [e["variant"] for e in six] == list(PAPER)
    for entry in six:
        assert entry["label"] == PAPER[entry["variant"]][0]
        assert (SUITES / entry["config"]).is_file()
    extra = [e for e in spec["entries"] if "init_from" in e]  # + the cross-modality transfer entry
    assert [(e["variant"], e["label"], e["modalities"], e["init_from"]) for e in extra] == [
        ("resnet_transfer_ct2mri", "ResNet + Transfer (CT→MRI)", ["mri"], {"variant": "resnet_transfer", "modality": "ct"})]


@pytest.mark.parametrize("variant", list(PAPER))
def test_paper_configs_build_the_right_model_and_data_recipe(variant, tmp_path):
    _, model_name, dims, augmentation, advanced = PAPER[variant]
    extra = ["--model.init_args.pretrained=none"] if model_name == "resnet_unet" else []
    cli = LiverBenchCLI(args=["--config", _config(variant), *extra,
                              f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert cli.model.model_name == model_name and cli.model.spatial_dims == dims
    assert type(cli.datamodule).__name__ == "CTDataModule" and cli.datamodule.dims == dims
    assert cli.datamodule.hparams.augmentation == augmentation
    assert cli.datamodule.hparams.advanced_preprocessing is advanced
    assert cli.model.hparams.loss == "ce" and cli.model.hparams.lr == 1e-4 and cli.model.hparams.dropout > 0
    raw = yaml.safe_load(Path(_config(variant)).read_text())
    assert set(raw) == {"model", "data"}, "suite configs carry no trainer budget (the runner's presets do)"
    if model_name == "resnet_unet":
        assert raw["model"]["init_args"]["pretrained"] == "imagenet"


def test_trainer_settings_pass_through(tmp_path):
    cli = LiverBenchCLI(args=[
        "--config", _config("unet_baseline"), "--trainer.accelerator=cpu", "--trainer.devices=2",
        "--trainer.strategy=ddp", "--trainer.num_nodes=1", "--trainer.precision=bf16-mixed",
        "--trainer.accumulate_grad_batches=3", f"--trainer.default_root_dir={tmp_path}"], run=False)
    trainer = cli.trainer
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2 and trainer.num_nodes == 1
    assert trainer.precision == "bf16-mixed" and trainer.accumulate_grad_batches == 3
    best = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    assert best and best[0].monitor == "val/dice_grid" and best[0].mode == "max"


def test_fit_then_test_unet_baseline_with_fast_dev_run(tmp_path):
    """The README's command on the default (phantom) data, fit then test."""
    args = ["--config", _config("unet_baseline"), "--trainer.fast_dev_run=true", *TINY_DATA,
            "--data.init_args.patch_size=[64,64]", f"--trainer.default_root_dir={tmp_path}"]
    assert liverbench(["fit", *args]) == 0
    cli = LiverBenchCLI(args=["test", *args])
    metrics = cli.trainer.callback_metrics
    assert {"test/dice_grid", "test/jaccard_grid", "test/precision_grid", "test/recall_grid"} <= set(metrics)
    assert 0.0 <= float(metrics["test/dice_grid"]) <= 1.0


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if n == "unet3d" else pytest.mark.slow) for n in models.list_models()]
)
def test_every_model_fits_and_tests_through_the_cli(name, tmp_path):
    cls = models.get_model_class(name)
    if missing_requirements(cls):
        pytest.skip(f"{name} needs {missing_requirements(cls)}")
    dims = cls().spatial_dims
    patch = "[32,32,32]" if dims == 3 else "[64,64]"
    args = ["--model", f"{cls.__module__}.{cls.__qualname__}", "--data", "datamodules.CTDataModule",
            f"--data.dims={dims}", f"--data.patch_size={patch}", *TINY_DATA, "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}"]
    assert liverbench(["fit", *args]) == 0
    assert liverbench(["test", *args]) == 0


def test_resnet_transfer_offline_fails_clearly(tmp_path, monkeypatch, capsys):
    from models import resnet_unet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(resnet_unet, "IMAGENET_URL", "http://127.0.0.1:9/resnet34-b627a593.pth")
    code = liverbench(["fit", "--config", _config("resnet_transfer"), "--trainer.fast_dev_run=true",
                       f"--trainer.default_root_dir={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "error: cannot get ImageNet weights for ResNet-34" in err and "TORCH_HOME" in err


def test_cli_checkpoint_restores_model_and_preprocessing(tmp_path):
    """The best-`val/dice_grid` checkpoint of a real CLI run loads with `weights_only=True`, alone."""
    args = ["--config", _config("unet_baseline"), *TINY_DATA, "--data.init_args.patch_size=[64,64]",
            "--model.init_args.features=4", "--model.init_args.depth=2", "--data.init_args.samples_per_epoch=2",
            "--trainer.max_epochs=1",
            "--trainer.limit_val_batches=1", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}"]
    cli = LiverBenchCLI(args=["fit", *args])
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert best.is_file() and best.name.startswith("best-")
    module, preprocessing = models.load_module(best)
    assert module.model_name == "unet2d" and module.hparams.features == 4
    assert preprocessing == cli.datamodule.preprocessing and preprocessing["modality"] == "ct"
    x = torch.randn(1, 1, 32, 32)
    cli.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(x), cli.model(x))
        for loader in (type(cli.model), SegmentationModule):  # Lightning's own loader works too
            torch.testing.assert_close(loader.load_from_checkpoint(best).eval()(x), cli.model(x))
