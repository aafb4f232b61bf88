"""models.network: the Lightning-free network path of `liverbench predict` and the inference-only
fast layers (same function as the layers they replace)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import models
from common.files import DataError
from models.network import (ChannelsLastInstanceNorm, FullPrecisionLayer, StridedMaxPool, fast_eval_copy,
                            full_precision_copy, liver_labels, load_network, padded_forward, predict_volume)


@pytest.mark.parametrize("dims", [2, 3])
def test_strided_max_pool_equals_max_pool(dims):
    torch.manual_seed(0)
    shape = (3, 5, 12, 10) if dims == 2 else (2, 4, 8, 6, 10)
    x = torch.randn(shape)
    pool = nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2)
    torch.testing.assert_close(StridedMaxPool(dims)(x), pool(x), rtol=0, atol=0)
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    xb = x.bfloat16().contiguous(memory_format=fmt)
    torch.testing.assert_close(StridedMaxPool(dims)(xb), pool(xb), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(4, 16, 40, 40), (4, 8, 40, 40), (4, 128, 9, 9), (2, 16, 12, 12, 12),
                                   (2, 4, 16, 16, 16), (2, 64, 4, 4, 4)])
def test_channels_last_instance_norm_is_instance_norm(shape):
    """Every shape path (group norm, few channels, small plane) gives F.instance_norm's values."""
    torch.manual_seed(0)
    norm = (nn.InstanceNorm2d if len(shape) == 4 else nn.InstanceNorm3d)(shape[1], affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    x = torch.randn(shape) * 3 + 1
    fast = ChannelsLastInstanceNorm(norm)
    torch.testing.assert_close(fast(x), norm(x), rtol=1e-4, atol=1e-4)
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    out = fast(x.bfloat16().contiguous(memory_format=fmt))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    torch.testing.assert_close(out.float(), norm(x), rtol=0.02, atol=0.05)  # bf16 rounding of the output


def test_fast_eval_copy_replaces_layers_and_leaves_the_original():
    model = models.create_model("unet2d", features=4, depth=2).eval()
    fast = fast_eval_copy(model)
    kinds = {type(m) for m in fast.modules()}
    assert StridedMaxPool in kinds and ChannelsLastInstanceNorm in kinds
    assert not {nn.MaxPool2d, nn.InstanceNorm2d} & kinds
    assert nn.InstanceNorm2d in {type(m) for m in model.modules()}  # original untouched
    assert fast.net.head.weight is model.net.head.weight  # weights shared, not copied
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)


def test_eval_forward_is_bit_identical_and_shares_the_training_weights():
    model = models.create_model("unet2d", features=4, depth=2)
    keys = set(model.state_dict())
    x = torch.randn(2, 1, 20, 28)  # padded to the size divisor like every forward
    with torch.no_grad():
        model.eval()
        assert StridedMaxPool in {type(m) for m in model.eval_net.modules()}
        assert nn.MaxPool2d not in {type(m) for m in model.eval_net.modules()}
        assert torch.equal(model(x), padded_forward(model.net, x, 2, model.size_divisor))  # bit-identical
        assert set(model.state_dict()) == keys  # the cached copy is no submodule
        model.net.head.weight.add_(1.0)  # a training step changes the shared weights: eval sees it
        assert torch.equal(model(x), padded_forward(model.net, x, 2, model.size_divisor))
    model.train()
    assert nn.MaxPool2d in {type(m) for m in model.net.modules()}  # training keeps MaxPool's gradients
    out = model(x)
    out.sum().backward()
    assert model.net.head.weight.grad is not None


