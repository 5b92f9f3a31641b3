"""TrainConfig: everything a training run needs, read from TOML (tomllib), frozen, saved in
every checkpoint.

A TOML file has top-level run settings and the tables [model] (`reenact.model.ModelConfig`;
`variant = "kshot"` trains the multi-reference generator), [data], [losses] (one weight per loss; 0
switches a loss off, and its auxiliary network is then never loaded) and [discriminator]. Unknown
keys are errors, so a typo cannot silently fall back to a default. Relative paths are relative to
the current directory (run from the project root). See configs/*.toml for complete examples.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

from reenact.errors import UsageError, from_os_error
from reenact.model import DiscriminatorConfig, ModelConfig
from reenact.validate import range_problem, type_problem

PAIRINGS = ("resample", "identity", "mixed")
GAN_LOSSES = ("lsgan", "hinge")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
CHECKPOINT_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class DataConfig:
    """cache: prepared cache folder (`reenact data prepare`); source/identities/split/quality:
    how to prepare it when it is missing. pairing: "resample" (reference vs. itself with another
    person's face contour, the thesis), "identity" (two photos of one person; losses masked to
    the head), "mixed" (each sample picks one of the two at random). flip: probability of a
    horizontal flip; colour: brightness/contrast/saturation jitter amplitude; scale: relative
    scale jitter (shift up to half of it). workers: DataLoader processes (0 = in the main one).
    references (k-shot variant only): references per sample, all of the target's person (other
    photos; the sample's own photo when the person has no other); 0 = drawn per batch from
    1..model.k_max. region_pack / identity_pairs / cache_size (region variant only): the region
    pack (`reenact.train.regions`: round-trip and same-person pairs) built from `cache` on first
    use, the share of photos that also get a same-person pair, and the face-crop side of `cache`
    (the region crops are cut from it; 0 = the model's size). videos / video_cache / video_stride
    (region variant only, optional): talking-face videos whose every `video_stride`-th frame is
    prepared into `video_cache` (`cache.prepare_video_cache`) and adds round-trip and same-video
    pairs to the region pack."""

    cache: str = ".cache/packs/celeba-id-train-256"
    source: str | None = None
    identities: str | None = None
    split: str = "train"
    quality: int = 85
    pairing: str = "resample"
    flip: float = 0.5
    colour: float = 0.1
    scale: float = 0.05
    workers: int = 2
    references: int = 0
    region_pack: str = ""
    identity_pairs: float = 0.3
    cache_size: int = 0
    videos: tuple[str, ...] = ()
    video_cache: str = ""
    video_stride: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "videos", tuple(self.videos))  # a TOML array arrives as a list
        if self.videos and not self.video_cache:
            raise UsageError("data.videos needs data.video_cache (the folder their frames are prepared into)")
        if self.video_stride < 1:
            raise UsageError("data.video_stride must be ≥ 1")
        if self.references < 0:
            raise UsageError("data.references must be ≥ 0 (0 = random per batch in 1..model.k_max)")
        if self.pairing not in PAIRINGS:
            raise UsageError(f"data.pairing {self.pairing!r} is unknown", f"use one of {', '.join(PAIRINGS)}")
        if not 0 <= self.identity_pairs <= 1:
            raise UsageError("data.identity_pairs must be in [0, 1]")
        if self.split == "test":
            raise UsageError("refusing to train on the test split", "use split = \"train\"")


@dataclass(frozen=True)
class LossWeights:
    """Weight of each generator loss; 0 disables it. l1_ae: F's reconstruction of the reference;
    l1: output vs. target; perceptual: VGG16 features; identity: SFace embedding distance to the
    reference; gan: adversarial loss of the multi-scale PatchGAN conditioned on the pose guide (the
    pose discriminator); identity_gan: adversarial loss of the identity discriminator (the same
    PatchGAN conditioned on a reference photo of the person; it also learns to reject a real photo
    shown with another person's reference); feature_matching: features of the discriminators.
    Region variant only: self_consistency (the reference driven by its own pose returns itself)
    and triple_consistency (A driven to B, then to C, equals A driven to C)."""

    l1_ae: float = 1.0
    l1: float = 10.0
    perceptual: float = 10.0
    identity: float = 1.0
    gan: float = 1.0
    feature_matching: float = 0.0
    identity_gan: float = 0.0
    self_consistency: float = 0.0
    triple_consistency: float = 0.0

    def active(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v > 0}

    @property
    def needs_discriminator(self) -> bool:
        """Whether the pose discriminator is built (the identity one exists iff identity_gan > 0)."""
        return self.gan > 0 or self.feature_matching > 0

    @property
    def trains_decoder(self) -> bool:
        """Whether any loss reaches D (all but the auto-encoder loss do)."""
        return any(v > 0 for k, v in asdict(self).items() if k != "l1_ae")


@dataclass(frozen=True)
class TrainConfig:
    """Run settings; see configs/base-256.toml for a commented example. gan_loss: "lsgan" (least
    squares, the thesis) or "hinge" (CainGAN) for every discriminator."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    seed: int = 0
    batch_size: int = field(default=8, metadata={"range": (1, 4096)})  # bigger: memory runs out first
    max_steps: int = 100_000
    max_minutes: float = 0.0
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    gan_loss: str = "lsgan"
    beta1: float = 0.5
    beta2: float = 0.999
    ema_decay: float = 0.0
    amp: str = "auto"
    device: str = "auto"
    mask_losses: bool = False
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 500
    keep_every: int = 0
    checkpoint_dtype: str = "float32"
    checkpoint_optimizer: bool = True
    part_mib: float = 15.0
    threads: int = 0

    def __post_init__(self) -> None:
        checks = ((self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}"),
                  (self.gan_loss in GAN_LOSSES, f"gan_loss must be one of {GAN_LOSSES}"),
                  (self.data.references <= self.model.k_max or self.model.variant != "kshot",
                   "data.references must not exceed model.k_max"),
                  (self.device in DEVICES, f"device must be one of {DEVICES}"),
                  (self.checkpoint_dtype in CHECKPOINT_DTYPES, f"checkpoint_dtype must be one of {CHECKPOINT_DTYPES}"),
                  (self.batch_size >= 1 and self.max_steps >= 0, "batch_size ≥ 1 and max_steps ≥ 0"),
                  (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
                  (min(self.log_every, self.sample_every, self.checkpoint_every) >= 1, "*_every must be ≥ 1"),
                  (self.model.variant == "region" or not (self.losses.self_consistency or self.losses.triple_consistency),
                   "self_consistency and triple_consistency need model.variant = \"region\""),
                  (self.model.variant != "region" or bool(self.data.region_pack),
                   "model.variant = \"region\" needs data.region_pack"),
                  (self.model.variant != "region" or self.losses.identity == 0,
                   "the identity loss needs whole faces: set losses.identity = 0 for a region model"))
        for ok, msg in checks:
            if not ok:
                raise UsageError(f"bad training config: {msg}")
        if not self.losses.active():
            raise UsageError("every loss weight in [losses] is 0: nothing to train", "give at least one loss a weight > 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def cache_size(self) -> int:
        """Side of the face crops in data.cache."""
        return self.data.cache_size or self.model.size

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build from nested dicts (a parsed TOML or a checkpoint's copy). Raises UsageError."""
        sub = {"model": ModelConfig, "data": DataConfig, "losses": LossWeights, "discriminator": DiscriminatorConfig}
        _check_keys("", values, {f.name for f in fields(cls)})
        problem = type_problem(cls, values) or range_problem(cls, values)  # from the annotations: new fields are covered too
        if problem:
            raise UsageError(f"bad training config: {problem}", "see configs/base-256.toml for every key")
        kw = {}
        for key, value in values.items():
            if key in sub:
                if not isinstance(value, dict):
                    raise UsageError(f"[{key}] must be a table")
                _check_keys(f"[{key}] ", value, {f.name for f in fields(sub[key])})
                try:
                    value = sub[key](**value)
                except (ValueError, TypeError) as e:
                    raise UsageError(f"bad [{key}] table: {e}") from None
            kw[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kw)

    @classmethod
    def from_toml(cls, path: str | Path) -> "TrainConfig":
        try:
            with open(path, "rb") as fh:
                values = tomllib.load(fh)
        except OSError as e:  # missing, a folder, a name too long: an input problem (exit 4)
            raise from_os_error(e, "input", "pass an existing TOML file, e.g. configs/small-128.toml") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:  # a binary file fails to decode
            raise UsageError(f"{path} is not valid TOML: {e}") from None
        try:
            return cls.from_dict(values)
        except UsageError as e:
            raise UsageError(f"{path}: {e.message}", e.hint) from None

    def replace(self, **changes) -> "TrainConfig":
        changes = {k: asdict(v) if is_dataclass(v) else v for k, v in changes.items()}
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def _check_keys(where: str, values: dict, known: set[str]) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"unknown {where}config keys: {', '.join(unknown)}",
                         f"known: {', '.join(sorted(known))}")
