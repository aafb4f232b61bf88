"""`swin_unetr`: MONAI's Swin UNETR (Hatamizadeh 2022), a Swin-transformer encoder with a CNN decoder."""
from __future__ import annotations

from models.base import SegmentationModule
from models.network import network
from models.registry import register_model


@register_model("swin_unetr")
class SwinUNETR(SegmentationModule):
    """Args: spatial_dims (3 or 2), feature_size (multiple of 12; 48 is the published size),
    dropout (on the token embeddings), **kwargs: see `SegmentationModule`."""

    spatial_dims = 3
    size_divisor = 32  # patch size 2 and four merging stages
    min_size = 64  # the bottleneck's instance norm needs more than one voxel
    requires = ("einops",)

    def __init__(self, spatial_dims: int = 3, feature_size: int = 12, dropout: float = 0.0, **kwargs):
        super().__init__(dropout=dropout, **kwargs)

    def build_network(self):
        from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

        h = self.hparams
        if h.feature_size % 12:
            raise ValueError(f"swin_unetr feature_size must be a multiple of 12, got {h.feature_size}")
        return network(MonaiSwinUNETR, h.in_channels, h.num_classes, feature_size=h.feature_size, drop_rate=h.dropout,
                              spatial_dims=h.spatial_dims)
