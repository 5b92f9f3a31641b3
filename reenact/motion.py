"""Motion retargeting: which landmarks should the reference have to show the driver's pose and
expression?

Both faces are brought into the canonical frame (pose and scale removed, `reenact.geometry`).
The driver's expressive parts are then moved onto the reference's face *per component*:

* each eye with its iris and brow is scaled and placed by that eye's two corners, so lid
  aperture, gaze and brow raise transfer in units of the reference's own eye;
* the lips are scaled by the eye-corner distance and hung from the upper lip's midpoint, so
  mouth opening and smile transfer in units of the reference's face; the chin follows the lower
  lip (jaw opening) instead of copying the driver's chin.

Everything else (face contour, nose, cheeks) keeps the reference's shape; it follows the moved
components through a smooth interpolation of their displacements, so the mesh stays coherent.
Finally the result is posed with the driver's head rotation at the reference's position and
scale ("absolute" motion). Relative motion (changes w.r.t. a driver anchor frame) builds on the
same pieces.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from reenact import geometry as g

_CHIN = (152, 148, 377, 176, 400, 149, 378)
SIGMA = 0.12  # canonical units (outer eye corners are 1 apart) for displacement spreading


@dataclass(frozen=True)
class Component:
    """Landmarks moved together. The driver's copy is scaled by the ratio of the `scale_pair`
    distances and translated so the centroid of `anchors` coincides with the reference's."""

    name: str
    members: tuple[int, ...]
    anchors: tuple[int, ...]
    scale_pair: tuple[int, int]


COMPONENTS = (
    # Each eye with its iris and brow, in units of that eye's width, placed by its corners.
    Component("eye_r", g.RIGHT_EYE + g.RIGHT_IRIS + g.RIGHT_BROW, (33, 133), (33, 133)),
    Component("eye_l", g.LEFT_EYE + g.LEFT_IRIS + g.LEFT_BROW, (263, 362), (263, 362)),
    # The lips in units of the eye-corner distance, hung from the upper lip's midpoint (point 0
    # sits on the upper jaw, so it does not move when the mouth opens).
    Component("mouth", tuple(dict.fromkeys(g.LIPS_OUTER + g.LIPS_INNER)), (0,), (33, 263)),
)
# The chin follows the lower lip's midpoint (jaw opening), not the driver's chin shape.
CHIN_FOLLOWS = 17


def _place(comp: Component, ref_c: np.ndarray, drv_c: np.ndarray) -> np.ndarray:
    """(M, 3) driver member points scaled and moved onto the reference's component frame."""
    a, b = comp.scale_pair
    s = np.linalg.norm(ref_c[a] - ref_c[b]) / max(np.linalg.norm(drv_c[a] - drv_c[b]), 1e-9)
    anc = list(comp.anchors)
    t = ref_c[anc].mean(0) - s * drv_c[anc].mean(0)
    return s * drv_c[list(comp.members)] + t


@functools.lru_cache(maxsize=None)
def _spread(members: tuple[int, ...]) -> np.ndarray:
    """(478, M) weights spreading member displacements to every landmark (rows of members are
    one-hot). Built on the canonical face, so it is the same for every face."""
    canon = g.canonical().points[:, :2]
    d2 = ((canon[:, None, :] - canon[None, list(members), :]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * SIGMA ** 2))
    w = k / k.sum(1, keepdims=True) * k.max(1, keepdims=True)
    for j, m in enumerate(members):
        w[m] = 0.0
        w[m, j] = 1.0
    return w


def transfer_expression(ref_c: np.ndarray, drv_c: np.ndarray,
                        components: tuple[Component, ...] = COMPONENTS) -> np.ndarray:
    """Canonical-frame (478, 3) reference shape with the driver's components moved in."""
    members: list[int] = []
    deltas: list[np.ndarray] = []
    for comp in components:
        members += comp.members
        deltas.append(_place(comp, ref_c, drv_c) - ref_c[list(comp.members)])
    delta = np.concatenate(deltas) if deltas else np.zeros((0, 3))
    if CHIN_FOLLOWS in members:
        follow = delta[members.index(CHIN_FOLLOWS)]
        members += _CHIN
        delta = np.vstack([delta, np.repeat(follow[None], len(_CHIN), 0)])
    if not members:
        return np.array(ref_c, np.float64)
    return ref_c + _spread(tuple(members)) @ delta


def retarget(ref: np.ndarray, drv: np.ndarray, *,
             components: tuple[Component, ...] = COMPONENTS) -> np.ndarray:
    """Absolute motion: the reference's landmarks with the driver's head rotation and expression.

    ref: (478, 3) reference landmarks (e.g. in its crop); drv: (478, 3) driver landmarks in any
    frame. Returns (478, 3) float64 in the reference's frame: the reference's position and scale,
    the driver's rotation, the reference's face shape with the driver's eyes/brows/mouth.
    """
    fit_r, fit_d = g.fit_head(ref), g.fit_head(drv)
    out_c = transfer_expression(fit_r.inverse_apply(ref), fit_d.inverse_apply(drv), components)
    posed = g.Similarity(scale=fit_r.scale, rotation=fit_d.rotation, translation=fit_r.translation)
    return posed.apply(out_c)
