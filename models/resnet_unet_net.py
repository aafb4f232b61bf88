"""The ResNet-U-Net network alone (torch + torchvision, no Lightning): `resnet_unet`'s `build_network`,
the synthetic pretraining, and `models.network.load_network` when `liverbench predict` rebuilds a
checkpoint's network without importing the LightningModule."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from common.files import DataError
from models.blocks import DoubleConv


class ResNetUNetNet(nn.Module):
    """ResNet-34 encoder (strides 2..32) with U-Net decoder blocks on its five feature maps."""

    def __init__(self, in_channels: int = 1, out_channels: int = 2, decoder=(256, 128, 64, 32, 16),
                 dropout: float = 0.0):
        super().__init__()
        enc = torchvision.models.resnet34(weights=None)
        if in_channels != 3:
            enc.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        enc.fc = nn.Identity()
        self.encoder = enc
        skips = [256, 128, 64, 64, 0]  # layer3, layer2, layer1, stem, (full resolution: none)
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        cin = 512
        for i, (cout, skip) in enumerate(zip(decoder, skips)):
            self.up.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.decode.append(DoubleConv(2, cin + skip, cout, dropout if i < 2 else 0.0))
            cin = cout
        self.head = nn.Conv2d(cin, out_channels, 1)

    def load_encoder(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load torchvision ResNet-34 weights; adapt the RGB stem by averaging its filters."""
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        stem = state.get("conv1.weight")
        if stem is not None and stem.shape[1] != self.encoder.conv1.in_channels:
            c = self.encoder.conv1.in_channels
            state["conv1.weight"] = stem.mean(1, keepdim=True).repeat(1, c, 1, 1)
        missing, unexpected = self.encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise DataError(source, f"not a ResNet-34 state dict: missing {missing[:5]}, unexpected {unexpected[:5]}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        stem = e.relu(e.bn1(e.conv1(x)))  # 1/2
        l1 = e.layer1(e.maxpool(stem))  # 1/4
        l2 = e.layer2(l1)  # 1/8
        l3 = e.layer3(l2)  # 1/16
        x = e.layer4(l3)  # 1/32
        for up, block, skip in zip(self.up, self.decode, [l3, l2, l1, stem, None]):
            x = up(x)
            x = block(x if skip is None else torch.cat([x, skip], dim=1))
        return self.head(x)
