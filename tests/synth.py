"""Synthetic faces built from the canonical face: exact, known landmarks for geometry tests."""

from __future__ import annotations

import numpy as np

from reenact import align
from reenact import geometry as g


def face(size: int = 256, *, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
         scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """(478, 3) landmarks of the canonical face posed in a size×size frame."""
    canon = g.canonical().points
    rot = g.pose_to_rotation(g.HeadPose(yaw=yaw, pitch=pitch, roll=roll))
    s = align.EYE_SPAN * size * scale
    centre = np.array([size / 2 + shift[0], align.CENTRE_Y * size + shift[1], 0.0])
    return s * canon @ rot.T + centre


def open_mouth(points: np.ndarray, amount: float) -> np.ndarray:
    """Move the lower lip and chin down by `amount` × eye-corner distance (in the face's frame)."""
    fit = g.fit_head(points)
    can = fit.inverse_apply(points)
    lower = [i for i in set(g.LOWER_LIP) - set(g.UPPER_LIP)] + [14, 87, 178, 88, 95, 317, 402, 318, 324]
    lower += [152, 148, 377, 176, 400, 149, 378]
    can[sorted(set(lower))] += np.array([0.0, amount, 0.0])
    return fit.apply(can)


def close_eyes(points: np.ndarray, amount: float) -> np.ndarray:
    """Move the upper lids down towards the lower lids by `amount` (0 open … 1 closed)."""
    fit = g.fit_head(points)
    c = fit.inverse_apply(points)
    for upper, lower in (((246, 161, 160, 159, 158, 157, 173), (7, 163, 144, 145, 153, 154, 155)),
                         ((466, 388, 387, 386, 385, 384, 398), (249, 390, 373, 374, 380, 381, 382))):
        c[list(upper)] += amount * (c[list(lower)] - c[list(upper)])
    return fit.apply(c)


def textured(size: int = 256, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (uint8 size×size×3) with structure at several scales."""
    rng = np.random.default_rng(seed)
    import cv2

    img = np.zeros((size, size, 3), np.float32)
    for k in (4, 16, 64):
        noise = rng.random((k, k, 3)).astype(np.float32)
        img += cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)
