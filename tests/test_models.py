"""Generic model tests, parametrised over the registry: a new model needs no test edits.

Also home of `TinyVolumeDataModule`, a synthetic DataModule with the LiverDataModule batch
contract (other model tests import it), so models are tested without the data pipeline.
"""
from __future__ import annotations

import math
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import models
from common.files import DataError
from models.base import overlap_scores
from models.network import load_network
from models.registry import missing_requirements

ALL_MODELS = models.list_models()
# Models whose overfit check is in the default run, with small widths to fit the CI budget;
# every other registered model gets it with `make test-all` (slow).
FAST_OVERFIT = {"unet2d": {"features": 8, "depth": 3}}
OVERFIT_STEPS = {"attention_unet": 60}  # 40 steps reached training Dice 0.842 (< 0.85) on the 2-core AMD EPYC


def synthetic_volume(seed: int, shape=(32, 32, 16)) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipsoid 'liver' beside a same-intensity ball (the 'spleen': not liver), plus noise.

    The model has to use shape and position, not just a threshold.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    centre = np.array([-0.3, 0.0, 0.0]) + rng.uniform(-0.1, 0.1, 3)
    radii = np.array([0.45, 0.55, 0.7]) * rng.uniform(0.85, 1.15, 3)
    liver = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) < 1
    spleen = (((grid - np.array([0.6, 0.2, 0.0])[:, None, None, None]) / 0.25) ** 2).sum(0) < 1
    image = (liver | spleen).astype(np.float32) + rng.normal(0, 0.3, shape).astype(np.float32)
    return image, liver.astype(np.float32)


