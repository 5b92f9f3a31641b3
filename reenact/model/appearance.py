"""Appearance auto-encoder F: reference face → compact latent → reconstruction.

The encoder downsamples the reference crop `levels` times to a compact latent
(`latent_channels` × size/2**levels²); the decoder upsamples it back and reconstructs the
reference (the auto-encoder loss keeps the latent faithful). There are no skip connections: all
appearance passes through the latent. The decoder's features at the `inject_levels` coarsest
scales are handed to D (the SPADE decoder), coarsest first.

Input: reference N×3×S×S RGB in [-1, 1].
Output: (features, reconstruction): features[i] is N×width(k)×S/2**k×S/2**k for k in
`config.injected`; reconstruction N×3×S×S in [-1, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.model.config import ModelConfig


def conv_block(cin: int, cout: int, *, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """conv → instance norm (affine) → LeakyReLU(0.2)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2),
                         nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2))


class ResBlock(nn.Module):
    """Plain residual block at constant width (the latent's refinement)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_block(channels, channels),
                                  nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AppearanceEncoder(nn.Module):
    """N×3×S×S → latent N×latent_channels×S/2**L×S/2**L."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        layers = [conv_block(3, c.width(0), kernel=7)]
        layers += [conv_block(c.width(k - 1), c.width(k), stride=2) for k in range(1, c.levels + 1)]
        layers += [ResBlock(c.width(c.levels)), nn.Conv2d(c.width(c.levels), c.latent_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, reference: torch.Tensor) -> torch.Tensor:
        return self.net(reference)


class AppearanceDecoder(nn.Module):
    """latent → (features at every level, coarsest first: level L … 0), reconstruction."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.stem = nn.Sequential(conv_block(c.latent_channels, c.width(c.levels)), ResBlock(c.width(c.levels)))
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv_block(c.width(k), c.width(k - 1)))
            for k in range(c.levels, 0, -1))
        self.to_rgb = nn.Sequential(nn.Conv2d(c.width(0), 3, 3, padding=1), nn.Tanh())

    def forward(self, latent: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.stem(latent)
        feats = [x]  # level L
        for up in self.ups:
            x = up(x)
            feats.append(x)  # levels L-1 … 0
        return feats, self.to_rgb(x)


class AppearanceAE(nn.Module):
    """F in the thesis. forward(reference) → (injected features, reconstruction); see module doc."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = AppearanceEncoder(config)
        self.decoder = AppearanceDecoder(config)

    def forward(self, reference: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, recon = self.decoder(self.encoder(reference))
        return feats[: self.config.inject_levels], recon  # coarsest first
