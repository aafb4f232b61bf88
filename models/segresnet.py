"""`segresnet`: MONAI's SegResNet (Myronenko 2018), a residual encoder with a light decoder."""
from __future__ import annotations

from models.base import SegmentationModule
from models.network import network
from models.registry import register_model


@register_model("segresnet")
class SegResNet(SegmentationModule):
    """Args: spatial_dims (3 or 2), init_filters, dropout, **kwargs: see `SegmentationModule`."""

    spatial_dims = 3
    size_divisor = 8

    def __init__(self, spatial_dims: int = 3, init_filters: int = 8, dropout: float = 0.0, **kwargs):
        super().__init__(dropout=dropout, **kwargs)

    def build_network(self):
        from monai.networks.nets import SegResNet as MonaiSegResNet

        h = self.hparams
        return network(MonaiSegResNet, h.spatial_dims, h.init_filters, h.in_channels, h.num_classes,
                              dropout_prob=h.dropout or None)