def phantom_volume(seed: int = 0, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """One CT phantom case at 6 mm, liver window, cropped in-plane around the liver (liver slices only)."""
    from datamodules.phantom import generate_case

    case = generate_case(seed, modality="ct", spacing=(6.0, 6.0, 6.0))
    liver = case.label > 0
    image = (np.clip(case.image.astype(np.float32), -100, 240) - 70) / 170
    cx, cy = (int(c.mean()) for c in np.nonzero(liver)[:2])
    z = np.nonzero(liver.any((0, 1)))[0]
    x0 = int(np.clip(cx - size // 2, 0, liver.shape[0] - size))
    y0 = int(np.clip(cy - size // 2, 0, liver.shape[1] - size))
    window = (slice(x0, x0 + size), slice(y0, y0 + size), slice(z.min(), z.max() + 1))
    return image[window], liver[window].astype(np.float32)


class _Slices(Dataset):
    def __init__(self, volumes, dims: int, patch: int):
        self.items = []
        for image, label in volumes:
            if dims == 2:
                self.items += [(image[..., z], label[..., z]) for z in range(image.shape[-1])]
            else:
                self.items.append((image[:patch, :patch, :patch], label[:patch, :patch, :patch]))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        image, label = self.items[i]
        return {"image": torch.from_numpy(image)[None], "label": torch.from_numpy(label)[None]}


class _Volumes(Dataset):
    def __init__(self, volumes, names):
        self.volumes, self.names = volumes, names

    def __len__(self):
        return len(self.volumes)

    def __getitem__(self, i):
        image, label = self.volumes[i]
        return {"image": torch.from_numpy(image)[None], "label": torch.from_numpy(label)[None], "case": self.names[i]}


class TinyVolumeDataModule(L.LightningDataModule):
    """Synthetic data with the LiverDataModule contract: slices/patches to train, whole volumes to evaluate."""

    def __init__(self, dims: int = 2, train_cases: int = 1, val_cases: int = 1, shape=(32, 32, 16),
                 batch_size: int = 8, patch_size: int = 16, seed: int = 0, volumes=None):
        super().__init__()
        self.dims, self.batch_size, self.patch_size = dims, batch_size, patch_size
        vols = volumes or [synthetic_volume(seed + i, tuple(shape)) for i in range(train_cases + val_cases)]
        self.train_set = _Slices(vols[:train_cases], dims, patch_size)
        self.val_set = _Volumes(vols[train_cases:], [f"case{seed + i}" for i in range(train_cases, len(vols))])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=1)

    test_dataloader = val_dataloader


def tiny_input(model, shape2d=(2, 1, 32, 32), shape3d=(1, 1, 32, 32, 32)) -> torch.Tensor:
    return torch.randn(shape2d if model.spatial_dims == 2 else shape3d)


def make(name: str, **kwargs):
    missing = missing_requirements(models.get_model_class(name))
    if missing:
        pytest.skip(f"{name} needs {missing} (not installed)")
    torch.manual_seed(0)
    return models.create_model(name, **kwargs)


def quick_trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kwargs})


# ---- generic behaviour of every registered model ---------------------------------------------
@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_gives_two_class_logits(name):
    model = make(name).eval()
    x = tiny_input(model)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (x.shape[0], 2, *x.shape[2:])
    assert torch.isfinite(y).all()
    assert model.spatial_dims in (2, 3)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_backward_reaches_every_parameter(name):
    model = make(name).train()
    x = tiny_input(model)
    loss = model.compute_loss(model(x), (x > 0).float())
    loss.backward()
    without_grad = [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not without_grad, f"parameters unreachable by backward: {without_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_odd_input_sizes_keep_their_shape(name):
    model = make(name).eval()
    x = torch.randn((1, 1, 33, 27) if model.spatial_dims == 2 else (1, 1, 19, 23, 17))
    with torch.no_grad():
        assert model(x).shape == (1, 2, *x.shape[2:])
    with pytest.raises(ValueError, match=f"{model.spatial_dims}D model"):
        model(x[0])  # missing batch axis: a clear error, not a conv shape error


@pytest.mark.parametrize("name", ALL_MODELS)
def test_predict_volume_covers_the_whole_volume(name):
    model = make(name, roi_size=[16, 16, 16]).eval()
    volume = torch.randn(1, 1, 24, 20, 7)
    logits = model.predict_volume(volume)
    assert logits.shape == (1, 2, 24, 20, 7)
    assert torch.isfinite(logits).all()
    if model.spatial_dims == 2:  # slice z of the volume is exactly the 2D forward of that slice
        with torch.no_grad():
            torch.testing.assert_close(logits[..., 3], model(volume[..., 3]))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_checkpoint_round_trip_gives_identical_outputs(name, tmp_path):
    model = make(name)
    dm = TinyVolumeDataModule(dims=model.spatial_dims, shape=(16, 16, 8), batch_size=4, patch_size=16)
    trainer = quick_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    restored, preprocessing = models.load_module(path)
    assert type(restored) is type(model) and preprocessing is None
    assert restored.hparams == model.hparams
    x = tiny_input(model)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)
    via_lightning = type(model).load_from_checkpoint(path).eval()
    with torch.no_grad():
        torch.testing.assert_close(via_lightning(x), model(x), rtol=0, atol=0)
    network_only, _ = load_network(path)  # what `liverbench predict` loads: no LightningModule
    assert not isinstance(network_only, L.LightningModule) and network_only.spatial_dims == model.spatial_dims
    with torch.no_grad():
        torch.testing.assert_close(network_only(x), model(x), rtol=0, atol=0)
        volume = torch.randn(1, 1, 20, 18, 6)
        torch.testing.assert_close(network_only.predict_volume(volume), model.predict_volume(volume), rtol=0, atol=0)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if n in FAST_OVERFIT else pytest.mark.slow) for n in ALL_MODELS]
)
def test_overfits_one_case(name, tmp_path):
    """A real learning check: a few dozen steps on one phantom case drive the training Dice clearly up."""
    L.seed_everything(0)
    model = make(name, lr=3e-3, dropout=0.0, **FAST_OVERFIT.get(name, {}))
    dm = TinyVolumeDataModule(dims=model.spatial_dims, train_cases=1, val_cases=0, batch_size=8, patch_size=48,
                              volumes=[phantom_volume(0)])
    batch = next(iter(DataLoader(dm.train_set, batch_size=len(dm.train_set))))
    before = _dice(model, batch)
    model.train()
    trainer = quick_trainer(tmp_path, max_steps=OVERFIT_STEPS.get(name, 40), limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    after = _dice(model, batch)
    print(f"overfit {name}: training Dice {before:.3f} -> {after:.3f}")
    assert after > 0.85 and after > before + 0.3, f"Dice before {before:.3f}, after {after:.3f}"
    assert trainer.callback_metrics["train/dice_grid"] > before


def _dice(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(batch["image"]).argmax(1)
    return float(overlap_scores(pred, batch["label"][:, 0] > 0.5, per_sample=False)["dice"])


# ---- base-class behaviour on known inputs ----------------------------------------------------
def test_overlap_scores_on_known_masks():
    pred = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    gt = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    s = overlap_scores(pred, gt)
    torch.testing.assert_close(s["dice"], torch.tensor([0.5, 0.0, 1.0]))
    torch.testing.assert_close(s["jaccard"], torch.tensor([1 / 3, 0.0, 1.0]))
    torch.testing.assert_close(s["precision"], torch.tensor([0.5, 0.0, 1.0]))
    torch.testing.assert_close(s["recall"], torch.tensor([0.5, 0.0, 1.0]))
    pooled = overlap_scores(pred, gt, per_sample=False)  # TP 1, FP 1, FN 2
    assert math.isclose(float(pooled["dice"]), 2 / 5, rel_tol=1e-6)


def test_training_overlap_scores_are_the_scored_ones():
    """One definition (`models.overlap`): per volume, the training metrics (`*_grid`) are the benchmark's
    scores of the same masks (`benchmark.scoring.metrics.case_metrics`) rounded to float32, an empty prediction too."""
    from benchmark.scoring.metrics import case_metrics
    from models.base import METRICS

    rng = np.random.default_rng(0)
    pred, gt = torch.from_numpy(rng.random((3, 10, 12, 6)) < 0.4), torch.from_numpy(rng.random((3, 10, 12, 6)) < 0.3)
    pred[1] = False
    scores = overlap_scores(pred, gt)
    for i in range(3):
        scored = case_metrics(pred[i].numpy(), gt[i].numpy())
        assert {name: scores[name][i].item() for name in METRICS} == {name: float(np.float32(scored[name]))
                                                                       for name in METRICS}
    assert scores["dice"][1].item() == 0.0 and scores["precision"][1].item() == 0.0


def test_validation_logs_per_volume_mean_dice(tmp_path):
    """val/dice_grid is the mean over volumes of each volume's 3D Dice (not one pooled number)."""
    model = make("unet2d", features=4, depth=2)
    dm = TinyVolumeDataModule(dims=2, train_cases=1, val_cases=3, shape=(16, 16, 8))
    trainer = quick_trainer(tmp_path)
    metrics = trainer.validate(model, datamodule=dm, verbose=False)[0]
    model.eval()
    expected = []
    for item in dm.val_set:
        pred = model.predict_volume(item["image"][None]).argmax(1)
        expected.append(float(overlap_scores(pred, item["label"] > 0.5)["dice"]))
    assert set(metrics) >= {"val/dice_grid", "val/jaccard_grid", "val/precision_grid", "val/recall_grid", "val/loss"}
    assert math.isclose(metrics["val/dice_grid"], float(np.mean(expected)), rel_tol=1e-5)


def test_default_training_recipe_is_the_papers():
    model = make("unet2d")
    assert model.hparams.loss == "ce" and model.hparams.lr == 1e-4 and model.hparams.dropout > 0
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 1e-4
    x, y = torch.randn(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    logits = model(x)
    torch.testing.assert_close(model.compute_loss(logits, y), torch.nn.functional.cross_entropy(logits, y[:, 0].long()))
    dice_ce = make("unet2d", loss="dice_ce")
    assert dice_ce.compute_loss(logits, y) > 0
    with pytest.raises(ValueError, match="loss must be one of"):
        make("unet2d", loss="focal")


def test_dims_mismatch_with_datamodule_fails_clearly(tmp_path):
    model = make("unet3d")
    dm = TinyVolumeDataModule(dims=2, shape=(16, 16, 8))
    with pytest.raises(ValueError, match="is 3D but the DataModule .* dims=2"):
        quick_trainer(tmp_path, max_steps=1).fit(model, datamodule=dm)


def test_3d_model_built_by_hand_keeps_its_own_windows_and_warns_of_another_patch(tmp_path):
    """Fitting never changes hyperparameters: unset roi_size stays the model's default whatever the
    DataModule serves (with a warning naming the fix); a roi_size passed to the model is used as given."""
    dm = TinyVolumeDataModule(dims=3, shape=(16, 16, 16), patch_size=12)
    model = make("unet3d", features=4, depth=2)
    with pytest.warns(UserWarning, match=r"roi_size is unset.*window \[64, 64, 64\].*patch \[12, 12, 12\]"):
        quick_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, datamodule=dm)
    assert model.hparams.roi_size is None and model.roi_size == (64, 64, 64)
    chosen = make("unet3d", features=4, depth=2, roi_size=[12, 12, 12])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*roi_size is unset")
        quick_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(chosen, datamodule=dm)
    assert chosen.hparams.roi_size == [12, 12, 12] and chosen.roi_size == (12, 12, 12)


def test_3d_models_train_channels_last_with_the_same_result(tmp_path):
    """3D models train with channels-last weights and inputs (faster on CPUs: docs/speed.md); the
    memory format changes the speed, not the arithmetic: the same seed gives the same weights (fp32)."""
    weights = {}
    for channels_last in (True, False):
        L.seed_everything(0)
        model = make("unet3d", features=4, depth=2)
        model.train_channels_last = channels_last
        dm = TinyVolumeDataModule(dims=3, shape=(16, 16, 16), patch_size=12)
        fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
        convs = [p for p in model.parameters() if p.ndim == 5]
        layouts = []  # during training: (every conv in `fmt`, some conv not contiguous); (C, 1, k, k, k) is both
        model.on_train_batch_end = lambda *_: layouts.append(
            (all(p.is_contiguous(memory_format=fmt) for p in convs), any(not p.is_contiguous() for p in convs)))
        quick_trainer(tmp_path, max_steps=3, limit_val_batches=0).fit(model, datamodule=dm)
        assert convs and layouts == [(True, channels_last)] * 3
        assert all(p.is_contiguous() for p in model.parameters())  # after fit: as a restored checkpoint
        weights[channels_last] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.allclose(weights[True], weights[False], atol=1e-5)
    assert make("unet3d")._training_memory_format == torch.channels_last_3d  # the default for 3D
    assert make("unet2d")._training_memory_format == torch.contiguous_format  # and 2D


def test_load_module_rejects_foreign_and_corrupt_files(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {}}, foreign)
    with pytest.raises(DataError, match="foreign.ckpt: not a LiverBench checkpoint"):
        models.load_module(foreign)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="corrupt.ckpt: not a readable PyTorch checkpoint"):
        models.load_module(corrupt)
    with pytest.raises(DataError, match="missing.ckpt: checkpoint file not found"):
        models.load_module(tmp_path / "missing.ckpt")


