"""Appearance-transfer module (ATM): AdaIN injection of F's features into D (alternative to
concatenation, `ModelConfig.injection = "adain"`).

D's features are instance-normalised and re-scaled with the per-channel mean and standard
deviation of F's features at the same scale (AdaIN); learned per-pixel weight maps α, β (sigmoid,
from a convolution on [D features, F features]) blend the restyled and the original features:

    out = α ⊙ AdaIN(x, f) + β ⊙ x
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AppearanceTransfer(nn.Module):
    """x: N×C×H×W (D), f: N×C_f×H×W (F, same resolution) → N×C×H×W."""

    def __init__(self, *, channels: int, appearance_channels: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(appearance_channels, channels, 1)  # F's width → D's width
        self.weights = nn.Conv2d(2 * channels, 2, 3, padding=1)  # → α, β logits (1 channel each)
        nn.init.zeros_(self.weights.weight)
        nn.init.constant_(self.weights.bias, 0.0)  # α = β = 0.5 at start

    def forward(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        f = self.project(f)
        mean = f.mean(dim=(2, 3), keepdim=True)  # N×C×1×1
        std = (f.var(dim=(2, 3), keepdim=True, unbiased=False) + 1e-5).sqrt()
        restyled = F.instance_norm(x, eps=1e-5) * std + mean
        ab = torch.sigmoid(self.weights(torch.cat([x, f], dim=1)))  # N×2×H×W
        return ab[:, :1] * restyled + ab[:, 1:] * x
