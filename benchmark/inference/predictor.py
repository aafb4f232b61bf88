"""End-to-end inference on one scan: read → checkpoint's preprocessing → model → liver margin → invert.

The preprocessing is the checkpoint's config (datamodules.transforms: orientation, spacing,
optional body crop, intensity), done here on the array: re-orientation as axis permutes and
flips (skipped when it is the identity), spacing as a separable linear interpolation on MONAI
`Spacingd`'s output grid. The model's liver margin (foreground minus background logit, one
channel) is interpolated linearly back to the input grid and thresholded at 0, which is MONAI's
`Invertd` (bilinear) on the logits followed by the argmax, so the mask lands on the input's own
grid (same shape and affine, also for LPS, oblique or anisotropic scans) by construction.
`precision` bf16 runs the network under autocast and channels-last (fast on CPUs with AVX-512
BF16/AMX and on GPUs) with its first convolution in fp32; `auto` picks it where the hardware has it.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmark.inference.resampling import (apply_orientation, crop_box, is_identity, orientation_back, orientation_transform,
                                            resample_linear, spacing_grid, voxels_read)
from common.files import DataError
from datamodules.intensity import intensity_window
from datamodules.volumes import Scan, read_scan, write_mask

PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")  # fp16: GPUs only
# The liver margin outside the body box (never run through the network): surely background, and
# small enough that interpolating with it stays finite.
OUTSIDE_BOX_MARGIN = -1.0e4


def liver_ml(mask: np.ndarray, affine: np.ndarray) -> float:
    """Volume of the mask in millilitres (voxel volume from the affine)."""
    return float(np.count_nonzero(mask) * abs(np.linalg.det(affine[:3, :3])) / 1000.0)


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 matrix/convolution units (AVX-512 BF16 or AMX): there
    bf16 autocast is several times faster than fp32; elsewhere it is emulated and slower."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device) -> str:
    """`auto` -> bf16 on a CUDA GPU with bf16 or a CPU with AVX-512 BF16/AMX, else fp32."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def intensity_function(cfg: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function (1, X, Y, Z) -> same, on the tensor's device: the Predictor's intensity step.

    A CT window is one multiply-add and an in-place clamp: faster than MONAI's divide-then-scale, which
    it matches up to the last bit of some voxels (the Predictor's outputs are defined by this form,
    training's by MONAI's). MRI runs `intensity_steps` themselves."""
    window = intensity_window(cfg)
    if window is not None:
        lo, hi, b_lo, b_hi = window
        scale = (b_hi - b_lo) / (hi - lo)
        return lambda x: ((x - lo) * scale + b_lo).clamp_(b_lo, b_hi)
    from monai.transforms import Compose

    from datamodules.transforms import intensity_steps  # MONAI: only for the MRI methods

    steps = Compose(intensity_steps(cfg))
    return lambda x: torch.as_tensor(steps({"image": x})["image"]).float()


def default_channels_last(precision: str, device) -> bool:
    """Whether a `precision` setting runs the network channels-last: with bf16/fp16, and with `auto` on a CPU
    (fp32 channels-last where the CPU has no bf16: 2D U-Net slices 1.6x faster, docs/speed.md); an explicit
    `fp32` stays NCHW, the exact reference."""
    device = torch.device(device)
    return resolve_precision(precision, device) in ("bf16", "fp16") or (precision == "auto" and device.type == "cpu")


class Predictor:
    """Runs a `SegmentationModule` with the preprocessing config stored in its checkpoint.

    `device=None` keeps the module where it is; `from_checkpoint` prefers CUDA when present.
    `precision`: fp32 (default), bf16 or auto (`resolve_precision`); `channels_last` None:
    `default_channels_last(precision, device)`. In bf16/fp16 the first
    convolution and those with at most `fp32_max_channels` output channels run in fp32 (None: the model class's
    `fp32_max_channels`).
    Off the CPU (a GPU) the resampling, re-orientation and inversion run on the device too, so only
    the file's voxels go up and the uint8 mask comes back; `resample_on_device` forces either way."""

    resample_on_device: bool | None = None  # None: on the device when it is not the CPU

    def __init__(self, module, preprocessing_config: dict[str, Any], device: str | torch.device | None = None,
                 precision: str = "fp32", channels_last: bool | None = None, fp32_max_channels: int | None = None):
        if not preprocessing_config:
            raise ValueError("Predictor needs the checkpoint's preprocessing config")
        self.config = preprocessing_config
        if device is None:  # keep the caller's placement (the runner moves the module itself)
            param = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.channels_last = (default_channels_last(precision, self.device) if channels_last is None
                              else bool(channels_last))
        self.module = module.to(self.device).eval()
        self.source = getattr(module, "checkpoint_path", None) or "the network"  # its checkpoint, for errors
        dims = getattr(module, "spatial_dims", None)
        if self.channels_last and dims in (2, 3):
            from models.network import fast_eval_copy

            self.module = fast_eval_copy(self.module).to(
                memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
        if self.precision in ("bf16", "fp16"):
            from models.network import full_precision_copy

            if fp32_max_channels is None:  # the model class's choice
                fp32_max_channels = int(getattr(module, "fp32_max_channels", 0))
            self.module = full_precision_copy(self.module, fp32_max_channels)
        self._intensity = intensity_function(preprocessing_config["intensity"])

    @property
    def _on_device(self) -> bool:
        return self.device.type != "cpu" if self.resample_on_device is None else bool(self.resample_on_device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device=None, modality: str | None = None, precision: str = "fp32",
                        channels_last: bool | None = None, fp32_max_channels: int | None = None) -> "Predictor":
        """Load the network alone with `models.network.load_network` (weights_only, no Lightning), or the
        LightningModule with `models.load_module` for checkpoints without a network spec; `modality`
        supplies a default config for checkpoints saved without a DataModule."""
        from models.network import load_network

        loaded = load_network(path)  # the network alone: no Lightning import (start-up)
        if loaded is None:  # a checkpoint without a network spec: rebuild its LightningModule
            from models import load_module

            loaded = load_module(path)
        module, config = loaded
        if config is None:
            if modality is None:
                raise DataError(path, "checkpoint carries no preprocessing config; pass --modality ct|mri "
                                      "to use the default preprocessing")
            from datamodules.transforms import preprocessing_config

            config = preprocessing_config(modality)
        return cls(module, config, device or ("cuda" if torch.cuda.is_available() else "cpu"), precision, channels_last,
                   fp32_max_channels)

    @property
    def settings(self) -> dict[str, Any]:
        """What a timing must record with it: precision, channels-last, threads, device."""
        return {"precision": self.precision, "channels_last": self.channels_last,
                "threads": torch.get_num_threads(), "device": str(self.device)}

    @torch.inference_mode()
    def preprocess(self, image: np.ndarray, affine: np.ndarray) -> tuple[torch.Tensor, dict]:
        """(1, C=1, X', Y', Z') float32 model input and what `invert` needs to go back."""
        x = np.asarray(image, dtype=np.float32)  # (X, Y, Z), layout as stored (NIfTI: X fastest)
        if self._on_device:
            x = torch.from_numpy(x if min(x.strides) >= 0 else np.ascontiguousarray(x)).to(self.device)
        codes = self.config.get("orientation", "RAS")
        ornt = orientation_transform(affine, codes)
        identity = is_identity(ornt)  # most scans: nothing to do
        if not identity:
            x = apply_orientation(x, ornt)  # flips and a transpose (numpy: views)
        file_spacing = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
        spacing = [0.0] * 3
        for axis, (new_axis, _) in enumerate(ornt):
            spacing[int(new_axis)] = float(file_spacing[axis])
        oriented_shape = tuple(x.shape)
        size, steps = spacing_grid(oriented_shape, spacing, self.config["target_spacing"])
        x = resample_linear(x, size, steps)
        x = (x.contiguous() if self._on_device else torch.from_numpy(np.ascontiguousarray(x)))[None].to(self.device)
        box = None
        crop = self.config.get("crop_to_body")
        if crop:
            from datamodules.transforms import BodyMask

            box = crop_box(BodyMask(crop["kind"], crop["threshold"])(x)[0], margin=2)
            x = x[(slice(None), *box)]
        x = self._intensity(x.contiguous())
        back = None if identity else orientation_back(affine, codes)
        return x[None], {"back": back, "oriented_shape": oriented_shape, "grid_size": size, "steps": steps,
                         "box": box, "shape": tuple(image.shape)}

    def slices_read(self, state: dict) -> np.ndarray | None:
        """The axial slices of the preprocessed input (inside its body box) that `invert` reads with a
        nonzero weight, for a 2D model; None for all of them (or a 3D model, which needs its context).
        Going back to a scan with thicker slices than the grid's (a 6 mm MRI on the 3 mm grid) that is
        only the grid slices next to the scan's own, so a 2D network need not see the others."""
        if getattr(self.module, "spatial_dims", None) != 2:
            return None
        read = voxels_read(state["grid_size"][2], state["oriented_shape"][2], 1.0 / state["steps"][2])
        z = state["box"][2] if state["box"] is not None else slice(0, state["grid_size"][2])
        read = read[(read >= z.start) & (read < z.stop)] - z.start
        return None if len(read) == z.stop - z.start else read

    @torch.inference_mode()
    def margin(self, x: torch.Tensor, slices: np.ndarray | None = None) -> torch.Tensor:
        """float32 (X', Y', Z') liver margin of the model on a preprocessed (1, C, X', Y', Z') input: the
        best foreground logit minus the background one (`models.network.liver_margin`; > 0 is liver). 2D
        models slice by slice in batches (channels-last when set), only the axial `slices` given (the rest
        hold 0; None: all); others via `predict_volume`."""
        from benchmark.inference.timing import autocast_context
        from models.network import liver_margin

        m = self.module
        with autocast_context(self.device, self.precision):
            if getattr(m, "spatial_dims", None) == 2:
                every = x[0].permute(3, 0, 1, 2)  # (Z, C, X, Y)
                chosen = every if slices is None else every[torch.as_tensor(slices, device=x.device)]
                fmt = torch.channels_last if self.channels_last else torch.contiguous_format
                batches = math.ceil(chosen.shape[0] / int(getattr(m, "hparams", {}).get("slice_batch_size", 32)))
                n = math.ceil(chosen.shape[0] / batches)  # equal batches: one set of oneDNN kernels to build
                out = torch.empty((chosen.shape[0], *chosen.shape[2:]), dtype=torch.float32, device=x.device)
                for i in range(0, chosen.shape[0], n):
                    out[i:i + n] = liver_margin(m(chosen[i:i + n].contiguous(memory_format=fmt)))
                if slices is not None:
                    full = torch.zeros((every.shape[0], *every.shape[2:]), dtype=torch.float32, device=x.device)
                    full[torch.as_tensor(slices, device=x.device)] = out
                    out = full
                return out.permute(1, 2, 0)
            if self.channels_last and getattr(m, "spatial_dims", None) == 3:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            return liver_margin(m.predict_volume(x))[0]

    @torch.inference_mode()
    def invert(self, margin: torch.Tensor, state: dict) -> np.ndarray:
        """The low-resolution liver margin back on the input grid as a uint8 0/1 mask: paste into the
        body box (background outside), linear interpolation to the oriented input size, threshold at 0,
        undo the orientation (numpy views). Interpolating the two-class margin and thresholding is
        MONAI's Invertd (bilinear) on the logits followed by the argmax, on one channel instead of two.
        The result is X-fastest, as NIfTI stores it, so writing it is a straight copy."""
        margin = margin.float() if self._on_device else margin.float().cpu().numpy()
        if state["box"] is not None:
            full = (torch.full(state["grid_size"], OUTSIDE_BOX_MARGIN, device=margin.device) if self._on_device
                    else np.full(state["grid_size"], OUTSIDE_BOX_MARGIN, dtype=np.float32))
            full[state["box"]] = margin
            margin = full
        steps = [1.0 / s for s in state["steps"]]
        if self._on_device:  # X fastest (the Fortran order of a numpy array), as below
            margin = margin.permute(2, 1, 0).contiguous().permute(2, 1, 0)
        else:
            margin = np.asfortranarray(margin)
        mask = resample_linear(margin, state["oriented_shape"], steps) > 0
        mask = mask.view(torch.uint8) if self._on_device else mask.view(np.uint8)
        if state["back"] is not None:
            mask = apply_orientation(mask, state["back"])
        if self._on_device:  # one download of the uint8 mask, still X fastest
            mask = mask.permute(2, 1, 0).contiguous().cpu().numpy().T
        if mask.shape != state["shape"]:
            raise RuntimeError(f"inverted mask shape {mask.shape} != input shape {state['shape']}")
        return mask

    def predict_image(self, image: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 0/1 mask with `image`'s shape for an (X, Y, Z) image with `affine`."""
        image = np.asarray(image)
        affine = np.asarray(affine, dtype=np.float64)
        if image.ndim != 3:
            raise ValueError(f"predict_image expects an (X, Y, Z) volume, got shape {image.shape}")
        x, state = self.preprocess(image, affine)
        margin = self.margin(x, self.slices_read(state))
        if not bool(torch.isfinite(margin).all()):  # an empty mask would be read as "no liver"
            raise DataError(self.source, f"non-finite network output (NaN/Inf) on a {image.shape} scan: "
                                         "the weights or the precision overflow; no mask is written")
        return self.invert(margin, state), affine

    def predict_file(self, path: str | Path, series: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 mask in the input's original grid, its affine) for a NIfTI or DICOM folder."""
        scan = read_scan(path, series)
        return self.predict_image(scan.image, scan.affine)

    def predict_to_file(self, path: str | Path, output: str | Path, series: str | None = None,
                        scan: Scan | None = None, postprocessing: dict[str, Any] | None = None) -> dict[str, Any]:
        """Predict and write the mask as NIfTI in the input's geometry; returns ml and seconds.
        `scan`: the already read scan (batch mode reads the next one while this one computes).
        `postprocessing`: result.json's `{largest_component, opening_mm}`, applied as the scoring applies it."""
        from benchmark.scoring.postprocessing import postprocess
        from datamodules.volumes import spacing_from_affine

        start = time.perf_counter()
        scan = scan if scan is not None else read_scan(path, series)
        mask, affine = self.predict_image(scan.image, scan.affine)
        if postprocessing:
            mask = postprocess(mask > 0, spacing_from_affine(affine), bool(postprocessing.get("largest_component")),
                               float(postprocessing.get("opening_mm") or 0.0)).astype(mask.dtype)
        write_mask(output, mask, scan.volume)
        return {"input": str(path), "output": str(output), "liver_ml": liver_ml(mask, affine),
                "seconds": time.perf_counter() - start, "shape": mask.shape, **self.settings}