# ---- transfer learning ------------------------------------------------------------------------
def _saved_checkpoint(model, path):
    """A checkpoint written by a real (1-step) Lightning run."""
    dm = TinyVolumeDataModule(dims=model.spatial_dims, shape=(16, 16, 8), batch_size=4, patch_size=16)
    trainer = quick_trainer(path.parent, max_steps=1, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(path)
    return path


def test_init_from_copies_matching_weights_and_reports_the_rest(tmp_path, caplog):
    source = make("unet2d", features=4, depth=2)
    ckpt = _saved_checkpoint(source, tmp_path / "ct.ckpt")
    with caplog.at_level("WARNING", logger="models.checkpoint"):
        target = make("unet2d", features=4, depth=3, init_from=str(ckpt))
    report = target.init_report
    assert "net.down.0.0.weight" in report.loaded  # first level: same shape, copied
    torch.testing.assert_close(target.state_dict()["net.down.0.0.weight"], source.state_dict()["net.down.0.0.weight"])
    assert any(k.startswith("net.down.3.") for k in report.missing)  # new deepest level
    assert any(k.startswith("net.decode.0.0.weight") for k in report.mismatched)
    assert "shape mismatch (kept random init): net." in caplog.text and str(ckpt) in caplog.text

    # restoring the fine-tuned model never re-reads init_from (the source may be gone)
    fine_tuned = _saved_checkpoint(target, tmp_path / "mri.ckpt")
    ckpt.unlink()
    restored, _ = models.load_module(fine_tuned)
    assert restored.hparams.init_from is None


def test_init_from_with_nothing_in_common_is_an_error(tmp_path):
    ckpt = _saved_checkpoint(make("unet2d", features=4, depth=2), tmp_path / "2d.ckpt")
    with pytest.raises(DataError, match="2d.ckpt: no weight matches model AttentionUNet"):
        make("attention_unet", channels=[4, 8], init_from=str(ckpt))


def test_resnet_loads_a_local_state_dict_and_averages_the_rgb_stem(tmp_path):
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.resnet34(weights=None)
    path = tmp_path / "resnet34.pth"
    torch.save(reference.state_dict(), path)
    model = make("resnet_unet", pretrained=str(path))
    enc = model.net.encoder
    torch.testing.assert_close(enc.conv1.weight, reference.conv1.weight.mean(1, keepdim=True))
    torch.testing.assert_close(enc.layer4[2].conv2.weight, reference.layer4[2].conv2.weight)
    with pytest.raises(DataError, match="nowhere.pth: pretrained weights file not found"):
        make("resnet_unet", pretrained=str(tmp_path / "nowhere.pth"))


def test_resnet_imagenet_uses_the_torch_hub_cache(tmp_path, monkeypatch):
    """With the weights file in $TORCH_HOME/hub/checkpoints, no network is needed."""
    import torchvision

    from models import resnet_unet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(2)
    reference = torchvision.models.resnet34(weights=None)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / resnet_unet.IMAGENET_URL.rsplit("/", 1)[1])
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_hash_check(torch.hub.load_state_dict_from_url))
    model = make("resnet_unet", pretrained="imagenet")
    torch.testing.assert_close(model.net.encoder.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)


