"""`unet3d`: the 3D U-Net of Çiçek et al. 2016 — the paper's "3D CNN" — trained on patches."""
from __future__ import annotations

from models.base import SegmentationModule
from models.blocks import UNet
from models.network import network
from models.registry import register_model


@register_model("unet3d")
class UNet3D(SegmentationModule):
    """3D U-Net; `features=64, depth=3` (with width doubling before pooling) is the original.

    Args:
        features: channels of the first level; depth: number of poolings;
        dropout: channel dropout in the deepest levels; norm: "instance" (default) or "batch";
        deep_supervision: extra loss terms on this many lower decoder levels (nnU-Net's; `models.blocks.UNet`);
        **kwargs: see `SegmentationModule`.
    """

    spatial_dims = 3

    def __init__(self, features: int = 8, depth: int = 3, dropout: float = 0.1, norm: str = "instance",
                 deep_supervision: int = 0, **kwargs):
        super().__init__(dropout=dropout, **kwargs)

    @property
    def size_divisor(self) -> int:
        return 2 ** self.hparams.depth

    @property
    def min_size(self) -> int:  # instance norm needs more than one voxel at the bottleneck
        return 2 ** (self.hparams.depth + 1) if self.hparams.norm == "instance" else 1

    def build_network(self):
        h = self.hparams
        return network(UNet, 3, h.in_channels, h.num_classes, h.features, h.depth, h.dropout, doubling_before_pool=True,
                       norm=h.norm, deep_supervision=h.deep_supervision)
