"""Timing helpers on CPU with tiny models: medians, repeats, exact FLOPs and parameter counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.inference.timing import (autocast_context, count_flops, count_params, device_name, peak_memory_mb,
                                        time_callable, time_model, track_peak_memory)


class Tiny2D(nn.Module):
    """A 2D model with the SegmentationModule surface: slice-by-slice `predict_volume`."""
    spatial_dims = 2

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x)

    def predict_volume(self, image):
        slices = image[0].permute(3, 0, 1, 2)  # (Z, 1, X, Y)
        return self(slices).permute(1, 2, 3, 0)[None]


class Tiny3D(nn.Module):
    spatial_dims = 3

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv(x)

    def predict_volume(self, image):
        return self(image)


def test_time_callable_honours_repeats_and_warmup():
    calls = []
    res = time_callable(lambda: calls.append(sum(range(2000))), device="cpu", warmup=3, repeats=7)
    assert len(calls) == 10 and res["repeats"] == 7 and len(res["times_ms"]) == 7
    assert 0 < res["min_ms"] <= res["p25_ms"] <= res["median_ms"] <= res["p75_ms"] <= res["max_ms"]
    assert res["iqr_ms"] == pytest.approx(res["p75_ms"] - res["p25_ms"])
    assert res["median_ms"] == pytest.approx(float(np.median(res["times_ms"])))
    with pytest.raises(ValueError):
        time_callable(lambda: None, repeats=0)


def test_time_callable_measures_a_known_sleep():
    import time

    res = time_callable(lambda: time.sleep(0.02), device="cpu", warmup=0, repeats=3)
    assert 19.0 <= res["median_ms"] < 200.0


def test_count_params_exact():
    assert count_params(nn.Conv2d(3, 8, 3)) == 3 * 8 * 9 + 8
    lin = nn.Linear(10, 4)
    assert count_params(nn.Sequential(lin, nn.ReLU(), lin)) == 44  # shared layer counted once
    frozen = nn.Linear(10, 4)
    frozen.bias.requires_grad_(False)
    assert count_params(frozen, trainable_only=True) == 40


def test_count_flops_analytic_conv_and_linear():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, torch.randn(1, 3, 16, 16)) == 2 * 3 * 8 * 9 * 16 * 16
    lin = nn.Linear(10, 4)
    assert count_flops(lin, torch.randn(5, 10)) == 2 * 5 * 10 * 4
    conv3 = nn.Conv3d(1, 2, 3, padding=1, bias=False)
    assert count_flops(conv3, torch.randn(1, 1, 4, 5, 6)) == 2 * 1 * 2 * 27 * 4 * 5 * 6


def test_time_model_2d_reports_slice_time_and_volume_flops():
    model = Tiny2D()
    res = time_model(model, (16, 12, 5), warmup=1, repeats=3)
    assert res["model_volume_ms"] > 0 and res["slice_ms"] > 0
    assert res["repeats"] == 3 and res["precision"] == "fp32" and res["batch_size"] == 1
    assert res["params"] == 1 * 2 * 9 + 2
    assert res["flops"] == 2 * 1 * 2 * 9 * 16 * 12 * 5  # all 5 slices of the volume
    assert res["peak_memory_mb"] > 0 and "cores" in res["device"]
    # 1 warm-up + 3 volume runs, 1 + 3 slice runs, 1 FLOP-counting run
    assert model.calls == 9


def test_time_model_2d_on_the_slices_read_times_and_counts_only_those():
    """The timing stage passes `Predictor.slices_read`: the model-only pass is then the end-to-end one's."""
    model = Tiny2D()
    res = time_model(model, (16, 12, 5), warmup=0, repeats=2, slices=[0, 2, 4])
    assert res["model_slices"] == 3 and res["volume_shape"] == [16, 12, 5]
    assert res["flops"] == 2 * 1 * 2 * 9 * 16 * 12 * 3  # 3 of the 5 slices
    assert time_model(Tiny2D(), (16, 12, 5), warmup=0, repeats=1, flops=False)["model_slices"] == 5
    with pytest.raises(ValueError, match="2D model"):
        time_model(Tiny3D(), (8, 8, 6), warmup=0, repeats=1, slices=[0, 1])


def test_time_model_3d_has_no_slice_time_and_records_precision():
    res = time_model(Tiny3D(), (8, 8, 6), precision="bf16", warmup=0, repeats=2)
    assert res["slice_ms"] is None and res["model_volume_ms"] > 0 and res["model_slices"] is None
    assert res["precision"] == "bf16" and res["flops"] == 2 * 2 * 27 * 8 * 8 * 6
    with pytest.raises(ValueError, match="volume_shape"):
        time_model(Tiny3D(), (8, 8))


def test_autocast_context_precisions():
    conv = nn.Conv2d(1, 2, 3)
    x = torch.randn(1, 1, 8, 8)
    with autocast_context("cpu", "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with autocast_context("cpu", "fp32"):
        assert conv(x).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        autocast_context("cpu", "int8")


def _rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def test_peak_memory_tracks_process_rss():
    with track_peak_memory("cpu") as mem:
        block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MB, touched
        rss_inside = _rss_mb()
        del block
    assert mem["peak_memory_mb"] >= rss_inside - 1
    assert peak_memory_mb("cpu") >= mem["peak_memory_mb"] - 1


def test_device_name_cpu():
    name = device_name("cpu")
    assert name.endswith("cores)") and len(name) > 8
