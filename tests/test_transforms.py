"""Preprocessing (orientation, spacing, intensity), invertibility and augmentation recipes."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd

from benchmark.inference.predictor import intensity_function
from datamodules.intensity import intensity_window
from datamodules.transforms import (build_augmentation, build_preprocessing, fit_fingerprint, foreground_sample,
                                    intensity_steps, preprocessing_config)

FINGERPRINT = {"fg_mean": 100.0, "fg_std": 50.0, "fg_percentile_00_5": 0.0, "fg_percentile_99_5": 200.0}


def _save(path, array, affine):
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)


def _run(config, array, affine, label=None):
    """Array-input pipeline (what the DataModule uses) on one channel-first MetaTensor."""
    keys = ("image",) if label is None else ("image", "label")
    data = {"image": MetaTensor(torch.as_tensor(array, dtype=torch.float32)[None], affine=torch.as_tensor(affine))}
    if label is not None:
        data["label"] = MetaTensor(torch.as_tensor(label, dtype=torch.float32)[None], affine=torch.as_tensor(affine))
    return build_preprocessing(config, keys, load=False)(data)


def test_config_presets_are_plain_json():
    fp = fit_fingerprint([(0.8, 0.8, 2.5), (0.7, 0.7, 5.0), (0.9, 0.9, 3.0)])
    assert fp["median_spacing"] == [0.8, 0.8, 3.0]
    assert preprocessing_config("ct")["target_spacing"] == [3.0, 3.0, 3.0]
    assert preprocessing_config("ct", "gpu", fingerprint=fp)["target_spacing"] == [1.5, 1.5, 3.0]
    assert preprocessing_config("mri", "median", fingerprint=fp)["target_spacing"] == [0.8, 0.8, 3.0]
    assert preprocessing_config("mri", target_spacing=[2, 2, 4])["target_spacing"] == [2.0, 2.0, 4.0]
    cfg = preprocessing_config("mri", "gpu", advanced=True, fingerprint=fp)
    assert json.loads(json.dumps(cfg)) == cfg
    with pytest.raises(ValueError, match="fingerprint"):
        preprocessing_config("ct", advanced=True)
    with pytest.raises(ValueError, match="preset"):
        preprocessing_config("ct", "tpu")


def test_lps_image_is_reoriented_to_ras():
    array = np.zeros((6, 5, 4), np.float32)
    array[0, 0, 0] = 100.0  # LPS: most right, most anterior, most inferior voxel
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    cfg = preprocessing_config("ct", target_spacing=(2, 2, 2))
    out = _run(cfg, array, affine)["image"]
    assert tuple(out.shape) == (1, 6, 5, 4)
    assert np.allclose(np.diag(out.affine.numpy())[:3], [2, 2, 2])  # RAS: positive diagonal
    assert np.unravel_index(int(out[0].argmax()), (6, 5, 4)) == (5, 4, 0)
    assert nib.aff2axcodes(out.affine.numpy()) == ("R", "A", "S")


def test_spacing_and_ct_window_values():
    array = np.full((30, 20, 10), -1000.0, np.float32)
    array[:, :, 5:] = 50.0  # mid window -> 0.5 ; air -> 0 ; bone -> 1
    array[:, :10, 5:] = 1000.0
    cfg = preprocessing_config("ct", "cpu")
    out = _run(cfg, array, np.diag([1.5, 1.5, 6.0, 1.0]))["image"]
    assert tuple(out.shape) == (1, 16, 10, 19)  # MONAI: (n - 1) * old / new + 1 voxel centres
    assert np.allclose(np.diag(out.affine.numpy())[:3], [3, 3, 3])
    img = out[0].numpy()
    assert img.dtype == np.float32 and img.min() == 0.0 and img.max() == 1.0
    assert img[7, 8, 0] == pytest.approx(0.0) and img[7, 8, -1] == pytest.approx(0.5)
    assert img[7, 1, -1] == pytest.approx(1.0)


def test_mri_zscore_and_advanced_foreground_zscore():
    rng = np.random.default_rng(0)
    array = rng.normal(500, 50, (20, 20, 8)).astype(np.float32)
    array[:3] = 1.0  # dark air outside the body
    array[10, 10, 4] = 1e6  # spike, removed by the percentile clip
    basic = _run(preprocessing_config("mri", target_spacing=(1, 1, 1)), array, np.eye(4))["image"][0]
    assert float(basic.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(basic.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)
    assert float(basic.max()) < 5
    adv = _run(preprocessing_config("mri", target_spacing=(1, 1, 1), advanced=True), array, np.eye(4))["image"][0]
    assert adv.shape == (19, 20, 8)  # cropped to the body: 3 air slices minus the 2-voxel margin
    inside = adv[adv != 0]
    assert float(inside.mean()) == pytest.approx(0.0, abs=0.02)
    assert float(inside.std()) == pytest.approx(1.0, abs=0.02)


def test_advanced_ct_uses_foreground_fingerprint():
    image = np.array([-1000.0] * 50 + list(np.linspace(0, 200, 201)), np.float32)
    mask = image > -500
    sample = foreground_sample(image, mask, n=10_000)
    fp = fit_fingerprint([(1, 1, 1)], [sample])
    assert fp["fg_mean"] == pytest.approx(100.0) and fp["fg_percentile_00_5"] == pytest.approx(1.0)
    cfg = preprocessing_config("ct", target_spacing=(1, 1, 1), advanced=True, fingerprint=fp)
    vol = np.full((8, 8, 8), 100.0, np.float32)
    vol[:, :, 4:] = 500.0  # above the 99.5th foreground percentile -> clipped
    vol[:4] = -1000.0  # air slab, cropped away except the 2-voxel margin
    out = _run(cfg, vol, np.eye(4))["image"][0].numpy()
    assert out.shape == (6, 8, 8)
    assert out[2, 2, 0] == pytest.approx(0.0, abs=1e-5)
    assert out[2, 2, 7] == pytest.approx((fp["fg_percentile_99_5"] - 100.0) / fp["fg_std"], rel=1e-4)


@pytest.mark.parametrize("modality,advanced", [("ct", False), ("mri", True)])
def test_preprocess_then_invert_restores_original_grid(tmp_path, modality, advanced):
    shape, affine = (21, 17, 9), np.array([[-1.3, 0, 0, 40], [0, -0.9, 0, 30], [0, 0, 4.0, -20], [0, 0, 0, 1]])
    array = np.random.default_rng(1).normal(100, 30, shape).astype(np.float32)
    array[:2] = 0.0
    path = _save(tmp_path / "scan.nii.gz", array, affine)
    fp = fit_fingerprint([(1.3, 0.9, 4.0)], [array.ravel()])
    pre = build_preprocessing(preprocessing_config(modality, advanced=advanced, fingerprint=fp), keys=("image",))
    data = pre({"image": path})
    assert np.allclose(np.diag(data["image"].affine.numpy())[:3], [3, 3, 3])
    data["pred"] = (data["image"] > 0).float()
    out = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(data)["pred"]
    assert tuple(out.shape) == (1, *shape)
    assert np.allclose(out.affine.numpy(), affine, atol=1e-5)


def test_augmentation_changes_samples_and_none_is_identity():
    image = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 64, 64) / 4096
    label = torch.zeros(1, 64, 64)
    label[:, 20:40, 10:30] = 1
    assert build_augmentation(2, "none")({"image": image, "label": label})["image"] is image
    aug = build_augmentation(2, "paper")
    aug.set_random_state(0)
    outs = [aug({"image": image.clone(), "label": label.clone()}) for _ in range(12)]
    assert sum(not torch.equal(o["image"], image) for o in outs) >= 8  # P(unchanged) = 1/8 per sample
    for o in outs:
        assert o["image"].shape == (1, 64, 64)
        assert set(torch.unique(o["label"]).tolist()) <= {0.0, 1.0}
    full3d = build_augmentation(3, "nnunet")
    full3d.set_random_state(0)
    vol = {"image": torch.rand(1, 24, 24, 16), "label": (torch.rand(1, 24, 24, 16) > 0.5).float()}
    out = full3d(vol)
    assert out["image"].shape == (1, 24, 24, 16) and set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="recipe"):
        build_augmentation(2, "heavy")


def test_anatomical_augmentation_never_mirrors_the_abdomen():
    """'anatomical' rotates and scales by at most 15° and 15 %: a marker left of the centre stays left,
    while the paper's recipe moves it to the other side in about half of the samples."""
    image = torch.zeros(1, 64, 64)
    image[:, 8:20, 24:40] = 1.0  # a block on one side of axis 0 (the patient's right-left axis)
    label = (image > 0).float()
    sides = {}
    for recipe in ("anatomical", "paper"):
        aug = build_augmentation(2, recipe)
        aug.set_random_state(0)
        outs = [aug({"image": image.clone(), "label": label.clone()}) for _ in range(40)]
        sides[recipe] = [float((o["label"][0, :32].sum() > o["label"][0, 32:].sum())) for o in outs]
        assert all(o["image"].shape == (1, 64, 64) for o in outs)
        if recipe == "anatomical":
            assert sum(not torch.equal(o["image"], image) for o in outs) >= 10  # it does augment
    assert all(sides["anatomical"]) and 8 <= sum(sides["paper"]) <= 32


