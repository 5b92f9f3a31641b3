"""SPADE: spatially-adaptive normalisation driven by the pose guide (Park et al. 2019).

A SPADE unit normalises features with a parameter-free instance norm and re-modulates them with a
per-pixel scale γ and bias β predicted by small convolutions from the parsing map, resized to the
features' resolution. A residual SPADE block is two SPADE→LeakyReLU→conv stages plus a shortcut
(learned when the width changes), as in the SPADE generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SPADE(nn.Module):
    """x: N×C×H×W, parsing: N×P×H×W (already at x's resolution) → N×C×H×W."""

    def __init__(self, *, channels: int, parsing_channels: int, hidden: int) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Conv2d(parsing_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, parsing: torch.Tensor) -> torch.Tensor:
        normed = F.instance_norm(x, eps=1e-5)  # parameter-free
        h = self.shared(parsing)  # N×hidden×H×W
        return normed * (1 + self.gamma(h)) + self.beta(h)


class SPADEResBlock(nn.Module):
    """Residual SPADE block: N×C_in×H×W (+ parsing N×P×H×W) → N×C_out×H×W."""

    def __init__(self, *, fin: int, fout: int, parsing_channels: int, hidden: int) -> None:
        super().__init__()
        mid = min(fin, fout)
        self.norm_0 = SPADE(channels=fin, parsing_channels=parsing_channels, hidden=hidden)
        self.conv_0 = nn.Conv2d(fin, mid, 3, padding=1)
        self.norm_1 = SPADE(channels=mid, parsing_channels=parsing_channels, hidden=hidden)
        self.conv_1 = nn.Conv2d(mid, fout, 3, padding=1)
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.norm_s = SPADE(channels=fin, parsing_channels=parsing_channels, hidden=hidden)
            self.conv_s = nn.Conv2d(fin, fout, 1, bias=False)

    def forward(self, x: torch.Tensor, parsing: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, parsing)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, parsing), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, parsing), 0.2))
        return skip + dx
