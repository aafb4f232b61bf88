"""The fast inference path: resampling on MONAI Spacingd's grid, inversion as MONAI Invertd on the logits, precision
resolution, bf16 + channels-last masks, and the timing fields recorded with every timing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.inference import timing as T
from benchmark.inference.predictor import cpu_has_bf16, Predictor, resolve_precision
from benchmark.inference.resampling import resample_linear, spacing_grid, voxels_read
from datamodules.transforms import preprocessing_config


@pytest.mark.parametrize("spacing,target", [((0.8, 0.8, 2.5), (3.0, 3.0, 3.0)), ((1.3, 0.7, 4.0), (1.5, 1.5, 2.0))])
def test_resampling_matches_monai_spacingd(spacing, target):
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    rng = np.random.default_rng(0)
    image = rng.normal(size=(37, 29, 11)).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    size, steps = spacing_grid(image.shape, spacing, target)
    ours = resample_linear(np.asfortranarray(image), size, steps)  # NIfTI layout
    theirs = Spacing(pixdim=target, mode="bilinear")(MetaTensor(torch.from_numpy(image)[None], affine=torch.from_numpy(affine)))
    assert list(theirs.shape[1:]) == size
    np.testing.assert_allclose(ours, theirs[0].numpy(), atol=2e-5)
    assert ours.flags.f_contiguous  # the layout is kept


@pytest.mark.parametrize("target", [(1.5, 1.5, 0.0), (1.5, -1.0, 2.5), (float("nan"), 1.5, 2.5)])
def test_a_target_spacing_that_is_not_positive_is_refused(target):
    """The gpu preset's unresolved 0 ("keep the slice spacing") once reached the resampling as a
    ZeroDivisionError; now it is a clear error."""
    with pytest.raises(ValueError, match="target spacing must be three positive mm values"):
        spacing_grid((512, 512, 100), (0.8, 0.8, 2.5), target)


class MarginNet(torch.nn.Module):
    """Logits (0, x - 0.5): the liver margin is the preprocessed intensity minus 0.5, smooth in space."""

    spatial_dims = 3

    def predict_volume(self, x):
        x = torch.as_tensor(x)
        return torch.cat([torch.zeros_like(x), x - 0.5], dim=1)


@pytest.mark.parametrize("flips", [(1, 1, 1), (-1, -1, 1), (-1, 1, -1)])
def test_inversion_is_monais_bilinear_invert_of_the_logits(tmp_path, flips):
    """Interpolating the one-channel margin and thresholding it gives the mask of MONAI's tutorial pipeline
    (`tools.speed.predict_speed.monai_pipeline`: Invertd bilinear on the logits, then the argmax), on the
    input grid, in NIfTI (X-fastest) order, for RAS, LPS and other axis flips; the argmax-first variant
    (nearest neighbour on the labels) differs at the edges."""
    import nibabel as nib

    from tools.speed.predict_speed import monai_pipeline

    x, y, z = np.meshgrid(np.arange(61), np.arange(47), np.arange(13), indexing="ij")
    image = (300 * np.exp(-((x - 28) ** 2 / 300 + (y - 20) ** 2 / 150 + (z - 6) ** 2 / 12)) - 120).astype(np.float32)
    affine = np.diag([0.8 * flips[0], 0.9 * flips[1], 2.5 * flips[2], 1.0])
    path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), path)
    config = preprocessing_config("ct")
    ours, _ = Predictor(MarginNet(), config, "cpu", precision="fp32").predict_file(path)
    masks = {}
    for invert in ("logits", "labels"):
        monai_pipeline(MarginNet(), config, tmp_path, invert)(path)
        masks[invert] = np.asarray(nib.load(tmp_path / f"image_monai_{invert}.nii.gz").dataobj) > 0
    assert ours.shape == image.shape and ours.dtype == np.uint8 and abs(ours.strides[0]) == 1  # X fastest
    assert 0 < ours.sum() < ours.size / 2
    np.testing.assert_array_equal(ours > 0, masks["logits"])
    assert (masks["labels"] != (ours > 0)).any()


@pytest.mark.parametrize("modality,advanced", [("ct", False), ("mri", True)])  # MRI advanced: the body crop
@pytest.mark.parametrize("axes", [np.diag([0.8, 0.9, 2.5]), np.diag([-0.8, -0.9, 2.5]),
                                  np.array([[0.0, 0.9, 0.0], [-0.8, 0.0, 0.0], [0.0, 0.0, -2.5]])])
def test_resampling_on_the_device_gives_the_same_mask(axes, modality, advanced):
    """On a GPU the resampling, re-orientation and inversion run as torch operations on the device
    (`Predictor.resample_on_device`); forced here on the CPU they give exactly the numpy path's model
    input and mask (the same float32 operations), for RAS, LPS and an axis swap, 2D and 3D models."""
    from models import create_model

    x, y, z = np.meshgrid(np.arange(61), np.arange(47), np.arange(13), indexing="ij")
    image = (300 * np.exp(-((x - 28) ** 2 / 300 + (y - 20) ** 2 / 150 + (z - 6) ** 2 / 12)) - 120).astype(np.float32)
    image = np.asfortranarray(image + np.random.default_rng(0).normal(0, 5, image.shape).astype(np.float32))
    affine = np.eye(4)
    affine[:3, :3] = axes
    config = preprocessing_config(modality, advanced=advanced)
    torch.manual_seed(0)
    for module in (MarginNet(), create_model("unet2d", features=4, depth=2)):
        numpy_path, torch_path = (Predictor(module, config, "cpu", precision="fp32") for _ in range(2))
        torch_path.resample_on_device = True
        (a, state_a), (b, state_b) = numpy_path.preprocess(image, affine), torch_path.preprocess(image, affine)
        assert torch.equal(a, b) and state_a["box"] == state_b["box"]
        if advanced:
            assert state_a["box"] != tuple(slice(0, n) for n in state_a["grid_size"])  # cropped
        mask_a, mask_b = numpy_path.predict_image(image, affine)[0], torch_path.predict_image(image, affine)[0]
        assert mask_b.dtype == np.uint8 and mask_b.shape == image.shape and mask_b.strides[0] == 1  # X fastest
        np.testing.assert_array_equal(mask_a, mask_b)
        assert 0 < mask_a.sum() < mask_a.size


def test_the_inversion_reads_only_the_grid_slices_next_to_the_scans_own():
    """Back from the 3 mm grid to 6 mm slices the linear inversion weights every other grid slice, for 7.7 mm
    slices both neighbours of each scan slice, for 2 mm slices all of them."""
    np.testing.assert_array_equal(voxels_read(19, 10, 2.0), np.arange(0, 19, 2))
    size = spacing_grid((1, 1, 31), (1.0, 1.0, 7.7), (1.0, 1.0, 3.0))[0][2]  # 31 CHAOS T2 slices: 78 grid slices
    read = voxels_read(size, 31, 7.7 / 3.0)
    assert size == 78 and 31 < len(read) < 62 and read[0] == 0 and read[-1] == 77
    assert len(voxels_read(67, 100, 2.0 / 3.0)) == 67


def test_a_2d_model_runs_only_on_the_slices_the_inversion_reads():
    """On a 6 mm MRI the 2D network sees half of the 3 mm grid's slices (counted at its input); what it
    skips the inversion never weights (the mask is the same whatever those slices hold), and the slices it
    sees give the margin of a pass over all of them."""
    from models import create_model

    torch.manual_seed(0)
    module = create_model("unet2d", features=4, depth=2)
    seen = []
    module.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[0]))
    rng = np.random.default_rng(2)
    image = np.full((48, 40, 12), 50.0, np.float32)
    image[10:38, 8:30, 2:10] = 400.0 + rng.normal(0, 20, (28, 22, 8))
    affine = np.diag([3.0, 3.0, 6.0, 1.0])
    predictor = Predictor(module, preprocessing_config("mri", advanced=True), "cpu", precision="fp32")
    x, state = predictor.preprocess(image, affine)
    read = predictor.slices_read(state)
    grid_slices = x.shape[-1]
    assert state["box"] is not None and read is not None and 0 < len(read) <= (grid_slices + 1) // 2
    seen.clear()
    mask, _ = predictor.predict_image(image, affine)
    assert sum(seen) == len(read)
    every = predictor.margin(x)
    assert sum(seen) == len(read) + grid_slices
    skipped = np.setdiff1d(np.arange(grid_slices), read)
    garbage = every.clone()
    garbage[..., torch.as_tensor(skipped)] = 1.0e6
    np.testing.assert_array_equal(predictor.invert(garbage, state), predictor.invert(every, state))
    some = predictor.margin(x, read)
    torch.testing.assert_close(some[..., torch.as_tensor(read)], every[..., torch.as_tensor(read)], atol=1e-4, rtol=0)
    assert np.mean(mask == predictor.invert(every, state)) > 0.9999 and 0 < mask.sum() < mask.size


def test_liver_margin_is_the_argmax_decision():
    from models.network import liver_labels, liver_margin

    logits = torch.randn(4, 2, 5, 6)
    logits[0, :, 0, 0] = 0.0  # a tie: background, as argmax
    assert torch.equal((liver_margin(logits) > 0).to(torch.uint8), liver_labels(logits))
    three = torch.randn(3, 3, 7)
    assert torch.equal(liver_margin(three) > 0, three.argmax(1) > 0)
    assert liver_margin(logits.bfloat16()).dtype == torch.float32


def test_precision_resolution():
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_bf16() else "fp32")
    flags = open("/proc/cpuinfo").read()
    assert cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", "cpu")


def test_bf16_channels_last_mask_matches_fp32():
    from models import create_model

    torch.manual_seed(0)
    module = create_model("unet2d", features=4, depth=2)
    rng = np.random.default_rng(1)
    image = np.full((40, 36, 6), -100.0, np.float32)
    image[10:30, 8:28, 1:5] = 200.0 + rng.normal(0, 5, (20, 20, 4))
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    config = preprocessing_config("ct")
    fp32 = Predictor(module, config, "cpu", precision="fp32")
    assert fp32.settings == {"precision": "fp32", "channels_last": False, "threads": torch.get_num_threads(),
                             "device": "cpu"}
    import copy

    bf16 = Predictor(copy.deepcopy(module), config, "cpu", precision="bf16")
    assert bf16.channels_last and bf16.module.net is not None
    a, _ = fp32.predict_image(image, affine)
    b, _ = bf16.predict_image(image, affine)
    assert a.shape == b.shape == image.shape
    assert np.mean(a == b) > 0.99  # an untrained net: logits near 0, bf16 may flip a few voxels


def test_auto_on_a_cpu_without_bf16_is_fp32_channels_last(monkeypatch):
    """`auto` picks the fastest settings: on a CPU without bf16 that is fp32 in the channels-last layout (the
    2D U-Net 1.6x faster there); an explicit `fp32` stays NCHW, and the two masks agree up to summation order."""
    import copy

    from benchmark.inference import predictor as predictor_module
    from models import create_model

    monkeypatch.setattr(predictor_module, "cpu_has_bf16", lambda: False)
    torch.manual_seed(0)
    module = create_model("unet2d", features=8, depth=2)
    rng = np.random.default_rng(2)
    image = np.full((40, 36, 6), -100.0, np.float32)
    image[10:30, 8:28, 1:5] = 200.0 + rng.normal(0, 5, (20, 20, 4))
    config = preprocessing_config("ct")
    auto = Predictor(module, config, "cpu", precision="auto")
    fp32 = Predictor(copy.deepcopy(module), config, "cpu", precision="fp32")
    assert auto.settings["precision"] == "fp32" and auto.channels_last and not fp32.channels_last
    assert not Predictor(copy.deepcopy(module), config, "cpu", precision="auto", channels_last=False).channels_last
    x, _ = fp32.preprocess(image, np.diag([3.0, 3.0, 3.0, 1.0]))
    margin_auto, margin_fp32 = auto.margin(x), fp32.margin(x)
    torch.testing.assert_close(margin_auto, margin_fp32, rtol=1e-4, atol=1e-4)  # fp32 both: the order of sums only


def test_the_test_split_runs_the_network_as_the_timing_stage_times_it(monkeypatch, tmp_path):
    """`evaluation.precision: auto` on a CPU without bf16 resolves to fp32 and keeps the channels-last layout
    (it once passed the resolved "fp32" on and scored NCHW, 1.5x slower than the timed network); an explicit
    fp32 stays NCHW. The test split's Predictor gets the recorded layout."""
    from types import SimpleNamespace

    import nibabel as nib

    from benchmark.inference import predictor as predictor_module
    from benchmark.run.stages import test as test_stage
    from models import create_model

    monkeypatch.setattr(predictor_module, "cpu_has_bf16", lambda: False)
    module = create_model("unet2d", features=4, depth=2)
    settings = {p: test_stage.evaluation_settings({"evaluation": {"largest_component": True, "precision": p}}, module)
                for p in ("auto", "fp32")}
    assert settings["auto"] == {"largest_component": True, "precision": "fp32", "channels_last": True}
    assert settings["fp32"] == {"largest_component": True, "precision": "fp32", "channels_last": False}

    built = []
    monkeypatch.setattr(predictor_module.Predictor, "margin",
                        lambda self, x, slices=None: built.append(self.channels_last) or torch.ones(x.shape[2:]))
    image, label = tmp_path / "c_0000.nii.gz", tmp_path / "c.nii.gz"
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), affine), image)
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.uint8), affine), label)
    record = SimpleNamespace(image_path=str(image), label_path=str(label), case="c", patient="c", liver_labels=None,
                             declared_labels=None)
    for name in ("auto", "fp32"):
        s = {k: v for k, v in settings[name].items() if k != "largest_component"}
        rows, _ = test_stage.evaluate(module, preprocessing_config("ct"), [record], **s)
        assert rows[0]["dice"] == 1.0  # every voxel liver, as the margin says
    assert built == [True, False]


