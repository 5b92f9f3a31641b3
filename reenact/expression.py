"""Landmark expression descriptor: eye and mouth apertures, mouth width, brow heights.

The descriptor is measured in the canonical frame (`geometry.fit_head(points).inverse_apply`):
head pose, position and scale are removed first, so turning or moving the head does not change
it, and every component is in units of the face's outer-eye-corner distance ("eye span", the
canonical face's unit). With y pointing down in that frame:

  eye_open_r / eye_open_l   lower-lid midpoint y − upper-lid midpoint y (159/145, 386/374)
  mouth_open                inner lower-lip midpoint y − inner upper-lip midpoint y (13/14)
  mouth_width               distance between the mouth corners in the canonical x-y plane (61/291)
  brow_r / brow_l           eye-corner mean y − brow-point mean y (the brow's height above its eye)

"_r"/"_l" are the subject's right/left. The components are absolute shape measurements, so two
different people with the same expression still differ by their anatomy (mouth width and brow
height most): compare a face with itself over time (`reenact.evaluate.metrics.sequence_correlation`)
when identity must drop out.
"""

from __future__ import annotations

import numpy as np

from reenact import geometry as g

COMPONENTS = ("eye_open_r", "eye_open_l", "mouth_open", "mouth_width", "brow_r", "brow_l")


def _brow_height(c: np.ndarray, eye_key: tuple[int, ...], brow: tuple[int, ...]) -> float:
    corners = c[list(eye_key[:2]), 1].mean()
    return float(corners - c[list(brow), 1].mean())


def expression_descriptor(points: np.ndarray) -> np.ndarray:
    """The expression descriptor of one face.

    Args:
        points: (478, 3) face-mesh landmarks in any image frame (x, y pixels, z relative depth).
    Returns:
        (6,) float64 in `COMPONENTS` order, in units of the outer-eye-corner distance.
    Raises:
        ValueError: wrong shape or degenerate landmarks (from the rigid fit).
    """
    pts = np.asarray(points, np.float64)
    if pts.shape != (g.N_LANDMARKS, 3):
        raise ValueError(f"expected ({g.N_LANDMARKS}, 3) landmarks, got {pts.shape}")
    c = g.to_canonical(pts)
    _, _, r_up, r_low = g.RIGHT_EYE_KEY  # outer corner, inner corner, upper lid, lower lid
    _, _, l_up, l_low = g.LEFT_EYE_KEY
    m_left, m_right, m_up, m_low = g.MOUTH_KEY
    return np.array([
        c[r_low, 1] - c[r_up, 1],
        c[l_low, 1] - c[l_up, 1],
        c[m_low, 1] - c[m_up, 1],
        float(np.linalg.norm(c[m_right, :2] - c[m_left, :2])),
        _brow_height(c, g.RIGHT_EYE_KEY, g.RIGHT_BROW),
        _brow_height(c, g.LEFT_EYE_KEY, g.LEFT_BROW),
    ], dtype=np.float64)


def as_dict(descriptor: np.ndarray) -> dict[str, float]:
    """{component name: value} for a (6,) descriptor (for JSON and reports)."""
    return {name: float(v) for name, v in zip(COMPONENTS, np.asarray(descriptor).ravel(), strict=True)}
