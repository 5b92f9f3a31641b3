"""Typed, frozen configuration for inference (model and training configs live beside their code).

Defaults are in code; the CLI builds an `InferenceConfig` from its options and hands it to the
pipeline. Values are validated here, so the library never trusts raw user input.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from reenact.errors import UsageError

ENGINES = ("warp", "gan", "fusion")


@dataclass(frozen=True)
class InferenceConfig:
    """How to render.

    engine: "warp" (classical landmark warp, no weights), "gan" (generators F+D) or "fusion"
        (FusionNet: GAN outside the shared face region, warp inside).
    size: side of the model crop (the generators' resolution; the warp engine renders at the
        face's native resolution, at least this, at most `max_warp_size`).
    max_side: longest side of video output frames (larger references are downscaled; 0 = keep).
    crop: write only the aligned face crop (size×size) instead of pasting into the reference.
    compare: write driver and result side by side.
    weights: path of an exported generator (.onnx) for gan/fusion; None = the bundled default.
    """

    engine: str = "warp"
    size: int = 256
    max_warp_size: int = 1024
    max_side: int = 1920
    crop: bool = False
    compare: bool = False
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine {self.engine!r}", f"choose one of {', '.join(ENGINES)}")
        if not 64 <= self.size <= 1024 or self.size % 16:
            raise UsageError(f"--size {self.size} is out of range", "use a multiple of 16 in 64..1024")
        if self.max_side and self.max_side < 64:
            raise UsageError(f"--max-side {self.max_side} is too small", "use 0 (keep) or ≥ 64")
        if self.crop and self.compare:
            raise UsageError("--crop and --compare cannot be combined")

    def replace(self, **changes) -> "InferenceConfig":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return InferenceConfig(**values)
