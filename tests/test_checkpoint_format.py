"""A checkpoint describes itself: model, network and preprocessing config as named top-level entries.

The preprocessing config is read by name (`liverbench_preprocessing`); checkpoints saved before that
entry existed (up to commit f5b5766: the config only inside the DataModule's Lightning state) still
load, through the one fallback `models.checkpoint_format.legacy_preprocessing`.
"""
from __future__ import annotations

import pytest
import torch
from test_models import TinyVolumeDataModule, make, quick_trainer

import models
from datamodules.transforms import preprocessing_config
from models.checkpoint_format import PREPROCESSING_KEY, describe_checkpoint, stored_preprocessing
from models.network import load_network


class PreprocessedVolumes(TinyVolumeDataModule):
    """TinyVolumeDataModule with a LiverDataModule's preprocessing config and state (what Lightning
    stores under the DataModule's qualname in every checkpoint)."""

    def __init__(self, preprocessing: dict, **kwargs):
        super().__init__(**kwargs)
        self.preprocessing = preprocessing

    def state_dict(self):
        return {"preprocessing": self.preprocessing, "split": {"train": ["case0"], "val": ["case1"]}}


def _fitted_checkpoint(tmp_path, datamodule, name="model.ckpt"):
    model = make("unet2d", features=4, depth=2)
    trainer = quick_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / name)
    return tmp_path / name


def test_a_new_checkpoint_names_its_preprocessing_and_an_old_one_gives_the_same(tmp_path):
    config = preprocessing_config("mri", "cpu")
    path = _fitted_checkpoint(tmp_path, PreprocessedVolumes(config, dims=2, shape=(16, 16, 8)))
    ckpt = torch.load(path, weights_only=True)
    assert ckpt[PREPROCESSING_KEY] == config
    assert {"liverbench_model", "liverbench_network"} <= set(ckpt)
    # as commit f5b5766 wrote it: the same file without the entry (the DataModule's state is still there)
    old = {k: v for k, v in ckpt.items() if k != PREPROCESSING_KEY}
    assert old["PreprocessedVolumes"]["preprocessing"] == config
    torch.save(old, tmp_path / "old.ckpt")
    for loaded in (path, tmp_path / "old.ckpt"):
        assert models.load_module(loaded)[1] == config
        assert load_network(loaded)[1] == config  # the `liverbench predict` path


def test_the_named_entry_wins_and_none_means_trained_without_a_datamodule_config(tmp_path):
    path = _fitted_checkpoint(tmp_path, TinyVolumeDataModule(dims=2, shape=(16, 16, 8)))
    ckpt = torch.load(path, weights_only=True)
    assert PREPROCESSING_KEY in ckpt and ckpt[PREPROCESSING_KEY] is None
    assert models.load_module(path)[1] is None
    stale = {**ckpt, "SomeDataModule": {"preprocessing": preprocessing_config("ct")}}
    assert stored_preprocessing(stale) is None  # read by name: no scan once the entry exists
    assert stored_preprocessing({k: v for k, v in stale.items() if k != PREPROCESSING_KEY})["modality"] == "ct"


def test_saved_without_a_trainer_there_is_no_preprocessing_entry():
    """Called by hand, nothing says which data the module saw: no entry rather than a wrong None."""
    entries = describe_checkpoint(make("unet2d", features=4, depth=2))
    assert entries["liverbench_model"] == "unet2d" and PREPROCESSING_KEY not in entries


@pytest.mark.filterwarnings("ignore:.*roi_size is unset")
@pytest.mark.parametrize("name,dims", [("unet3d", 3), ("unet2d", 2)])
def test_load_module_overrides_constructor_arguments(tmp_path, name, dims):
    """`load_module(path, roi_size=...)`: the same weights with other sliding windows (gpu-check)."""
    model = make(name, features=4, depth=2)
    trainer = quick_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(model, datamodule=TinyVolumeDataModule(dims=dims, shape=(16, 16, 16), patch_size=16))
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    module, _ = models.load_module(tmp_path / "m.ckpt", roi_size=[40, 40, 16])
    assert module.roi_size == (40, 40, 16) and models.load_module(tmp_path / "m.ckpt")[0].roi_size == (64, 64, 64)
    torch.testing.assert_close(module.state_dict(), model.state_dict(), rtol=0, atol=0)
