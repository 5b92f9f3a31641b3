"""The generator G = F (appearance auto-encoder) + D (SPADE decoder), and the two export graphs.

`Generator.forward` is the training view (reference, pose guide → image and F's reconstruction).
For inference F runs once per reference and D once per frame, so export uses the two wrappers
`AppearanceGraph` (reference → features) and `DecoderGraph` (features, parsing[, grid] → image),
whose inputs and outputs are plain tensors with fixed names (see `reenact.export`).
`build_generator` picks the network of a config's variant (this one or `kshot.KShotGenerator`).
"""

from __future__ import annotations

import torch
from torch import nn

from reenact.model.appearance import AppearanceAE
from reenact.model.config import ModelConfig
from reenact.model.decoder import SpadeDecoder
from reenact.model.kshot import KShotGenerator
from reenact.model.region import RegionGenerator


class Generator(nn.Module):
    """forward(reference N×3×S×S [-1,1], parsing N×P×S×S [0,1], warp_grid N×S×S×2 | None)
    → (image N×3×S×S [-1,1], reconstruction of the reference N×3×S×S [-1,1])."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.appearance = AppearanceAE(config)  # F
        self.decoder = SpadeDecoder(config)  # D

    def forward(self, reference: torch.Tensor, parsing: torch.Tensor,
                warp_grid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        feats, recon = self.appearance(reference)
        return self.decoder(parsing, feats, warp_grid), recon


def build_generator(config: ModelConfig) -> Generator | KShotGenerator | RegionGenerator:
    """The generator of `config.variant`: "thesis" → Generator (F + D), "kshot" → KShotGenerator,
    "region" → RegionGenerator."""
    if config.variant == "kshot":
        return KShotGenerator(config)
    return RegionGenerator(config) if config.variant == "region" else Generator(config)


def feature_names(config: ModelConfig) -> list[str]:
    """ONNX names of F's outputs / D's appearance inputs, coarsest first: appearance_<resolution>."""
    return [f"appearance_{config.resolution(k)}" for k in config.injected]


class AppearanceGraph(nn.Module):
    """Export view of F: reference → tuple of features (names from `feature_names`)."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.appearance = generator.appearance

    def forward(self, reference: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.appearance(reference)[0])


class DecoderGraph(nn.Module):
    """Export view of D: (*features, parsing[, warp_grid]) → image."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.decoder = generator.decoder
        self.n = generator.config.inject_levels

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feats, parsing = list(inputs[: self.n]), inputs[self.n]
        grid = inputs[self.n + 1] if len(inputs) > self.n + 1 else None
        return self.decoder(parsing, feats, grid)
