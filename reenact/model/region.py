"""Region generator: the thesis's F + SPADE-D at the scale of one face part (mouth or eye).

Per-component generation (as in mask-guided portrait editing): a small generator redraws one
region crop (`reenact.regions`) of the warp's render, where the warp cannot show the truth.

* F (`AppearanceAE`, as in the full model): the reference's own region crop → features at the
  `inject_levels` coarsest scales (+ its reconstruction, for the auto-encoder loss). It sees lip
  colour, teeth if the reference shows them, skin and light; it runs once per reference.
* D (`RegionDecoder`): a U-Net over [warp render of the region ⊕ the target's parsing map]. Its
  encoder keeps the warp's pixels (skip connections), its decoder receives F's features by
  concatenation (thesis injection) and is modulated by SPADE from the parsing map at every scale
  but the finest (to keep it within a few milliseconds on one CPU thread).

forward(reference N×3×S×S, parsing N×P×S×S, warped N×3×S×S) → (image N×3×S×S, reconstruction).
Images in [-1, 1], parsing in [0, 1]. D's signature matches the thesis decoder's (parsing,
features, third input), so the thesis export views (`AppearanceGraph`, `DecoderGraph`) serve.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reenact.model.appearance import AppearanceAE
from reenact.model.config import ModelConfig
from reenact.model.spade import SPADE


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """conv 3×3 → LeakyReLU(0.2) (no normalisation: the U-Net's skips carry absolute colour)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2))


class UpBlock(nn.Module):
    """2× nearest upsampling, concat [x, encoder skip, F's feature], conv, optional SPADE."""

    def __init__(self, cin: int, skip: int, appearance: int, cout: int, *, parsing_channels: int,
                 hidden: int | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin + skip + appearance, cout, 3, padding=1)
        self.spade = SPADE(channels=cout, parsing_channels=parsing_channels, hidden=hidden) if hidden else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor, feature: torch.Tensor | None,
                parsing: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        parts = [x, skip] + ([feature] if feature is not None else [])
        x = self.conv(torch.cat(parts, 1))
        if self.spade is not None:
            x = self.spade(x, parsing)
        return F.leaky_relu(x, 0.2)


class RegionDecoder(nn.Module):
    """D of the region generator. forward(parsing, features, warped) → N×3×S×S in [-1, 1].

    features: F's, coarsest first (levels `config.injected`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        cin = 3 + c.parsing_channels
        self.stem = _conv(cin, c.width(0))  # level 0
        self.downs = nn.ModuleList(_conv(c.width(k - 1), c.width(k), stride=2) for k in range(1, c.levels + 1))
        top = c.width(c.levels) if c.levels in c.injected else 0
        self.middle = _conv(c.width(c.levels) + top, c.width(c.levels))
        ups = []
        for k in range(c.levels - 1, -1, -1):  # up to level k from level k + 1
            app = c.width(k) if k in c.injected else 0
            ups.append(UpBlock(c.width(k + 1), c.width(k), app, c.width(k), parsing_channels=c.parsing_channels,
                               hidden=c.hidden(k) if k > 0 else None))
        self.ups = nn.ModuleList(ups)
        self.to_rgb = nn.Conv2d(c.width(0), 3, 3, padding=1)
        nn.init.zeros_(self.to_rgb.weight)  # starts as the identity on the warp render
        nn.init.zeros_(self.to_rgb.bias)

    def forward(self, parsing: torch.Tensor, features: list[torch.Tensor], warped: torch.Tensor) -> torch.Tensor:
        c = self.config
        if len(features) != c.inject_levels:
            raise ValueError(f"expected {c.inject_levels} appearance features, got {len(features)}")
        by_level = dict(zip(c.injected, features))
        skips = [self.stem(torch.cat([warped, parsing], 1))]  # level 0: N×width(0)×S×S
        for down in self.downs:
            skips.append(down(skips[-1]))
        top = [by_level[c.levels]] if c.levels in by_level else []
        x = self.middle(torch.cat([skips[-1], *top], 1))
        pyramid = [parsing]
        for _ in range(c.levels):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2))
        for up, k in zip(self.ups, range(c.levels - 1, -1, -1)):
            x = up(x, skips[k], by_level.get(k), pyramid[k])
        # A residual on the warp render: where the warp is right, D only has to output zero.
        return torch.clamp(warped + self.to_rgb(x), -1.0, 1.0)


class RegionGenerator(nn.Module):
    """G = F + D for one face region (see module doc)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.appearance = AppearanceAE(config)  # F
        self.decoder = RegionDecoder(config)  # D

    def forward(self, reference: torch.Tensor, parsing: torch.Tensor,
                warped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, recon = self.appearance(reference)
        return self.decoder(parsing, feats, warped), recon
