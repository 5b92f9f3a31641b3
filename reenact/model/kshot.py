"""k-shot variant (CainGAN-style multi-reference fusion): embedder E_k + fusion + SPADE decoder D.

Each reference (RGB crop ⊕ its own parsing map [⊕ the target's parsing map with a *targeted*
embedder]) goes through E_k, which is F (`AppearanceAE`, same architecture, wider input) plus one
responsibility head per injected scale: features f_k (N·K×C×r×r) and a responsibility logit map
ρ_k (N·K×1×r×r) at every scale D injects. The references are fused per scale and per pixel:

    w_k = softmax_k(ρ_k)          (over the K references; Σ_k w_k = 1 at every pixel)
    f   = Σ_k w_k · f_k

and the fused maps reach D like F's features do (normally `injection = "spade"`: SPADE's γ/β are
computed from [parsing map ⊕ fused features], CainGAN's identity-adaptive normalisation). K is
free at inference (any K ≥ 1); with K = 1 the weights are exactly 1, so the output is the
single-reference path of the same network. A reference masked out (or with a −∞ logit) gets weight
exactly 0 and has no effect. The responsibility heads start at zero (a plain average).

The embedder also reconstructs each reference's RGB (F's decoder), so the auto-encoder loss still
keeps its latent faithful. Export views: `EmbedderGraph` (runs once per reference; per frame with a
targeted embedder) and `KShotDecoderGraph` (K stacked embeddings + logits + pose → image).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reenact.model.appearance import AppearanceAE
from reenact.model.config import ModelConfig
from reenact.model.decoder import SpadeDecoder


def responsibilities(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fusion weights: softmax over references (dim 1) of N×K×1×h×w logits → N×K×1×h×w, summing to
    one over K at every pixel. mask: N×K bool (False = leave that reference out: weight exactly 0).
    Raises ValueError when a sample has no reference left."""
    if mask is not None:
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every sample needs at least one reference that is not masked out")
        logits = logits.masked_fill(~mask[:, :, None, None, None], float("-inf"))
    return torch.softmax(logits, dim=1)


def fuse(features: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Responsibility-weighted average of K references' features.

    features: N×K×C×h×w; logits: N×K×1×h×w (one responsibility map per reference); mask: N×K bool
    or None. Returns N×C×h×w. Masked references contribute nothing, whatever their values
    (NaN or ∞ included); the result does not depend on the order of the references.
    """
    weights = responsibilities(logits, mask)
    if mask is not None:
        features = features.masked_fill(~mask[:, :, None, None, None], 0.0)
    return (weights * features).sum(dim=1)


class Embedder(nn.Module):
    """E_k: forward(reference B×3×S×S [-1,1], reference_parsing B×P×S×S [0,1],
    target_parsing B×P×S×S | None) → (features, logits, reconstruction).

    features: F's decoder features at the injected scales (coarsest first, B×width(k)×r×r);
    logits: responsibility logits at the same scales (B×1×r×r); reconstruction: B×3×S×S of the
    reference. target_parsing is required with `targeted_embedder` and refused without."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        inputs = 3 + c.parsing_channels * (2 if c.targeted_embedder else 1)
        self.appearance = AppearanceAE(config, in_channels=inputs)
        self.responsibility = nn.ModuleList(nn.Conv2d(c.width(k), 1, 3, padding=1) for k in c.injected)
        for head in self.responsibility:  # equal weights (a plain average) until training says otherwise
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, reference: torch.Tensor, reference_parsing: torch.Tensor,
                target_parsing: torch.Tensor | None = None) -> tuple[list[Tensor], list[Tensor], Tensor]:
        if self.config.targeted_embedder != (target_parsing is not None):
            need = "needs" if self.config.targeted_embedder else "takes no"
            raise ValueError(f"this embedder {need} the target's parsing map")
        x = torch.cat([reference, reference_parsing] + ([target_parsing] if target_parsing is not None else []), 1)
        feats, recon = self.appearance(x)
        return feats, [head(f) for head, f in zip(self.responsibility, feats)], recon


class KShotGenerator(nn.Module):
    """The k-shot generator: E_k (per reference) → fusion (per scale) → D.

    forward(references N×K×3×S×S [-1,1], reference_parsing N×K×P×S×S [0,1], parsing N×P×S×S [0,1]
    (the pose guide), mask N×K bool | None) → (image N×3×S×S [-1,1], reconstructions N×K×3×S×S).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.variant != "kshot":
            raise ValueError(f"KShotGenerator needs variant = \"kshot\", got {config.variant!r}")
        self.config = config
        self.embedder = Embedder(config)  # E_k
        self.decoder = SpadeDecoder(config)  # D

    def decode(self, parsing: torch.Tensor, features: list[torch.Tensor], logits: list[torch.Tensor],
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse stacked embeddings (N×K×C×r×r per scale, logits N×K×1×r×r) and run D → N×3×S×S."""
        return self.decoder(parsing, [fuse(f, lg, mask) for f, lg in zip(features, logits)])

    def forward(self, references: torch.Tensor, reference_parsing: torch.Tensor, parsing: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n, k = references.shape[:2]
        target = per_reference(parsing, k) if self.config.targeted_embedder else None  # the pose asked for
        feats, logits, recon = self.embedder(references.flatten(0, 1), reference_parsing.flatten(0, 1), target)
        stack = lambda ts: [t.unflatten(0, (n, k)) for t in ts]  # noqa: E731  B=N·K → N×K
        return self.decode(parsing, stack(feats), stack(logits), mask), recon.unflatten(0, (n, k))


def per_reference(x: torch.Tensor, k: int) -> torch.Tensor:
    """N×… → N·K×… (each sample's tensor repeated for its K references, in the embedder's batch order)."""
    return x[:, None].expand(x.shape[0], k, *x.shape[1:]).flatten(0, 1)


def embedding_names(config: ModelConfig) -> tuple[list[str], list[str]]:
    """ONNX names, coarsest first: (embedding_<r> features, responsibility_<r> logits)."""
    res = [config.resolution(k) for k in config.injected]
    return [f"embedding_{r}" for r in res], [f"responsibility_{r}" for r in res]


class EmbedderGraph(nn.Module):
    """Export view of E_k: (reference, reference_parsing[, pose_parsing]) → (*features, *logits)."""

    def __init__(self, generator: KShotGenerator) -> None:
        super().__init__()
        self.embedder = generator.embedder

    def forward(self, reference: torch.Tensor, reference_parsing: torch.Tensor,
                pose_parsing: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        feats, logits, _ = self.embedder(reference, reference_parsing, pose_parsing)
        return (*feats, *logits)


class KShotDecoderGraph(nn.Module):
    """Export view of fusion + D: (*features N×K×C×r×r, *logits N×K×1×r×r, pose_parsing) → image."""

    def __init__(self, generator: KShotGenerator) -> None:
        super().__init__()
        self.generator = generator
        self.n = generator.config.inject_levels

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        n = self.n
        return self.generator.decode(inputs[2 * n], list(inputs[:n]), list(inputs[n:2 * n]))
