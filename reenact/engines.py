"""Rendering engines: given a prepared reference and target landmarks, produce a face crop.

An engine works in its own crop of the reference frame (`RefState.crop`). `prepare` runs once per
reference; `render` runs per frame and returns the rendered crop and the paste-back mask (float
in [0, 1], zero at the crop border so the paste is seamless). Targets arrive in the reference
*frame's* pixel coordinates; each engine maps them into its crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from reenact import align, warp
from reenact.config import InferenceConfig
from reenact.landmarks import Face


@dataclass(frozen=True)
class RefState:
    """An engine's per-reference cache. `crop`: the engine's crop of the reference frame;
    `image`: the reference crop (size×size×3 uint8); `points`: its (478, 3) crop landmarks."""

    crop: align.Crop
    image: np.ndarray
    points: np.ndarray
    extra: Any = None


class Engine(Protocol):
    name: str

    def prepare(self, frame: np.ndarray, face: Face) -> RefState: ...

    def render(self, state: RefState, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """target: (478, 3) reference-frame landmarks → (crop uint8 S×S×3, mask float32 S×S)."""
        ...


def native_size(points: np.ndarray, lo: int, hi: int) -> int:
    """Crop side at which one crop pixel ≈ one frame pixel, clamped to [lo, hi], multiple of 16."""
    unit = align.align(points, 256).scale  # crop px per frame px at side 256
    side = 256 / max(unit, 1e-6)
    return int(np.clip(round(side / 16) * 16, lo, hi))


def paste_mask(head: np.ndarray, size: int) -> np.ndarray:
    """Paste-back mask: the moved head region grown and feathered, forced to 0 at the crop border."""
    grown = align.feathered_mask((head > 0.05).astype(np.float32), feather=size / 24)
    grown = np.clip(grown * 2.0, 0.0, 1.0)
    return grown * align.edge_falloff(size, margin=size / 16)


class WarpEngine:
    """Classical piecewise-affine landmark warp (no weights). Renders at the face's native
    resolution (at least `config.size`), so the paste-back keeps the reference's detail."""

    name = "warp"

    def __init__(self, config: InferenceConfig) -> None:
        self.config = config

    def prepare(self, frame: np.ndarray, face: Face, size: int | None = None) -> RefState:
        if size is None:
            size = native_size(face.points, self.config.size, self.config.max_warp_size)
        crop = align.align(face.points, size)
        image = crop.extract(frame)
        points = crop.points_to_crop(face.points)
        return RefState(crop=crop, image=image, points=points,
                        extra=warp.prepare_source(image, points))

    def render(self, state: RefState, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb, head = warp.warp(state.extra, state.crop.points_to_crop(target))
        size = state.image.shape[0]
        return rgb, paste_mask(np.maximum(head, warp.head_mask(state.points, size)), size)


def build_engine(config: InferenceConfig) -> Engine:
    """The engine named by `config.engine` (gan/fusion need exported weights)."""
    if config.engine == "warp":
        return WarpEngine(config)
    from reenact.errors import MissingWeights

    raise MissingWeights(f"engine {config.engine!r} needs trained generator weights, none are installed",
                         "use --engine warp (the default) until weights are shipped in weights/")
