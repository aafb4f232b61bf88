"""The network side of a model, without Lightning: padded forward, whole-volume inference, the
inference-only rewrite of slow layers, and rebuilding a checkpoint's network for `liverbench predict`.

`SegmentationModule` (models.base, a LightningModule) uses `padded_forward` and `predict_volume`;
`load_network` rebuilds the same network from a checkpoint's `liverbench_network` spec (written
by `SegmentationModule.on_save_checkpoint`) importing torch only, so predicting a scan does not
pay Lightning's import (about 5 s on 2 cores).
"""
from __future__ import annotations

import copy
import importlib
import math
import os
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Where a checkpoint's network class may come from: a checkpoint is untrusted, so its spec may
# only name nn.Module classes of these packages (never an arbitrary callable).
TRUSTED_NETWORK_MODULES = ("models.", "monai.networks.")


def plain_tensor(x) -> torch.Tensor:
    """A plain torch.Tensor, also from a MONAI MetaTensor (`torch.as_tensor` keeps MetaTensors, whose
    metadata would leak into logged metrics and checkpoints that `weights_only=True` cannot load)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def padded_forward(net: nn.Module, x: torch.Tensor, spatial_dims: int, size_divisor: int = 1,
                   min_size: int = 1, name: str = "model") -> torch.Tensor | list[torch.Tensor]:
    """Logits for any spatial size: pads to a multiple of `size_divisor` (at least `min_size`), crops back
    (each output of a deeply supervised network in training mode)."""
    x = plain_tensor(x)  # MetaTensor -> Tensor: no metadata bookkeeping in the network
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"{name} is a {spatial_dims}D model and expects input "
            f"(B, C, {'H, W' if spatial_dims == 2 else 'D, H, W'}), got shape {tuple(x.shape)}"
        )
    spatial = x.shape[2:]
    pads = [max(math.ceil(s / size_divisor) * size_divisor, min_size) - s for s in spatial]
    if any(pads):
        x = F.pad(x, [p for pad in reversed(pads) for p in (0, pad)])
    out = net(x)
    if not any(pads):
        return out
    if isinstance(out, list):  # deep supervision: lower resolutions cropped in proportion
        return [o[(..., *[slice(0, math.ceil(s * n / p)) for s, n, p in zip(spatial, o.shape[2:], x.shape[2:])])]
                for o in out]
    return out[(..., *[slice(0, s) for s in spatial])]


@torch.no_grad()
def predict_volume(model: nn.Module, image: torch.Tensor, spatial_dims: int, roi_size: Sequence[int],
                   sw_batch_size: int, sw_overlap: float, slice_batch_size: int) -> torch.Tensor:
    """Whole-volume logits (1, num_classes, X, Y, Z) of `model` (a padded forward) for (1, C, X, Y, Z).

    2D models run the axial slices (last axis) in batches; 3D models use MONAI's Gaussian-weighted
    sliding window with the training patch size, padding a volume smaller than the window with its minimum
    as the training crops do (MONAI's default 0 is mid-grey after a z-score)."""
    image = plain_tensor(image)
    if image.ndim != 5 or image.shape[0] != 1:
        raise ValueError(f"predict_volume expects one volume (1, C, X, Y, Z), got {tuple(image.shape)}")
    if spatial_dims == 3:
        from monai.inferers import sliding_window_inference

        return sliding_window_inference(image, tuple(roi_size), sw_batch_size, model, overlap=sw_overlap,
                                        mode="gaussian", cval=float(image.min()))
    slices = image[0].permute(3, 0, 1, 2)  # (Z, C, X, Y)
    n = slice_batch_size
    out = torch.cat([model(slices[i:i + n]) for i in range(0, slices.shape[0], n)])
    return out.permute(1, 2, 3, 0).unsqueeze(0)  # (1, classes, X, Y, Z)


def liver_margin(logits: torch.Tensor) -> torch.Tensor:
    """float32 liver margin over the class axis (1): the best foreground logit minus the background
    one, so `> 0` is the liver (for two classes exactly `liver_labels`). Being linear in the logits for
    two classes, it can be interpolated instead of them: `Predictor.invert`."""
    fg = logits[:, 1] if logits.shape[1] == 2 else logits[:, 1:].amax(1)
    return fg.float() - logits[:, 0].float()


def liver_labels(logits: torch.Tensor) -> torch.Tensor:
    """uint8 argmax over the class axis (1); for two classes a comparison, which gives the same labels
    (ties go to class 0 in both) and is many times faster than `argmax` on strided 3D logits."""
    if logits.shape[1] == 2:
        return (logits[:, 1] > logits[:, 0]).to(torch.uint8)
    return logits.argmax(1).to(torch.uint8)


# ---- inference-only rewrite of layers that are slow in channels-last bf16 on CPUs ----------------
class StridedMaxPool(nn.Module):
    """2x2(x2) max pooling with stride 2 as the maximum of the strided sub-grids: the same values as
    `MaxPool` (max is exact) without computing the indices, which CPU `max_pool` always does
    (about 10x faster in channels-last bf16)."""

    def __init__(self, dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = [x[(..., slice(a, None, 2), slice(b, None, 2))] for a in (0, 1) for b in (0, 1)] if self.dims == 2 else \
            [x[(..., slice(a, None, 2), slice(b, None, 2), slice(c, None, 2))]
             for a in (0, 1) for b in (0, 1) for c in (0, 1)]
        out = views[0]
        for v in views[1:]:
            out = torch.maximum(out, v)
        return out


class ChannelsLastInstanceNorm(nn.Module):
    """Instance norm (affine, no running statistics) for channels-last bf16 inference on CPUs.
    `F.instance_norm` copies such tensors to NCHW and back (a fifth of the 2D U-Net's bf16 time);
    `F.group_norm` with one group per channel is the same function and keeps the layout, but its
    CPU kernel is slow for small planes and for fewer than 16 channels. So, by shape only (the
    same input always takes the same path): small planes (< 1024 voxels) use a two-pass fp32
    mean/variance over the channels-last view, fewer than 16 channels `F.instance_norm`, all else
    `F.group_norm` (timings per shape in docs/speed.md)."""

    SMALL_PLANE = 1024
    FEW_CHANNELS = 16

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        if x[0, 0].numel() < self.SMALL_PLANE:
            v = x.movedim(1, -1).reshape(n, -1, c).float()  # (N, plane, C): small
            mean = v.mean(1, keepdim=True)
            v -= mean
            var = (v * v).mean(1, keepdim=True)
            v = v * (self.weight * torch.rsqrt(var + self.eps)) + self.bias
            return v.to(x.dtype).view(x.movedim(1, -1).shape).movedim(-1, 1)
        if c < self.FEW_CHANNELS:
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        return F.group_norm(x, c, self.weight, self.bias, self.eps)


class FullPrecisionLayer(nn.Module):
    """Runs `layer` in fp32 inside an autocast region (its weights are fp32 already); its output is
    fp32 too, so the layers after it take it as autocast would any fp32 tensor."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.layer(x.float())


CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def full_precision_copy(net: nn.Module, max_channels: int = 0) -> nn.Module:
    """`net` for bf16/fp16 inference with some convolutions in fp32 (`FullPrecisionLayer`): the first
    one, so the scan itself is never rounded to 8 significant bits (one input channel: well under 1 % of
    the FLOPs), and every one with at most `max_channels` output channels. Narrow convolutions are
    memory-bound, so bf16 buys them little speed but costs the most agreement with fp32 (the 2D U-Net's
    full- and half-resolution levels: docs/speed.md); a model class chooses `fp32_max_channels`. Shallow
    copies on the way, parameters shared, as `fast_eval_copy`."""
    first = next((name for name, m in net.named_modules() if isinstance(m, CONVOLUTIONS)), None)

    def keep(name: str, m: nn.Module):
        if isinstance(m, CONVOLUTIONS) and (name == first or m.out_channels <= max_channels):
            return FullPrecisionLayer(m)
        return None
    return _rewritten(net, keep)


def _rewritten(net: nn.Module, replace, name: str = "") -> nn.Module:
    """`net` with every module for which `replace(qualified name, module)` gives a replacement replaced;
    modules on the way are shallow copies, everything else (parameters included) is shared."""
    new = replace(name, net)
    if new is not None:
        return new
    children = {key: _rewritten(child, replace, f"{name}.{key}" if name else key)
                for key, child in net._modules.items() if child is not None}
    if all(children[key] is net._modules[key] for key in children):
        return net
    out = copy.copy(net)
    out._modules = {**net._modules, **children}
    return out


def _rewritable_pool(m: nn.Module) -> bool:
    if not isinstance(m, (nn.MaxPool2d, nn.MaxPool3d)):
        return False
    k, s = m.kernel_size, m.stride
    k, s = (k if isinstance(k, tuple) else (k,)), (s if isinstance(s, tuple) else (s,))
    pad = m.padding if isinstance(m.padding, tuple) else (m.padding,)
    dil = m.dilation if isinstance(m.dilation, tuple) else (m.dilation,)
    return (set(k) == {2} and set(s) == {2} and set(pad) == {0} and set(dil) == {1}
            and not m.ceil_mode and not m.return_indices)


def _rewritable_norm(m: nn.Module) -> bool:
    return (isinstance(m, (nn.InstanceNorm2d, nn.InstanceNorm3d)) and m.affine and not m.track_running_stats)


def fast_eval_copy(net: nn.Module, norms: bool = True) -> nn.Module:
    """`net` for inference, with its stride-2 max pools replaced by `StridedMaxPool` (bit-identical
    output in any layout) and, if `norms`, its affine instance norms by `ChannelsLastInstanceNorm` (same
    function, other rounding; for channels-last). Modules on the way to a replaced layer are shallow
    copies, all else (parameters included) is shared: the original is untouched and training never
    sees these layers (`StridedMaxPool` would split gradients between tied maxima)."""

    def fast(_, m: nn.Module):
        if _rewritable_pool(m):
            return StridedMaxPool(2 if isinstance(m, nn.MaxPool2d) else 3)
        if norms and _rewritable_norm(m):
            return ChannelsLastInstanceNorm(m)
        return None
    return _rewritten(net, fast)


def windows_unlike_patch(roi_size: Sequence[int], patch: int | Sequence[int]) -> Optional[str]:
    """Why a 3D model built without `roi_size` windows unlike its training patches, or None if it does not.

    Unset, roi_size is the model's default whatever the data (the constructor arguments alone decide the
    window, as the checkpoint records them); the benchmark's runner passes roi_size = the patch size."""
    patch = tuple(int(p) for p in ([patch] * 3 if isinstance(patch, int) else patch))
    if patch == tuple(roi_size):
        return None
    return (f"roi_size is unset, so validation and test use the default sliding window {list(roi_size)}, not "
            f"the training patch {list(patch)}; pass roi_size={list(patch)} to the model for windows of the patch")


# ---- rebuilding a checkpoint's network without the LightningModule ------------------------------
def network(cls: type, *args: Any, **kwargs: Any) -> nn.Module:
    """`cls(*args, **kwargs)`, remembering how it was built (plain values only), so a checkpoint can
    rebuild the network without its LightningModule (`load_network`). `build_network` uses it."""
    net = cls(*args, **kwargs)
    net.liverbench_spec = {"class_path": f"{cls.__module__}.{cls.__qualname__}", "args": list(args),
                           "kwargs": dict(kwargs)}
    return net


class InferenceNetwork(nn.Module):
    """A checkpoint's network with what whole-volume inference needs (`spatial_dims`, padded forward,
    `predict_volume`, `hparams["slice_batch_size"]`): what `Predictor` uses of a SegmentationModule."""

    def __init__(self, net: nn.Module, spec: dict[str, Any]):
        super().__init__()
        self.net = net
        self.spatial_dims = int(spec["spatial_dims"])
        self.size_divisor, self.min_size = int(spec.get("size_divisor", 1)), int(spec.get("min_size", 1))
        self.roi_size = tuple(int(r) for r in spec.get("roi_size") or (64, 64, 64))
        self.hparams = {k: spec[k] for k in ("sw_batch_size", "sw_overlap", "slice_batch_size") if k in spec}
        self.model_name = spec.get("model")
        self.fp32_max_channels = int(spec.get("fp32_max_channels", 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return padded_forward(self.net, x, self.spatial_dims, self.size_divisor, self.min_size, self.model_name or "model")

    def predict_volume(self, image: torch.Tensor) -> torch.Tensor:
        h = self.hparams
        return predict_volume(self, image, self.spatial_dims, self.roi_size, int(h.get("sw_batch_size", 2)),
                              float(h.get("sw_overlap", 0.25)), int(h.get("slice_batch_size", 32)))


def _network_class(class_path: Any) -> type:
    if not (isinstance(class_path, str) and class_path.startswith(TRUSTED_NETWORK_MODULES)):
        raise ValueError(f"untrusted network class {class_path!r} (allowed: {', '.join(TRUSTED_NETWORK_MODULES)}*)")
    module_name, _, attr = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), attr, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"{class_path!r} is not a torch.nn.Module class")
    return cls


def load_network(path: str | os.PathLike) -> Optional[tuple[InferenceNetwork, Optional[dict[str, Any]]]]:
    """(network in eval mode, preprocessing config) from the checkpoint's `liverbench_network` spec,
    importing only the network's own module; None for a checkpoint without a spec (then
    `models.load_module` rebuilds the LightningModule). Weights are read with `weights_only=True`."""
    from common.files import DataError
    from models.checkpoint_format import read_checkpoint, stored_preprocessing

    ckpt = read_checkpoint(path)
    spec = ckpt.get("liverbench_network")
    if not isinstance(spec, dict):
        return None
    try:
        cls = _network_class(spec.get("class_path"))
        net = cls(*spec.get("args", []), **spec.get("kwargs", {}))
        state = {k[len("net."):]: v for k, v in (ckpt.get("state_dict") or {}).items()
                 if k.startswith("net.") and isinstance(v, torch.Tensor)}
        net.load_state_dict(state)
        model = InferenceNetwork(net, spec)
        model.checkpoint_path = str(path)  # named by errors about the network's output
    except (ImportError, TypeError, ValueError, RuntimeError, KeyError) as err:
        raise DataError(path, f"cannot rebuild the network of this checkpoint: {err}") from None
    return model.eval(), stored_preprocessing(ckpt)
