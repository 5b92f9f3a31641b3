"""Multi-scale PatchGAN discriminator (pix2pixHD), conditioned on the pose guide.

A training network, kept here because it is a pure module; inference never builds it.
Each scale sees [parsing, image] (N×(P+3)×H×W), the next scale a 2× average-pooled copy. Every
scale returns the outputs of all its layers (for feature matching); the last one is the patch map
of real/fake scores (N×1×h×w, unbounded: used with the least-squares GAN loss).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DiscriminatorConfig:
    """scales: number of image scales; channels: first layer width (doubles, capped at 8×);
    layers: stride-2 layers per scale (receptive field ≈ 16·2**layers px at the first scale)."""

    scales: int = 2
    channels: int = 64
    layers: int = 3

    def __post_init__(self) -> None:
        if self.scales < 1 or self.channels < 1 or self.layers < 1:
            raise ValueError("discriminator scales, channels and layers must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


class PatchDiscriminator(nn.Module):
    """One scale: N×C_in×H×W → list of layer outputs (last: N×1×h×w scores)."""

    def __init__(self, *, in_channels: int, channels: int, layers: int) -> None:
        super().__init__()
        seq = [nn.Sequential(nn.Conv2d(in_channels, channels, 4, stride=2, padding=2), nn.LeakyReLU(0.2))]
        c = channels
        for i in range(1, layers + 1):
            cout = min(channels * 2 ** i, channels * 8)
            stride = 2 if i < layers else 1
            seq.append(nn.Sequential(nn.Conv2d(c, cout, 4, stride=stride, padding=2),
                                     nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2)))
            c = cout
        seq.append(nn.Conv2d(c, 1, 4, stride=1, padding=2))
        self.layers = nn.ModuleList(seq)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs


class MultiScaleDiscriminator(nn.Module):
    """forward(image N×3×H×W, parsing N×P×H×W) → one list of layer outputs per scale."""

    def __init__(self, config: DiscriminatorConfig, *, parsing_channels: int) -> None:
        super().__init__()
        self.nets = nn.ModuleList(
            PatchDiscriminator(in_channels=3 + parsing_channels, channels=config.channels, layers=config.layers)
            for _ in range(config.scales))

    def forward(self, image: torch.Tensor, parsing: torch.Tensor) -> list[list[torch.Tensor]]:
        x = torch.cat([parsing, image], dim=1)
        outs = []
        for i, net in enumerate(self.nets):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(net(x))
        return outs
