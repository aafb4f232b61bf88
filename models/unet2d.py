"""`unet2d`: the classic 2D U-Net (Ronneberger et al. 2015), trained on axial slices."""
from __future__ import annotations

from models.base import SegmentationModule
from models.blocks import UNet
from models.network import network
from models.registry import register_model


@register_model("unet2d")
class UNet2D(SegmentationModule):
    """2D U-Net; `features=64, depth=4` is the original size (31M parameters).

    Args:
        features: channels of the first level (doubled at every level).
        depth: number of poolings.
        dropout: channel dropout in the two deepest levels (the paper used dropout).
        norm: "instance" (default: robust to contrast shifts between scanners) or "batch" (the classic U-Net).
        deep_supervision: extra loss terms on this many lower decoder levels (nnU-Net's; `models.blocks.UNet`).
        **kwargs: see `SegmentationModule` (loss, lr, init_from, ...).
    """

    spatial_dims = 2
    # bf16 inference keeps the full- and half-resolution levels (<= 32 channels at the default width) in
    # fp32: mask Dice to fp32 0.9996-0.9997 instead of 0.9988-0.9991, for about 0.24 s more per CT
    # volume on 2 cores (docs/speed.md)
    fp32_max_channels = 32

    def __init__(self, features: int = 16, depth: int = 4, dropout: float = 0.1, norm: str = "instance",
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
        return network(UNet, 2, h.in_channels, h.num_classes, h.features, h.depth, h.dropout, norm=h.norm,
                       deep_supervision=h.deep_supervision)