def test_spread_and_quiet_process_fields():
    assert T.spread([10.0, 11.0, 14.0]) == pytest.approx(4 / 11)
    assert T.spread([5.0]) == 0.0
    res = T.time_callable(lambda: sum(range(1000)), warmup=0, repeats=3)
    assert res["spread"] == pytest.approx(T.spread(res["times_ms"]))
    import gc

    with T.quiet_process() as proc:
        assert not gc.isenabled() and proc["process_threads"] >= 1
    assert gc.isenabled()


def test_timing_stage_records_precision_channels_last_threads_and_spread(tmp_path):
    from types import SimpleNamespace

    import nibabel as nib

    from benchmark.run.stages.time_per_image import measure
    from models import create_model

    path = tmp_path / "case_0000.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(0, 100, (24, 20, 6)).astype(np.int16),
                             np.diag([3.0, 3.0, 3.0, 1.0])), path)
    config = {"trainer": {"accelerator": "cpu"},
              "timing": {"volume": "test_case", "warmup": 0, "repeats": 2, "flops": False, "precision": "auto"}}
    out = measure(create_model("unet2d", features=4, depth=2), preprocessing_config("ct"), config, "ct",
                  [SimpleNamespace(image_path=str(path))])
    t = out["timing"]
    assert t["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert t["channels_last"] and t["threads"] == torch.get_num_threads()  # auto on a CPU: channels-last
    assert t["volume_ms"] > 0 and t["volume_ms_spread"] >= 0 and t["model_volume_ms_spread"] >= 0
    assert isinstance(t["spread_warning"], bool) and t["process_threads"] >= 1
    assert t["model_slices"] == t["preprocessed_shape"][2]  # 3 mm slices on the 3 mm grid: every one is read


def test_timing_stage_times_a_2d_model_only_on_the_slices_end_to_end_computes(tmp_path):
    """On a 6 mm MRI the model-only time and FLOPs cover the grid slices the inversion reads, as the
    end-to-end pass does (`Predictor.slices_read`), so model-only is never above end to end for that reason."""
    from types import SimpleNamespace

    import nibabel as nib

    from benchmark.run.stages.time_per_image import measure
    from models import create_model

    rng = np.random.default_rng(1)
    image = np.full((48, 40, 12), 50.0, np.float32)
    image[10:38, 8:30, 2:10] = 400.0 + rng.normal(0, 20, (28, 22, 8))
    path = tmp_path / "case_0000.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.int16), np.diag([3.0, 3.0, 6.0, 1.0])), path)
    config = {"trainer": {"accelerator": "cpu"},
              "timing": {"volume": "test_case", "warmup": 0, "repeats": 1, "flops": True, "precision": "fp32"}}
    module = create_model("unet2d", features=4, depth=2)
    preprocessing = preprocessing_config("mri", advanced=True)
    out = measure(module, preprocessing, config, "mri", [SimpleNamespace(image_path=str(path))])
    predictor = Predictor(module, preprocessing, "cpu", precision="fp32")
    x, state = predictor.preprocess(image, np.diag([3.0, 3.0, 6.0, 1.0]))
    read = predictor.slices_read(state)
    t = out["timing"]
    assert read is not None and t["model_slices"] == len(read) < t["preprocessed_shape"][2] == x.shape[-1]
    per_slice = T.count_flops(module, x[..., 0])
    assert out["flops"] == per_slice * len(read)