def test_liver_labels_two_classes_equals_argmax_with_ties():
    logits = torch.tensor([[[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]])  # (1, 2 classes, 3): a tie in the middle
    assert liver_labels(logits).tolist() == [[1, 0, 0]]
    torch.testing.assert_close(liver_labels(logits), logits.argmax(1).to(torch.uint8), rtol=0, atol=0)
    three = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(liver_labels(three), three.argmax(1).to(torch.uint8), rtol=0, atol=0)


def _saved(tmp_path, spec_patch=None, preprocessing=None, name="unet2d", **init):
    model = models.create_model(name, **(init or {"features": 4, "depth": 2}))
    ckpt = {"liverbench_model": name, "hyper_parameters": dict(model.hparams),
            "liverbench_preprocessing": preprocessing,
            "state_dict": model.state_dict(),
            "liverbench_network": {**model.net.liverbench_spec, **model.inference_spec(), **(spec_patch or {})}}
    path = tmp_path / "model.ckpt"
    torch.save(ckpt, path)
    return model, path


def test_load_network_rebuilds_the_same_network(tmp_path):
    model, path = _saved(tmp_path)
    net, preprocessing = load_network(path)
    assert preprocessing is None and net.spatial_dims == 2 and net.hparams["slice_batch_size"] == 32
    x = torch.randn(1, 1, 20, 28, 3)  # not a multiple of the size divisor: padded like the module
    with torch.no_grad():
        torch.testing.assert_close(net.predict_volume(x), model.eval().predict_volume(x), rtol=0, atol=0)


@pytest.mark.parametrize("class_path", ["os.system", "builtins.eval", "models.network.load_network", "torch.nn.Conv2d"])
def test_load_network_refuses_untrusted_or_non_module_classes(tmp_path, class_path):
    _, path = _saved(tmp_path, {"class_path": class_path})
    with pytest.raises(DataError, match="cannot rebuild the network"):
        load_network(path)


def test_checkpoint_without_a_spec_returns_none(tmp_path):
    model = models.create_model("unet2d", features=4, depth=2)
    path = tmp_path / "old.ckpt"
    torch.save({"liverbench_model": "unet2d", "hyper_parameters": dict(model.hparams),
                "state_dict": model.state_dict()}, path)
    assert load_network(path) is None


@pytest.mark.parametrize("name,init", [("unet2d", {}), ("resnet_unet", {"pretrained": "none"})])
def test_predicting_imports_no_lightning(tmp_path, name, init):
    """The predict path (benchmark.inference.predictor + models.network) of a CT checkpoint loads and runs
    without Lightning or MONAI."""
    from datamodules.transforms import preprocessing_config

    _, path = _saved(tmp_path, preprocessing=preprocessing_config("ct"), name=name, **init)
    code = ("import sys, numpy as np; from benchmark.inference.predictor import Predictor; "
            f"p = Predictor.from_checkpoint({str(path)!r}, device='cpu'); "
            "mask, _ = p.predict_image(np.zeros((40, 40, 12), np.float32), np.diag([2.0, 2.0, 4.0, 1.0])); "
            "assert mask.shape == (40, 40, 12); "
            "print(sorted(m for m in ('lightning', 'monai', 'torchmetrics') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _fp32_convs(net):
    return {name for name, m in net.named_modules() if isinstance(m, FullPrecisionLayer)}


def test_full_precision_copy_runs_the_first_and_narrow_convs_in_fp32_inside_bf16_autocast():
    """bf16 inference keeps the first convolution fp32 (the scan is not rounded) and those with at most
    `max_channels` outputs: inside bf16 autocast such a layer returns exactly its plain fp32 output, the
    original network is untouched and the weights are shared."""
    from models.blocks import UNet

    torch.manual_seed(0)
    net = UNet(2, 1, 2, features=4, depth=2, norm="instance").eval()  # widths 4, 8, 16
    first_only = full_precision_copy(net)
    assert _fp32_convs(first_only) == {"down.0.0"} and first_only.down[0][0].layer is net.down[0][0]
    assert isinstance(net.down[0][0], nn.Conv2d) and first_only.down[1] is net.down[1]
    narrow = full_precision_copy(net, max_channels=4)  # level 0, the last up-convolution, the 2-channel head
    assert _fp32_convs(narrow) == {"down.0.0", "down.0.3", "up.1", "decode.1.0", "decode.1.3", "head"}
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        expected = net.down[0][0](x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = first_only.down[0][0](x)
            unwrapped = net.down[0][0](x)
            assert first_only(x).shape == narrow(x).shape == (2, 2, 16, 16)
    assert inside.dtype == torch.float32 and unwrapped.dtype == torch.bfloat16
    assert torch.equal(inside, expected)
    linear = nn.Linear(2, 2)
    assert full_precision_copy(linear) is linear and isinstance(full_precision_copy(nn.Conv3d(1, 2, 3)), FullPrecisionLayer)


def test_predictor_keeps_convs_fp32_only_in_bf16_as_the_model_class_says(tmp_path):
    """The 2D U-Net keeps its <= 32-channel convolutions fp32 in bf16 (`fp32_max_channels`), also when
    rebuilt from a checkpoint's network spec; the 3D U-Net only its first convolution; fp32 none."""
    from benchmark.inference.predictor import Predictor
    from datamodules.transforms import preprocessing_config

    unet2d, path = _saved(tmp_path, features=16, depth=2)
    unet3d = models.create_model("unet3d", features=8, depth=2)
    config = preprocessing_config("ct")
    assert _fp32_convs(Predictor(unet2d, config, "cpu", precision="fp32").module) == set()
    wide = {name for name, m in unet2d.named_modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and m.out_channels <= 32}
    assert _fp32_convs(Predictor(unet2d, config, "cpu", precision="bf16").module) == wide and "net.down.2.0" not in wide
    assert _fp32_convs(Predictor(unet3d, config, "cpu", precision="bf16").module) == {"net.down.0.0"}
    assert _fp32_convs(Predictor(unet2d, config, "cpu", precision="bf16", fp32_max_channels=0).module) == {"net.down.0.0"}
    loaded, _ = load_network(path)
    assert loaded.fp32_max_channels == 32
    assert {n.removeprefix("net.") for n in _fp32_convs(Predictor(loaded, config, "cpu", precision="bf16").module)} == \
        {n.removeprefix("net.") for n in wide}


def test_sliding_window_pads_a_volume_smaller_than_the_window_with_its_minimum():
    """Training crops pad past the border with the volume's minimum (`crop_window`), so inference must too: with
    MONAI's default 0 a z-scored MR slab thinner than the window (the TotalSegmentator MR: 20 slices against 48)
    sat in a window of mid-grey, and the 3D CNN found no liver in it (Dice 0.00 -> 0.75-0.80, docs/phantom.md)."""
    seen = []

    def model(x):
        seen.append(x.clone())
        return torch.cat([x, -x], 1)

    image = torch.rand(1, 1, 20, 20, 5) + 2.0
    logits = predict_volume(model, image, 3, (16, 16, 16), 1, 0.25, 1)
    assert seen and all(w.shape[2:] == (16, 16, 16) for w in seen)
    assert min(float(w.min()) for w in seen) == float(image.min())  # the padding, not 0
    torch.testing.assert_close(logits[:, 0], image[:, 0])
