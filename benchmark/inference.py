"""End-to-end inference on one scan: read → checkpoint's preprocessing → model → argmax → invert.

The mask comes back on the input's own grid (same shape and affine, also for LPS, oblique or
anisotropic scans) because the preprocessing is MONAI-invertible and we invert it with
`Invertd` (nearest neighbour), then check the geometry instead of trusting it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.files import DataError
from datamodules.volumes import is_nifti, read_volume, same_grid, write_mask


@dataclass
class Scan:
    """A scan as read from disk: `image` (X, Y, Z) float32, `affine` voxel -> RAS mm, and the
    `Volume` it came from (its header is kept for writing the mask)."""

    image: np.ndarray
    affine: np.ndarray
    path: Path
    volume: Any = None


def read_scan(path: str | Path, series: str | None = None) -> Scan:
    """A NIfTI file or a DICOM series folder (sorted by position, RAS affine), via `read_volume`
    (validated there: NaN/Inf per --nan-policy, spacing, size, one DICOM series or `series`)."""
    path = Path(path)
    if not path.is_dir() and path.is_file() and not is_nifti(path):
        raise DataError(path, "input must be a .nii/.nii.gz file or a DICOM series folder")
    if not path.exists():
        raise DataError(path, "input does not exist")
    vol = read_volume(path, dtype=np.float32, series=series)
    return Scan(vol.array, vol.affine, path, vol)


def liver_ml(mask: np.ndarray, affine: np.ndarray) -> float:
    """Volume of the mask in millilitres (voxel volume from the affine)."""
    return float(np.count_nonzero(mask) * abs(np.linalg.det(affine[:3, :3])) / 1000.0)


class Predictor:
    """Runs a `SegmentationModule` with the preprocessing config stored in its checkpoint.

    `device=None` keeps the module where it is; `from_checkpoint` prefers CUDA when present."""

    def __init__(self, module, preprocessing_config: dict[str, Any], device: str | torch.device | None = None):
        from datamodules.transforms import build_preprocessing

        if not preprocessing_config:
            raise ValueError("Predictor needs the checkpoint's preprocessing config")
        self.config = preprocessing_config
        if device is None:  # keep the caller's placement (the runner moves the module itself)
            param = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.preprocess = build_preprocessing(preprocessing_config, keys=("image",), load=False)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device=None, modality: str | None = None) -> "Predictor":
        """Load with `models.load_module` (weights_only); `modality` supplies a default config for
        checkpoints saved without a DataModule."""
        from models import load_module

        module, config = load_module(path)
        if config is None:
            if modality is None:
                raise DataError(path, "checkpoint carries no preprocessing config; pass --modality ct|mri "
                                      "to use the default preprocessing")
            from datamodules.transforms import preprocessing_config

            config = preprocessing_config(modality)
        return cls(module, config, device or ("cuda" if torch.cuda.is_available() else "cpu"))

    @torch.no_grad()
    def predict_image(self, image: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 0/1 mask with `image`'s shape for an (X, Y, Z) image with `affine`."""
        from monai.data import MetaTensor
        from monai.transforms import Invertd

        image = np.asarray(image, dtype=np.float32)
        affine = np.asarray(affine, dtype=np.float64)
        if image.ndim != 3:
            raise ValueError(f"predict_image expects an (X, Y, Z) volume, got shape {image.shape}")
        data = {"image": MetaTensor(torch.from_numpy(image[None].copy()), affine=torch.from_numpy(affine))}
        data = self.preprocess(data)
        x = data["image"]
        logits = self.module.predict_volume(x[None].to(self.device))
        pred = torch.argmax(logits, dim=1).to(torch.float32).cpu()  # (1, X', Y', Z')
        data["pred"] = MetaTensor(pred, meta=x.meta)
        data = Invertd("pred", transform=self.preprocess, orig_keys="image", nearest_interp=True)(data)
        out = data["pred"]
        mask = np.asarray(out[0].numpy() > 0.5, dtype=np.uint8)
        if mask.shape != image.shape:
            raise RuntimeError(f"inverted mask shape {mask.shape} != input shape {image.shape}")
        out_affine = np.asarray(out.affine, dtype=np.float64)
        if not same_grid((mask.shape, out_affine), (image.shape, affine)):
            raise RuntimeError(f"inverted mask affine differs from the input's:\n{out_affine}\n!=\n{affine}")
        return mask, affine

    def predict_file(self, path: str | Path, series: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 mask in the input's original grid, its affine) for a NIfTI or DICOM folder."""
        scan = read_scan(path, series)
        return self.predict_image(scan.image, scan.affine)

    def predict_to_file(self, path: str | Path, output: str | Path, series: str | None = None) -> dict[str, Any]:
        """Predict and write the mask as NIfTI in the input's geometry; returns ml and seconds."""
        start = time.perf_counter()
        scan = read_scan(path, series)
        mask, affine = self.predict_image(scan.image, scan.affine)
        write_mask(output, mask, scan.volume)
        return {"input": str(path), "output": str(output), "liver_ml": liver_ml(mask, affine),
                "seconds": time.perf_counter() - start, "shape": mask.shape}
