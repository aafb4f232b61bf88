"""Overlay images for every tracker: one axial slice of a case with the prediction and the ground truth.

The slice is cut once (`overlay_image`) into a plain `Overlay`; W&B shows it with toggleable masks, MLflow
and the CSV folder get one PNG (prediction filled red, ground truth outlined green): the same picture.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Overlay:
    """One slice as shown (anterior up, patient's right on the left): uint8 gray, bool masks."""

    gray: np.ndarray
    pred: np.ndarray
    gt: np.ndarray
    caption: str
    case: str

    @property
    def filename(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.case) + ".png"

    def rgb(self) -> np.ndarray:
        """(H, W, 3) uint8: gray, the prediction blended in red, the ground truth's edge in green."""
        out = np.repeat(self.gray[..., None], 3, axis=2).astype(np.float32)
        out[self.pred] = 0.6 * out[self.pred] + 0.4 * np.array([255.0, 0.0, 0.0])
        out[_edge(self.gt)] = (0.0, 255.0, 0.0)
        return out.astype(np.uint8)

    def png(self) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(self.rgb()).save(buf, format="PNG")
        return buf.getvalue()


def _edge(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay_image(image: np.ndarray, pred: np.ndarray, gt: np.ndarray, caption: str) -> Overlay:
    """The axial slice with most liver (arrays (X, Y, Z) in RAS order), windowed to its 1-99th percentile."""
    z = int(np.argmax(gt.reshape(-1, gt.shape[-1]).sum(0))) if gt.any() else gt.shape[-1] // 2
    sl = image[..., z].astype(np.float32)
    lo, hi = np.percentile(sl, [1, 99])
    gray = (np.clip((sl - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    view = lambda a: np.ascontiguousarray(np.flipud(np.asarray(a).T))  # noqa: E731
    return Overlay(view(gray), view(pred[..., z] > 0), view(gt[..., z] > 0), f"{caption} (z={z})", caption)


def validation_overlays(tracking, n_images: int = 2):
    """A Lightning callback: after training, the first `n_images` validation volumes' prediction and
    ground truth as `val/overlays` in every tracker of the run (`RunTracking`): what the model does, at a glance."""
    import torch
    from lightning.pytorch.callbacks import Callback

    from models.network import plain_tensor

    class ValidationOverlays(Callback):
        def on_fit_end(self, trainer, pl_module):
            dm = trainer.datamodule
            if dm is None or not trainer.is_global_zero:
                return
            images, training = [], pl_module.training
            pl_module.eval()
            with torch.no_grad():
                for i, batch in enumerate(dm.val_dataloader()):
                    if i >= n_images:
                        break
                    image = plain_tensor(batch["image"]).to(pl_module.device)
                    pred = pl_module.predict_volume(image).argmax(1)[0].cpu().numpy()
                    gt = plain_tensor(batch["label"])[0, 0].numpy() > 0.5
                    images.append(overlay_image(image[0, 0].cpu().numpy(), pred, gt, str(batch["case"][0])))
            pl_module.train(training)
            tracking.log_overlays("val/overlays", images)

    return ValidationOverlays()