def test_real_lps_mr_roundtrip(real_data):
    """TotalSegmentator's MR sample is LPS at 3 mm: preprocess (advanced, with body crop) and invert."""
    path = real_data / "totalsegmentator" / "example_mr_sm.nii.gz"
    original = nib.load(str(path))
    pre = build_preprocessing(preprocessing_config("mri", target_spacing=(2.0, 2.0, 4.0), advanced=True),
                              keys=("image",))
    data = pre({"image": str(path)})
    assert nib.aff2axcodes(data["image"].affine.numpy()) == ("R", "A", "S")
    data["pred"] = (data["image"] > 0).float()
    out = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(data)["pred"]
    assert tuple(out.shape[1:]) == original.shape
    assert np.allclose(out.affine.numpy(), original.affine, atol=1e-4)


@pytest.mark.parametrize("modality,advanced", [("ct", False), ("ct", True), ("mri", True)])
def test_intensity_steps_stay_on_the_image_device(modality, advanced):
    """The GPU Predictor normalises on the device: no step may build a CPU tensor next to the image
    (found by the first `make gpu-check` on an H200: quantile() q on the CPU). The meta device stands in
    for CUDA here; its nonzero needs the documented data-independent assumption. (Plain MRI is MONAI's
    percentile clip, which reads values with .item(): meta cannot run it; MONAI runs it on CUDA.)"""
    import torch.fx.experimental._config as fx_config

    cfg = preprocessing_config(modality, target_spacing=(1, 1, 1), advanced=advanced,
                               fingerprint=FINGERPRINT if modality == "ct" and advanced else None)
    data = {"image": torch.rand(1, 8, 8, 8, device="meta")}
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        for step in intensity_steps(cfg["intensity"]):
            data = step(data)
        predictor_out = intensity_function(cfg["intensity"])(torch.rand(1, 8, 8, 8, device="meta"))
    assert data["image"].device.type == "meta" and data["image"].shape == (1, 8, 8, 8)
    assert predictor_out.device.type == "meta" and predictor_out.shape == (1, 8, 8, 8)


@pytest.mark.parametrize("modality,advanced", [("ct", False), ("ct", True), ("mri", False), ("mri", True)])
def test_training_and_the_predictor_run_one_intensity_step(modality, advanced):
    """The Predictor's intensity function is training's MONAI step: the same voxels for MRI, and for the
    CT windows (a fused multiply-add there) the same map up to the float32 rounding of the last bit."""
    cfg = preprocessing_config(modality, target_spacing=(1, 1, 1), advanced=advanced,
                               fingerprint=FINGERPRINT if modality == "ct" and advanced else None)
    x = torch.from_numpy(np.random.default_rng(0).normal(60, 300, (1, 20, 20, 12)).astype(np.float32))
    data = {"image": x.clone()}
    for step in intensity_steps(cfg["intensity"]):
        data = step(data)
    predicted = intensity_function(cfg["intensity"])(x.clone())
    if modality == "ct":
        lo, hi = intensity_window(cfg["intensity"])[2:]
        assert float(predicted.min()) == lo and float(predicted.max()) == hi  # clipped to the window
        torch.testing.assert_close(predicted, torch.as_tensor(data["image"]), rtol=0, atol=4 * torch.finfo().eps)
    else:
        assert torch.equal(predicted, torch.as_tensor(data["image"]))
