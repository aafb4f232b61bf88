"""2.5D input (`slice_context`): the same neighbouring slices as channels in training, validation and inference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_predict import _save_ckpt

from benchmark.inference.predictor import Predictor
from benchmark.run.overrides import derive_from_data
from common.slice_context import with_slice_context
from datamodules.datamodule import LiverDataModule
from datamodules.datasets import SliceDataset, Volume, VolumeDataset
from datamodules.transforms import preprocessing_config
from models import create_model
from models.network import liver_margin, load_network


def _volume(depth=9) -> Volume:
    image = np.arange(24 * 20 * depth, dtype=np.float32).reshape(24, 20, depth)
    label = np.zeros(image.shape, np.uint8)
    label[6:18, 5:15, 2:7] = 1
    return Volume("c", image, label, np.diag([3.0, 3.0, 3.0, 1.0]))


def test_neighbours_are_channels_channel_major_with_the_edge_slice_repeated():
    volume = np.arange(2 * 2 * 2 * 4, dtype=np.float32).reshape(2, 2, 2, 4)  # (C, X, Y, Z)
    out = with_slice_context(volume, 1)
    assert out.shape == (6, 2, 2, 4)
    # channel 0 of the input at offsets -1, 0, +1, slices 0..3: slice 0's lower neighbour is slice 0 itself
    assert out[:3, 0, 0].tolist() == [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 3]]
    assert np.array_equal(out[3:], with_slice_context(volume[1:], 1))  # then the offsets of channel 1
    assert with_slice_context(volume, 2, [3]).shape == (10, 2, 2, 1)
    assert torch.equal(with_slice_context(torch.from_numpy(volume), 1), torch.from_numpy(out))
    with pytest.raises(IndexError, match="outside"):
        with_slice_context(volume, 1, [4])


def test_training_slice_keeps_its_sampling_and_adds_the_neighbours():
    plain = SliceDataset([_volume()], (16, 16), 8, liver_oversample=0.5, seed=3)
    context = SliceDataset([_volume()], (16, 16), 8, liver_oversample=0.5, seed=3, slice_context=2)
    checked = 0
    for i in range(8):
        a, b = plain[i], context[i]
        assert b["image"].shape == (5, 16, 16) and b["label"].shape == (1, 16, 16)
        assert torch.equal(b["image"][2:3], a["image"]) and torch.equal(b["label"], a["label"])
        # the image is x * 20 * 9 + y * 9 + z, so each channel is the centre slice shifted by its offset,
        # except where the shift leaves the volume (repeated edge) or the crop is padding
        inside = a["image"][0] > a["image"].min()
        z = int(a["image"][0][inside][0]) % 9 if inside.any() else None
        if z is not None and 2 <= z <= 6:
            for k, offset in enumerate(range(-2, 3)):
                assert torch.equal(b["image"][k][inside], a["image"][0][inside] + offset)
            checked += 1
    assert checked >= 3  # samples away from the volume's ends (6 of 8 with this seed)


def test_strided_validation_view_takes_neighbours_from_the_whole_volume():
    vol = _volume()
    item = VolumeDataset([vol], margin_mm=3.0, slice_stride=2, slice_context=1)[0]
    plain = VolumeDataset([vol], margin_mm=3.0, slice_stride=2)[0]
    assert item["image"].shape == (3, 14, 12, 4) and item["label"].shape == plain["label"].shape
    assert torch.equal(item["image"][1:2], plain["image"])
    # slices 1, 3, 5, 7 of the volume; the neighbours are the slices next to them, not 2 apart
    assert torch.equal(item["image"][0], plain["image"][0] - 1) and torch.equal(item["image"][2], plain["image"][0] + 1)
    assert np.allclose(item["image"].affine.numpy(), plain["image"].affine.numpy())


def test_model_builds_the_context_itself_or_takes_a_prebuilt_one():
    torch.manual_seed(0)
    model = create_model("unet2d", features=4, depth=2, in_channels=3, slice_context=1).eval()
    volume = torch.randn(1, 1, 16, 16, 6)
    out = model.predict_volume(volume)
    assert out.shape == (1, 2, 16, 16, 6)
    assert torch.equal(out, model.predict_volume(with_slice_context(volume, 1)))
    slice_3 = model(with_slice_context(volume, 1, [3])[..., 0])
    assert torch.allclose(out[..., 3], slice_3, atol=1e-6)
    with pytest.raises(ValueError, match="cannot take 2 image channels"):
        model.predict_volume(torch.randn(1, 2, 16, 16, 6))


@pytest.mark.parametrize("kwargs", [{"in_channels": 1, "slice_context": 1}, {"in_channels": 4, "slice_context": 1}])
def test_a_2d_model_needs_matching_input_channels(kwargs):
    with pytest.raises(ValueError, match="slice_context"):
        create_model("unet2d", features=4, depth=2, **kwargs)


def test_3d_models_and_3d_data_refuse_slice_context():
    with pytest.raises(ValueError, match="slice_context"):
        create_model("unet3d", in_channels=3, slice_context=1)
    with pytest.raises(ValueError, match="slice_context"):
        LiverDataModule(dims=3, slice_context=1)


def test_the_runner_gives_the_model_the_data_context():
    config = {"model": {"init_args": {"features": 8}}, "data": {"init_args": {"dims": 2, "slice_context": 2}}}
    assert derive_from_data(config)["model"]["init_args"] == {"features": 8, "slice_context": 2, "in_channels": 5}
    plain = {"model": {"init_args": {}}, "data": {"init_args": {"dims": 2}}}
    assert derive_from_data(plain)["model"]["init_args"] == {}


def test_checkpoint_inference_builds_the_same_context(tmp_path):
    """The network rebuilt from the checkpoint alone and the Predictor give the module's logits."""
    torch.manual_seed(0)
    path = _save_ckpt(tmp_path / "ctx.ckpt", preprocessing_config("mri"), features=4, depth=2, in_channels=5,
                      slice_context=2)
    module = create_model("unet2d", features=4, depth=2, in_channels=5, slice_context=2)
    module.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    module.eval()
    volume = torch.randn(1, 1, 32, 32, 7)
    expected = module.predict_volume(volume)
    network, _ = load_network(path)
    assert torch.allclose(network.predict_volume(volume), expected, atol=1e-5)
    margin = Predictor.from_checkpoint(path, device="cpu").margin(volume)
    assert torch.allclose(margin, liver_margin(expected)[0], atol=1e-4)


