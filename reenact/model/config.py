"""ModelConfig: the generator's shape (resolution, widths, appearance injection), frozen.

Saved as a plain dict in every training checkpoint and as JSON in the ONNX metadata, so any
artefact can rebuild its network (`ModelConfig.from_dict(meta)`). Defaults describe the base
256² model; `configs/*.toml` hold the tiny (tests) and small (CPU) variants.

Levels: level k has resolution size / 2**k and width `width(k)` = min(base·2**k, max). F (the
appearance auto-encoder) downsamples to level `levels` (its compact latent) and decodes back up to
level 0; D (the SPADE decoder) starts from the parsing map at level `levels` and upsamples to
level 0. F's decoder features at the `inject_levels` coarsest levels are handed to D.

Variants: "thesis" (one reference: F + D, `reenact.model.generator`), "region" (F + a SPADE U-Net
D redrawing one face part on a small crop, `reenact.model.region`) and "kshot" (CainGAN-style
multi-reference fusion: an embedder E_k gives every reference features and a responsibility map at
the same scales, fused by a per-pixel softmax over the references; `reenact.model.kshot`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

INJECTIONS = ("concat", "adain", "spade")
VARIANTS = ("thesis", "kshot", "region")
REGION_NAMES = ("mouth", "eyes")
BLENDS = ("opening", "area")


@dataclass(frozen=True)
class ModelConfig:
    """Generator hyper-parameters.

    size: side of the square face crop (the model's input and output resolution).
    parsing_channels: channels of the pose guide (shape encoder E's `N_CHANNELS`, 12).
    base_channels / max_channels: width at level 0, doubling per level up to the cap.
    levels: number of 2× down-samplings in F (latent at size / 2**levels, ≥ 4 pixels).
    latent_channels: channels of F's compact latent (the bottleneck of the auto-encoder).
    inject_levels: how many of F's decoder scales reach D, coarsest first (≥ 4 in the design).
    injection: "concat" (thesis: F features concatenated to D's at matching scales), "adain"
        (appearance-transfer module: AdaIN with F's statistics, blended by learned α, β maps) or
        "spade" (F's features join the parsing map as the input of SPADE's γ/β convolutions, so
        appearance modulates D's normalisation, as CainGAN's identity normalisation does).
    feature_warp: warp F's features with the landmark warp's backward map before injection
        (adds a `warp_grid` input: N×size×size×2 normalised sampling positions).
    spade_hidden: hidden width of the SPADE modulation convolutions (capped at 2× block width).
    variant: "thesis" (one reference, F + D) or "kshot" (embedder E_k + fusion + D; any number of
        references, trained with 1..k_max).
    k_max: most references per training sample (k-shot variant; inference takes any K ≥ 1).
    targeted_embedder: the k-shot embedder also sees the target's parsing map, so a reference's
        responsibility can depend on the pose asked for (then E_k runs per frame, not per reference).
    region: with variant "region", the face part the generator redraws ("mouth" or "eyes");
        `size` is then the side of that part's region crop (`reenact.regions`).
    blend: where a region model's output replaces the warp (training weights its loss there, and
        the tool blends it in there): "opening" — what the warp cannot show (the mouth's new
        opening, lids opening wider); "area" (mouth only) — the whole mouth area, lips and the skin
        around them, on every frame. Changes no weight shape: a model can be trained on from the
        other blend (`same_weights`).
    """

    size: int = 256
    parsing_channels: int = 12
    base_channels: int = 32
    max_channels: int = 128
    levels: int = 4
    latent_channels: int = 64
    inject_levels: int = 4
    injection: str = "concat"
    feature_warp: bool = False
    spade_hidden: int = 64
    variant: str = "thesis"
    k_max: int = 5
    targeted_embedder: bool = False
    region: str = ""
    blend: str = "opening"

    def __post_init__(self) -> None:
        if self.injection not in INJECTIONS:
            raise ValueError(f"injection must be one of {INJECTIONS}, got {self.injection!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.variant == "kshot" and self.feature_warp:
            raise ValueError("the kshot variant has no feature_warp (each reference would need its own warp grid)")
        if (self.variant == "region") != (self.region in REGION_NAMES):
            raise ValueError(f"variant \"region\" needs region = one of {REGION_NAMES} (and only it has one)")
        if self.blend not in BLENDS or (self.blend == "area" and self.region != "mouth"):
            raise ValueError(f"blend must be one of {BLENDS} (\"area\" for the mouth region only), got {self.blend!r}")
        if self.variant == "region" and self.feature_warp:
            raise ValueError("the region variant has no feature_warp (its D sees the warp render itself)")
        if self.targeted_embedder and self.variant != "kshot":
            raise ValueError("targeted_embedder needs variant = \"kshot\"")
        if self.levels < 1 or self.size % (2 ** self.levels) or self.size // 2 ** self.levels < 4:
            raise ValueError(f"size {self.size} must be divisible by 2**levels ({2 ** self.levels}) "
                             "with at least 4 pixels left at the coarsest level")
        if not 1 <= self.inject_levels <= self.levels + 1:
            raise ValueError(f"inject_levels must be in 1..{self.levels + 1}, got {self.inject_levels}")
        for name in ("parsing_channels", "base_channels", "max_channels", "latent_channels", "spade_hidden", "k_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")

    def same_weights(self, other: "ModelConfig") -> bool:
        """Whether `other` has the same networks (it may differ in `blend`, which no weight sees)."""
        return replace(self, blend="opening") == replace(other, blend="opening")

    def width(self, level: int) -> int:
        """Channels at level k (resolution size / 2**k)."""
        return min(self.base_channels * 2 ** level, self.max_channels)

    def resolution(self, level: int) -> int:
        return self.size // 2 ** level

    def hidden(self, level: int) -> int:
        """SPADE modulation width at a level."""
        return min(self.spade_hidden, 2 * self.width(level))

    @property
    def injected(self) -> tuple[int, ...]:
        """Levels receiving F's features, coarsest first (e.g. (4, 3, 2, 1))."""
        return tuple(range(self.levels, self.levels - self.inject_levels, -1))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """Build from a dict; unknown keys raise ValueError (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**values)
