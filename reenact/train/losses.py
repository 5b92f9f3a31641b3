"""Training losses, combined by the weight dict of the config ([losses] table).

Generator: L1 auto-encoder reconstruction (F's output vs. the reference), L1 reenactment
reconstruction (output vs. target), perceptual (VGG16 taps, `auxnets.vgg.PerceptualLoss`),
identity (1 − cosine of SFace embeddings of output and reference, `auxnets.sface_torch`),
adversarial terms of the pose discriminator (multi-scale PatchGAN on [parsing, image]) and of the
optional identity discriminator (the same network on [reference photo, image]), and optional
discriminator feature matching. Adversarial losses: LSGAN (the thesis) or hinge (CainGAN), chosen
by the config's `gan_loss`. With K references (k-shot variant), the auto-encoder loss covers the
reconstructions of all K and the identity loss compares with the first reference.

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


def hinge(outputs: list[list[torch.Tensor]], real: bool) -> torch.Tensor:
    """Hinge loss of the discriminator averaged over scales: mean relu(1 − D) for real, relu(1 + D) for fake."""
    sign = -1.0 if real else 1.0
    return torch.stack([F.relu(1.0 + sign * o[-1].float()).mean() for o in outputs]).mean()


def generator_adversarial(fake_d: list[list[torch.Tensor]], kind: str = "lsgan") -> torch.Tensor:
    """The generator's side: LSGAN mean (D(fake) − 1)², or hinge −mean D(fake); averaged over scales."""
    if kind == "hinge":
        return torch.stack([-o[-1].float().mean() for o in fake_d]).mean()
    return lsgan(fake_d, real=True)


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
    """forward(batch, output, recon, fake_d, real_d, fake_id, real_id) → {name: weighted term},
    plus "total".

    batch: the dataset's tensors (reference, target, mask, masked, ref_five, target_five;
    references N×K×3×S×S with the k-shot variant, whose recon is then N×K×3×S×S);
    fake_d / real_d: pose-discriminator outputs for the output and the target (None without it);
    fake_id / real_id: the same for the identity discriminator; consistency: {loss name:
    (prediction, goal, mask)} of the region variant's consistency losses (masked L1 each).
    Unweighted values are returned under "raw/<name>" for logging.
    """

    def __init__(self, weights: LossWeights, *, mask_all: bool = False, gan_loss: str = "lsgan") -> None:
        super().__init__()
        self.weights = weights.active()
        self.mask_all = mask_all
        self.gan_loss = gan_loss
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

    def forward(self, batch, output, recon, fake_d=None, real_d=None, fake_id=None,
                real_id=None, consistency=None) -> dict[str, torch.Tensor]:
        output, recon = output.float(), recon.float()
        mask = self.loss_mask(batch)
        raw: dict[str, torch.Tensor] = {}
        w = self.weights
        if "l1_ae" in w:
            raw["l1_ae"] = F.l1_loss(recon, batch.get("references", batch["reference"]))
        if "l1" in w:
            raw["l1"] = masked_l1(output, batch["target"], mask)
        if self.perceptual is not None:
            raw["perceptual"] = self.perceptual(output * mask, batch["target"] * mask)
        if self.sface is not None:
            raw["identity"] = self.identity(output, batch)
        if "gan" in w:
            raw["gan"] = generator_adversarial(fake_d, self.gan_loss)
        if "identity_gan" in w:
            raw["identity_gan"] = generator_adversarial(fake_id, self.gan_loss)
        if "feature_matching" in w:
            raw["feature_matching"] = feature_matching(fake_d + (fake_id or []), real_d + (real_id or []))
        for name, (pred, goal, goal_mask) in (consistency or {}).items():
            raw[name] = masked_l1(pred.float(), goal.float(), goal_mask)
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


def discriminator_loss(fake_d: list[list[torch.Tensor]], real_d: list[list[torch.Tensor]], kind: str = "lsgan",
                       mismatch_d: list[list[torch.Tensor]] | None = None) -> torch.Tensor:
    """LSGAN: ½ (mean (D(real) − 1)² + mean D(fake)²); hinge: mean relu(1 − D(real)) + mean relu(1 + D(fake)).

    mismatch_d: outputs for real images shown with another person's condition (identity
    discriminator), also to be called fake; the fake term is then the mean of the two."""
    term = hinge if kind == "hinge" else lsgan
    fake = term(fake_d, real=False)
    if mismatch_d is not None:
        fake = 0.5 * (fake + term(mismatch_d, real=False))
    real = term(real_d, real=True)
    return real + fake if kind == "hinge" else 0.5 * (real + fake)
