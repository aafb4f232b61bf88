"""`dynunet`: MONAI's DynUNet, the nnU-Net-style residual U-Net (a strong baseline beyond the paper)."""
from __future__ import annotations

from typing import Sequence

from models.base import SegmentationModule
from models.network import network
from models.registry import register_model


@register_model("dynunet")
class DynUNet(SegmentationModule):
    """nnU-Net-like U-Net: 3x3(x3) kernels, stride-2 stages, instance norm, leaky ReLU.

    Args:
        spatial_dims: 3 (patches) or 2 (slices).
        filters: channels per stage; its length sets the depth (len - 1 downsamplings).
        res_block: residual blocks in the encoder; dropout: per-block dropout;
        **kwargs: see `SegmentationModule`.
    """

    spatial_dims = 3

    def __init__(self, spatial_dims: int = 3, filters: Sequence[int] = (16, 32, 64, 128),
                 res_block: bool = True, dropout: float = 0.0, **kwargs):
        super().__init__(dropout=dropout, **kwargs)

    @property
    def size_divisor(self) -> int:
        return 2 ** (len(self.hparams.filters) - 1)

    def build_network(self):
        from monai.networks.nets import DynUNet as MonaiDynUNet

        h = self.hparams
        n = len(h.filters)
        return network(
            MonaiDynUNet,
            h.spatial_dims, h.in_channels, h.num_classes, kernel_size=[3] * n, strides=[1] + [2] * (n - 1),
            upsample_kernel_size=[2] * (n - 1), filters=list(h.filters), dropout=h.dropout or None,
            res_block=h.res_block,
        )
