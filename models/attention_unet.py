"""`attention_unet`: MONAI's Attention U-Net (Oktay 2018): attention gates on the skip connections."""
from __future__ import annotations

from typing import Sequence

from models.base import SegmentationModule
from models.network import network
from models.registry import register_model


@register_model("attention_unet")
class AttentionUNet(SegmentationModule):
    """Args: spatial_dims (3 or 2), channels per level (stride 2 between levels), dropout,
    **kwargs: see `SegmentationModule`."""

    spatial_dims = 3

    def __init__(self, spatial_dims: int = 3, channels: Sequence[int] = (8, 16, 32, 64), dropout: float = 0.0,
                 **kwargs):
        super().__init__(dropout=dropout, **kwargs)

    @property
    def size_divisor(self) -> int:
        return 2 ** (len(self.hparams.channels) - 1)

    def build_network(self):
        from monai.networks.nets import AttentionUnet as MonaiAttentionUnet

        h = self.hparams
        return network(MonaiAttentionUnet, h.spatial_dims, h.in_channels, h.num_classes, list(h.channels),
                                  [2] * (len(h.channels) - 1), dropout=h.dropout)
