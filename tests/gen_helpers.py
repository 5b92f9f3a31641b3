"""Helpers for the generator/training tests: synthetic prepared caches and tiny configs.

Synthetic caches need no mediapipe and no shared data, so the core training tests always run.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from reenact import align, parsing
from reenact import geometry as g
from reenact.train.cache import CacheWriter, FaceCache
from reenact.train.config import TrainConfig
from tests import synth

REPO = Path(__file__).resolve().parents[1]


def synthetic_face(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(crop RGB uint8, (478, 3) landmarks): a posed canonical face with a random contour width,
    drawn as its parsing map over a random texture."""
    pts = synth.face(size, yaw=rng.uniform(-15, 15), pitch=rng.uniform(-8, 8), roll=rng.uniform(-8, 8),
                     scale=rng.uniform(0.9, 1.05))
    fit = g.fit_head(pts)
    can = fit.inverse_apply(pts)
    oval = list(g.FACE_OVAL)
    can[oval, 0] *= rng.uniform(0.9, 1.1)  # another person's jaw width
    pts = fit.apply(can)
    pm = parsing.parsing_map(pts, size)
    tex = synth.textured(size, seed=int(rng.integers(1 << 30))).astype(np.float32)
    face = parsing.colorize(pm).astype(np.float32)
    alpha = parsing.face_mask(pm)[..., None]
    img = np.clip(tex * (1 - alpha) + (0.7 * face + 0.3 * tex) * alpha, 0, 255).astype(np.uint8)
    return img, pts


def synthetic_cache(path: Path, n: int = 6, size: int = 64, seed: int = 0) -> FaceCache:
    """A prepared cache of n synthetic faces (identities i % 3) at `size`."""
    rng = np.random.default_rng(seed)
    writer = CacheWriter(path, size=size, quality=90)
    for i in range(n):
        img, pts = synthetic_face(size, rng)
        writer.add(f"synth_{i:03d}.png", i % 3, img, pts)
    writer.finish({"source": "synthetic", "identities": None, "split": "train"})
    return FaceCache(path)


def tiny_config(cache: Path, **changes) -> TrainConfig:
    """configs/tiny.toml pointing at `cache`; `changes` replace top-level keys or whole tables
    (e.g. losses={...} merges into the [losses] table)."""
    base = TrainConfig.from_toml(REPO / "configs" / "tiny.toml").to_dict()
    base["data"]["cache"] = str(cache)
    for key, value in changes.items():
        if isinstance(value, dict):
            base[key].update(value)
        else:
            base[key] = value
    return TrainConfig.from_dict(base)


def real_crop(photo: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crop and landmarks of a real photo (needs mediapipe)."""
    from reenact import media
    from reenact.landmarks import Landmarker

    img = media.read_image(photo)
    with Landmarker(mode="image") as lm:
        face = lm.detect(img)[0]
    crop = align.align(face.points, size)
    return crop.extract(img), crop.points_to_crop(face.points)


def blur(img: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(img, (5, 5), 1.0)


@pytest.fixture(autouse=False)
def one_thread():
    """Run torch on one intra-op thread (2 threads on a busy 2-core machine are ~10× slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trained_checkpoint(tmp: Path, steps: int = 1, **changes) -> Path:
    """A tiny training run on a synthetic cache → its last checkpoint."""
    from reenact.train import loop

    cache = tmp / "cache"
    if not cache.exists():
        synthetic_cache(cache, n=6)
    cfg = tiny_config(cache, **changes)
    return loop.train(cfg, tmp / "run", max_steps=steps).checkpoint