def test_fit_validate_and_test_on_a_dataset_with_neighbouring_slices(tmp_path):
    """A 2.5D U-Net trains on the DataModule's 3-channel slices, validates on its strided views and tests on
    whole volumes; a model without the context fails at setup, naming both settings."""
    import lightning as L
    from test_readers import make_dataset

    data = make_dataset(tmp_path / "ds", cases=4, shape=(40, 36, 16), noise=0.0, body_step=3.0)
    dm = LiverDataModule(str(data), dims=2, patch_size=[32, 32], batch_size=4, samples_per_epoch=8,
                         val_slice_stride=2, val_margin_mm=6, slice_context=1, val_fraction=0.25, test_fraction=0.25)
    assert next(iter(dm.train_dataloader()))["image"].shape == (4, 3, 32, 32)
    model = create_model("unet2d", features=4, depth=2, in_channels=3, slice_context=1, loss="dice_ce", lr=1e-2)
    trainer = L.Trainer(accelerator="cpu", max_steps=4, val_check_interval=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    assert "val/dice_grid" in trainer.callback_metrics
    assert 0.0 <= float(trainer.test(model, datamodule=dm, verbose=False)[0]["test/dice_grid"]) <= 1.0
    with pytest.raises(ValueError, match="slice_context=0 but the DataModule serves slice_context=1"):
        L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                  enable_model_summary=False, default_root_dir=tmp_path).fit(create_model("unet2d", features=4, depth=2),
                                                                               datamodule=dm)
