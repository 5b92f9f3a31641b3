"""Training losses, combined by the weight dict of the config ([losses] table).

Generator: L1 auto-encoder reconstruction (F's output vs. the reference), L1 reenactment
reconstruction (output vs. target), perceptual (VGG16 taps, `auxnets.vgg.PerceptualLoss`),
identity (1 − cosine of SFace embeddings of output and reference, `auxnets.sface_torch`),
LSGAN (multi-scale PatchGAN) and optional discriminator feature matching. Discriminator: LSGAN.

A loss whose weight is 0 is not computed, and its auxiliary network is never built (so no
weights are fetched). Reconstruction losses are masked by the target's head region for samples
that need it (identity pairs: backgrounds differ) or for all samples with `mask_losses`.
Images are N×3×H×W RGB in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reenact.train.config import LossWeights


def lsgan(outputs: list[list[torch.Tensor]], real: bool) -> torch.Tensor:
    """Least-squares GAN loss averaged over discriminator scales (last layer = scores)."""
    target = 1.0 if real else 0.0
    return torch.stack([((o[-1].float() - target) ** 2).mean() for o in outputs]).mean()


def feature_matching(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between discriminator features of fake and (detached) real, all layers but the last."""
    terms = [F.l1_loss(f.float(), r.detach().float()) for fs, rs in zip(fake, real) for f, r in zip(fs[:-1], rs[:-1])]
    return torch.stack(terms).mean()


def masked_l1(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean |x − y| over the mask (N×1×H×W in [0, 1]); plain mean when mask is None."""
    if mask is None:
        return F.l1_loss(x, y)
    return ((x - y).abs() * mask).sum() / (mask.sum() * x.shape[1]).clamp_min(1.0)


class GeneratorLoss(nn.Module):
    """forward(batch, output, recon, fake_d, real_d) → {name: weighted term}, plus "total".

    batch: the dataset's tensors (reference, target, mask, masked, ref_five, target_five);
    fake_d / real_d: discriminator outputs for the output and the target (None without a GAN).
    Unweighted values are returned under "raw/<name>" for logging.
    """

    def __init__(self, weights: LossWeights, *, mask_all: bool = False) -> None:
        super().__init__()
        self.weights = weights.active()
        self.mask_all = mask_all
        self.perceptual = None
        self.sface = None
        if "perceptual" in self.weights:
            from reenact.auxnets.vgg import PerceptualLoss

            self.perceptual = PerceptualLoss()
        if "identity" in self.weights:
            from reenact.auxnets.sface_torch import SFaceTorch

            self.sface = SFaceTorch()

    def loss_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """N×1×H×W: the head mask where a sample needs masking (or everywhere with mask_all), else 1."""
        need = torch.ones_like(batch["masked"]) if self.mask_all else batch["masked"]
        need = need.view(-1, 1, 1, 1)
        return need * batch["mask"] + (1 - need)

    def forward(self, batch, output, recon, fake_d=None, real_d=None) -> dict[str, torch.Tensor]:
        output, recon = output.float(), recon.float()
        mask = self.loss_mask(batch)
        raw: dict[str, torch.Tensor] = {}
        w = self.weights
        if "l1_ae" in w:
            raw["l1_ae"] = F.l1_loss(recon, batch["reference"])
        if "l1" in w:
            raw["l1"] = masked_l1(output, batch["target"], mask)
        if self.perceptual is not None:
            raw["perceptual"] = self.perceptual(output * mask, batch["target"] * mask)
        if self.sface is not None:
            raw["identity"] = self.identity(output, batch)
        if "gan" in w:
            raw["gan"] = lsgan(fake_d, real=True)
        if "feature_matching" in w:
            raw["feature_matching"] = feature_matching(fake_d, real_d)
        out = {k: w[k] * v for k, v in raw.items()}
        out["total"] = torch.stack(list(out.values())).sum()
        out.update({f"raw/{k}": v.detach() for k, v in raw.items()})
        return out

    def identity(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """1 − cos(SFace(output aligned by the target's 5 points), SFace(reference)), mean."""
        from reenact.auxnets.sface_torch import warp_to_112_torch

        e_out = self.sface(warp_to_112_torch((output + 1) * 127.5, batch["target_five"]))
        with torch.no_grad():
            e_ref = self.sface(warp_to_112_torch((batch["reference"] + 1) * 127.5, batch["ref_five"]))
        return (1 - (e_out * e_ref).sum(1)).mean()


def discriminator_loss(fake_d: list[list[torch.Tensor]], real_d: list[list[torch.Tensor]]) -> torch.Tensor:
    """LSGAN discriminator loss: ½ (mean (D(real) − 1)² + mean D(fake)²)."""
    return 0.5 * (lsgan(real_d, real=True) + lsgan(fake_d, real=False))
