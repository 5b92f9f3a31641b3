"""SPADE decoder D: pose guide (parsing map) + F's features → reenacted face.

D starts from the parsing map average-pooled to the coarsest level (a convolution on it gives
the first features, as SPADE's generator does without a VAE), then runs one residual SPADE block
per level from coarse to fine, upsampling 2× in between. At each injected level F's decoder
feature of the same scale enters before the block: concatenated (thesis) or through the AdaIN
appearance-transfer module. Optionally (`feature_warp`) F's features are first resampled with the
classical landmark warp's backward map, so appearance arrives aligned with the pose guide.

Inputs: parsing N×P×S×S in [0, 1]; features as produced by `AppearanceAE` (coarsest first);
warp_grid N×S×S×2 (x, y) in [-1, 1] (`grid_sample` convention, align_corners=False) or None.
Output: N×3×S×S RGB in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reenact.model.atm import AppearanceTransfer
from reenact.model.config import ModelConfig
from reenact.model.spade import SPADEResBlock


def warp_features(feature: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Resample N×C×h×w features with a full-resolution N×S×S×2 grid (area-averaged to h×w)."""
    factor = grid.shape[1] // feature.shape[2]
    if factor > 1:
        grid = F.avg_pool2d(grid.permute(0, 3, 1, 2), factor).permute(0, 2, 3, 1)  # N×h×w×2
    return F.grid_sample(feature, grid, mode="bilinear", padding_mode="border", align_corners=False)


def parsing_pyramid(parsing: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[level 0 (N×P×S×S), level 1 (S/2), …, level `levels`] by 2× average pooling."""
    out = [parsing]
    for _ in range(levels):
        out.append(F.avg_pool2d(out[-1], 2))
    return out


class SpadeDecoder(nn.Module):
    """D in the thesis. forward(parsing, features, warp_grid=None) → N×3×S×S in [-1, 1]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.head = nn.Conv2d(c.parsing_channels, c.width(c.levels), 3, padding=1)
        blocks, atms = [], {}
        cin = c.width(c.levels)
        for k in range(c.levels, -1, -1):
            extra = c.width(k) if (k in c.injected and c.injection == "concat") else 0
            if k in c.injected and c.injection == "adain":
                atms[str(k)] = AppearanceTransfer(channels=cin, appearance_channels=c.width(k))
            blocks.append(SPADEResBlock(fin=cin + extra, fout=c.width(k), parsing_channels=c.parsing_channels,
                                        hidden=c.hidden(k)))
            cin = c.width(k)
        self.blocks = nn.ModuleList(blocks)  # level L … 0
        self.atms = nn.ModuleDict(atms)
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(c.width(0), 3, 3, padding=1), nn.Tanh())

    def forward(self, parsing: torch.Tensor, features: list[torch.Tensor],
                warp_grid: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        if len(features) != c.inject_levels:
            raise ValueError(f"expected {c.inject_levels} appearance features, got {len(features)}")
        if c.feature_warp and warp_grid is None:
            raise ValueError("this model warps F's features: pass warp_grid (N×S×S×2)")
        pyramid = parsing_pyramid(parsing, c.levels)
        x = self.head(pyramid[c.levels])  # N×width(L)×S/2**L×S/2**L
        for i, k in enumerate(range(c.levels, -1, -1)):
            if k in c.injected:
                f = features[c.levels - k]
                if c.feature_warp:
                    f = warp_features(f, warp_grid)
                x = torch.cat([x, f], dim=1) if c.injection == "concat" else self.atms[str(k)](x, f)
            x = self.blocks[i](x, pyramid[k])
            if k > 0:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.to_rgb(x)