def _no_hash_check(load):
    """Our stand-in file cannot have torchvision's hash prefix; everything else is the real loader."""
    return lambda url, **kw: load(url, **{**kw, "check_hash": False})


def test_resnet_imagenet_offline_fails_fast_and_clearly(tmp_path, monkeypatch):
    import time

    from models import resnet_unet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(resnet_unet, "IMAGENET_URL", "http://127.0.0.1:9/resnet34-b627a593.pth")  # refused
    start = time.monotonic()
    with pytest.raises(resnet_unet.PretrainedWeightsUnavailable) as err:
        make("resnet_unet", pretrained="imagenet")
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "127.0.0.1:9/resnet34-b627a593.pth" in message and f"TORCH_HOME={tmp_path}" in message
    assert str(tmp_path / "hub" / "checkpoints") in message and "pretrained=none" in message
    # restoring a checkpoint never fetches weights: pretrained is switched off
    assert models.get_model_class("resnet_unet").weight_init_off["pretrained"] == "none"


def test_resnet_encoder_freezing_thaws_after_n_epochs(tmp_path):
    model = make("resnet_unet", freeze_encoder_epochs=1, decoder_channels=[16, 16, 16, 8, 8])
    frozen_before = model.net.encoder.layer1[0].conv1.weight.detach().clone()
    dm = TinyVolumeDataModule(dims=2, shape=(32, 32, 4), batch_size=4)
    quick_trainer(tmp_path, max_epochs=1, limit_val_batches=0).fit(model, datamodule=dm)
    torch.testing.assert_close(model.net.encoder.layer1[0].conv1.weight, frozen_before)  # epoch 0: frozen
    quick_trainer(tmp_path, max_epochs=2, limit_val_batches=0).fit(model, datamodule=dm)
    assert not torch.equal(model.net.encoder.layer1[0].conv1.weight, frozen_before)  # epoch 1: trained
