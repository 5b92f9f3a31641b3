"""Helpers for the generator/training tests: synthetic prepared caches and tiny configs.

Synthetic caches need no mediapipe and no shared data, so the core training tests always run.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

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


def tiny_config(cache: Path, *, toml: str = "tiny.toml", **changes) -> TrainConfig:
    """configs/<toml> pointing at `cache`; `changes` replace top-level keys or merge into tables
    (e.g. losses={...} merges into the [losses] table)."""
    base = TrainConfig.from_toml(REPO / "configs" / toml).to_dict()
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


def trained_checkpoint(tmp: Path, steps: int = 1, **changes) -> Path:
    """A tiny training run on a synthetic cache → its last checkpoint."""
    from reenact.train import loop

    cache = tmp / "cache"
    if not cache.exists():
        synthetic_cache(cache, n=6)
    cfg = tiny_config(cache, **changes)
    return loop.train(cfg, tmp / "run", max_steps=steps).checkpoint


def assert_resume_matches(cfg: TrainConfig, tmp: Path, *, split: int, total: int) -> tuple[dict, dict]:
    """Train `total` steps straight, and `split` + resume to `total`: every saved network (and the
    EMA) must be bit-identical. Returns both checkpoints."""
    import torch

    from reenact.train import checkpoint as ckpt
    from reenact.train import loop

    straight = loop.train(cfg, tmp / "a", max_steps=total)
    loop.train(cfg, tmp / "b", max_steps=split)
    resumed = loop.train(cfg, tmp / "b", max_steps=total, resume=loop.resolve_resume("auto", tmp / "b"))
    assert (resumed.start_step, resumed.step) == (split, total)
    a, b = ckpt.load_checkpoint(straight.checkpoint), ckpt.load_checkpoint(resumed.checkpoint)
    for part in ("generator", "discriminator", "identity_discriminator", "ema"):
        assert (a.get(part) is None) == (b.get(part) is None), part
        assert all(torch.equal(a[part][k], b[part][k]) for k in a.get(part) or {}), part
    return a, b
