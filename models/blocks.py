"""Building blocks of the classic U-Net, written once for 2D and 3D (Ronneberger 2015, Çiçek 2016)."""
from __future__ import annotations

import torch
from torch import nn


NORMS = ("instance", "batch")


def _layers(dims: int):
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ConvTranspose2d, nn.Dropout2d
    return nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.ConvTranspose3d, nn.Dropout3d


def norm_layer(dims: int, kind: str):
    """Instance norm (nnU-Net's choice) normalises every image by its own statistics, so a scan whose
    contrast differs from the training mix does not meet training-set running statistics at test
    time; batch norm is the classic U-Net's."""
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
    if kind == "batch":
        return _layers(dims)[1]
    inst = nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d
    return lambda c: inst(c, affine=True)


class DoubleConv(nn.Sequential):
    """(3x3 conv, norm, ReLU) twice, optional channel dropout in between."""

    def __init__(self, dims: int, cin: int, cout: int, dropout: float = 0.0, mid: int | None = None,
                 norm_kind: str = "batch"):
        conv, _, _, _, drop = _layers(dims)
        norm = norm_layer(dims, norm_kind)
        mid = mid or cout
        layers = [conv(cin, mid, 3, padding=1, bias=False), norm(mid), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(drop(dropout))
        layers += [conv(mid, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class UNet(nn.Module):
    """Encoder-decoder with skip connections; `depth` poolings, width doubling per level.

    Input sizes must be multiples of 2**depth (the LightningModule pads for you).
    `doubling_before_pool` follows Çiçek's 3D U-Net (the first conv of a level uses half width).
    Dropout acts in the deepest levels, as in the original U-Net.
    `deep_supervision` = k adds 1x1 heads on the k decoder levels below the top (nnU-Net's deep
    supervision): in training mode `forward` returns [full, 1/2, ..., 1/2**k resolution] logits, for
    `monai.losses.DeepSupervisionLoss`; in eval mode only the full-resolution logits, as without it.
    """

    def __init__(self, dims: int, in_channels: int = 1, out_channels: int = 2, features: int = 32,
                 depth: int = 4, dropout: float = 0.0, doubling_before_pool: bool = False, norm: str = "batch",
                 deep_supervision: int = 0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if not 0 <= deep_supervision < depth:
            raise ValueError(f"deep_supervision must be between 0 and depth - 1 = {depth - 1}, got {deep_supervision}")
        _, _, pool, up, _ = _layers(dims)
        conv = _layers(dims)[0]
        widths = [features * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for level, w in enumerate(widths):
            mid = max(w // 2, in_channels) if doubling_before_pool else None
            deep = level >= depth - 1
            self.down.append(DoubleConv(dims, cin, w, dropout if deep else 0.0, mid, norm))
            cin = w
        self.pool = pool(2)
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        for w_low, w in zip(reversed(widths[1:]), reversed(widths[:-1])):
            self.up.append(up(w_low, w, 2, stride=2))
            self.decode.append(DoubleConv(dims, 2 * w, w, norm_kind=norm))
        self.head = conv(widths[0], out_channels, 1)
        self.aux_heads = nn.ModuleList(conv(widths[i], out_channels, 1) for i in range(1, deep_supervision + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips, decoded = [], []
        supervise = self.training and len(self.aux_heads) > 0
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, block, skip in zip(self.up, self.decode, reversed(skips)):
            x = block(torch.cat([skip, up(x)], dim=1))
            if supervise:
                decoded.append(x)
        if not supervise:
            return self.head(x)
        lower = decoded[-2::-1]  # the decoder levels below the top, from 1/2 resolution down
        return [self.head(x), *(head(y) for head, y in zip(self.aux_heads, lower))]
