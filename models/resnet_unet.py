"""`resnet_unet`: U-Net decoder on a torchvision ResNet-34 encoder (the paper's transfer learning).

`pretrained`: "imagenet" (torchvision's weights API: needs internet or a populated
`$TORCH_HOME/hub/checkpoints` cache; offline it fails, never falls back), "synthetic" (offline:
pre-trained on the phantom's tissue task, built once into the cache, see models/synthetic_pretrain.py),
a path to a local ResNet-34 state dict (or a `liverbench pretrain` folder), or "none".
A 1-channel input uses the average of the stem's RGB filters. `init_from` (another run's
checkpoint) replaces all weights, so with it `pretrained` is not fetched at all.
The source is kept as `module.transfer` ({"source", "detail"}), recorded in result.json.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Optional

import torch
import torchvision
from torch import nn

from common.files import DataError
from models.base import SegmentationModule
from models.network import network
from models.registry import register_model
from models.resnet_unet_net import ResNetUNetNet  # noqa: F401 (older checkpoints' spec names it here)

IMAGENET_WEIGHTS = torchvision.models.ResNet34_Weights.IMAGENET1K_V1
IMAGENET_URL = IMAGENET_WEIGHTS.url
DOWNLOAD_TIMEOUT_S = 20.0


class PretrainedWeightsUnavailable(RuntimeError):
    """The ImageNet weights are neither cached nor downloadable (offline machine)."""


def imagenet_state_dict(url: str | None = None) -> dict[str, torch.Tensor]:
    """ImageNet ResNet-34 weights from the torch hub cache, downloading if needed; fails fast and clearly."""
    url = url or IMAGENET_URL
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # never hang on a network that drops packets
    try:
        return torch.hub.load_state_dict_from_url(url, model_dir=str(cache), progress=False, weights_only=True)
    except Exception as err:  # noqa: BLE001 - DNS, refused, timeout, bad hash, truncated file
        raise PretrainedWeightsUnavailable(
            f"cannot get ImageNet weights for ResNet-34 ({type(err).__name__}: {err}). "
            f"Download {url} on a machine with internet and put it in {cache} "
            f"(TORCH_HOME={os.environ.get('TORCH_HOME', '<unset: ~/.cache/torch>')}), "
            f"or use pretrained=PATH_TO_STATE_DICT or pretrained=none"
        ) from None
    finally:
        socket.setdefaulttimeout(old_timeout)


def _local_state_dict(path: str) -> dict[str, torch.Tensor]:
    if Path(path).is_dir():  # a `liverbench pretrain --out` folder: checked against its hash
        from models.synthetic_pretrain import load_cached

        return load_cached(Path(path))[0]
    if not Path(path).is_file():
        raise DataError(path, "pretrained weights file not found (expected 'imagenet', 'synthetic', 'none' "
                              "or a state dict path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise DataError(path, f"not a readable state dict ({type(err).__name__}: {err})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise DataError(path, "expected a ResNet-34 state dict")
    return state


@register_model("resnet_unet")
class ResNetUNet(SegmentationModule):
    """2D U-Net with a ResNet-34 encoder.

    Args:
        pretrained: "imagenet", "synthetic", "none" or a path to a ResNet-34 state dict.
        synthetic_pretrain: overrides of the synthetic pretraining config (steps, patients, spacing,
            batch_size, patch, lr, seed, phantom_seed; see `models.synthetic_pretrain.DEFAULTS`).
        freeze_encoder_epochs: keep the encoder frozen for the first N training epochs.
        decoder_channels: widths of the five decoder blocks.
        dropout: channel dropout in the two deepest decoder blocks; **kwargs: see `SegmentationModule`.
    """

    spatial_dims = 2
    size_divisor = 32
    weight_init_off = {"init_from": None, "pretrained": "none"}

    def __init__(self, pretrained: str = "none", freeze_encoder_epochs: int = 0,
                 decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16), dropout: float = 0.1,
                 synthetic_pretrain: Optional[dict[str, Any]] = None, **kwargs):
        super().__init__(dropout=dropout, **kwargs)

    def build_network(self) -> nn.Module:
        h = self.hparams
        return network(ResNetUNetNet, h.in_channels, h.num_classes, tuple(h.decoder_channels), h.dropout)

    def initialize_weights(self) -> None:
        pretrained = self.hparams.pretrained or "none"
        if self.hparams.init_from:  # all weights come from the run's checkpoint: fetch nothing else
            pass
        elif pretrained == "imagenet":
            self.net.load_encoder(imagenet_state_dict(), IMAGENET_URL)
            self.transfer = {"source": "imagenet", "detail": IMAGENET_URL}
        elif pretrained == "synthetic":
            from models.synthetic_pretrain import WEIGHTS, ensure_encoder, load_cached

            folder, _ = ensure_encoder(self.hparams.synthetic_pretrain)
            state, meta = load_cached(folder)
            self.net.load_encoder(state, str(folder / WEIGHTS))
            self.transfer = {"source": "synthetic", "detail": meta["hash"]}
        elif pretrained != "none":
            self.net.load_encoder(_local_state_dict(pretrained), pretrained)
            self.transfer = {"source": "path", "detail": str(pretrained)}
        super().initialize_weights()  # init_from, if given, sets `transfer` to the run or path

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.hparams.freeze_encoder_epochs
        for p in self.net.encoder.parameters():
            p.requires_grad_(not frozen)
        # frozen BN statistics too, so the pretrained encoder really stays as it was
        self.net.encoder.train(not frozen)
