"""Motion retargeting: which landmarks should the reference have to show the driver's pose and
expression?

Both faces are brought into the canonical frame (pose and scale removed, `reenact.geometry`).
The driver's expressive parts are then moved onto the reference's face *per component*:

* each eye with its iris, and each brow, is scaled and placed by that eye's two corners, so lid
  aperture, gaze and brow raise transfer in units of the reference's own eye;
* the lips are scaled by the eye-corner distance and hung from the upper lip's midpoint, so
  mouth opening and smile transfer in units of the reference's face; the chin follows the lower
  lip (jaw opening) instead of copying the driver's chin.

Everything else (face contour, nose, cheeks) keeps the reference's shape; it follows the moved
components through a smooth interpolation of their displacements, so the mesh stays coherent.

Two ways to pose the result (`Retargeter`):

* absolute (`retarget`): the driver's head rotation at the reference's position and scale, and
  the driver's component shapes (in the reference's units). Used for a single pose photo. A
  reference whose head is rolled past QUARTER_TURN_ABOVE (a photo on its side, a person lying
  down) gets the driver's rotation in its own quarter-turned frame (`quarter_turn`).
* relative (`retarget_relative`): the driver's *changes* with respect to an anchor frame `a` —
  rotation R_out = R_drv(t)·R_drv(a)ᵀ·R_ref, component moves place(t) − place(a) added to the
  reference's own components, the head's shift and scale change relative to the anchor scaled by
  the face-size ratio. At the anchor frame the output is the reference exactly, so the reference's
  eye size, lid shape, mouth width and brows are kept (the driver's identity cannot leak in).
  The anchor is best the driver frame whose pose and expression are nearest the reference's
  (`motion_key`, `choose_anchor`).

`transfer` ("all" | "expression" | "pose") and `regions` (mouth, eyes, brows) select what moves:
the target landmarks mix the reference's and driver's landmark groups, so every engine (and the
parsing maps the shape encoder E draws from the target) sees only the selected parts change.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from reenact import geometry as g
from reenact.config import SOURCE_EXPRESSIONS
from reenact.expression import expression_descriptor

_CHIN = (152, 148, 377, 176, 400, 149, 378)
SIGMA = 0.12  # canonical units (outer eye corners are 1 apart) for displacement spreading

# Relative motion: how far the head may move/scale w.r.t. the anchor. Engines render inside a
# crop fixed around the reference's face (about 3 eye-corner distances wide) and the warp engine
# stretches the background between the head and the crop's border, so large moves are eased
# off: shifts (in the reference's eye-corner distances) pass unchanged up to half of MAX_SHIFT
# and then approach MAX_SHIFT smoothly. Talking-head clips move 0.1–0.5, rarely 1.
MAX_SHIFT = 0.4
SCALE_RANGE = (0.85, 1.18)
# Anchor distance: 1 unit of an expression feature (e.g. a mouth opening of one eye-corner
# distance) counts as much as this many degrees of head rotation.
EXPRESSION_WEIGHT = 100.0


@dataclass(frozen=True)
class Component:
    """Landmarks moved together. The driver's copy is scaled by the ratio of the `scale_pair`
    distances and translated so the centroid of `anchors` coincides with the reference's."""

    name: str
    members: tuple[int, ...]
    anchors: tuple[int, ...]
    scale_pair: tuple[int, int]


COMPONENTS = (
    # Each eye with its iris, and each brow, in units of that eye's width, placed by its corners.
    Component("eye_r", g.RIGHT_EYE + g.RIGHT_IRIS, (33, 133), (33, 133)),
    Component("brow_r", g.RIGHT_BROW, (33, 133), (33, 133)),
    Component("eye_l", g.LEFT_EYE + g.LEFT_IRIS, (263, 362), (263, 362)),
    Component("brow_l", g.LEFT_BROW, (263, 362), (263, 362)),
    # The lips in units of the eye-corner distance, hung from the upper lip's midpoint (point 0
    # sits on the upper jaw, so it does not move when the mouth opens).
    Component("mouth", tuple(dict.fromkeys(g.LIPS_OUTER + g.LIPS_INNER)), (0,), (33, 263)),
)
# User-facing regions (--regions) → components.
REGION_COMPONENTS = {"mouth": ("mouth",), "eyes": ("eye_r", "eye_l"), "brows": ("brow_r", "brow_l")}
# The chin follows the lower lip's midpoint (jaw opening), not the driver's chin shape.
CHIN_FOLLOWS = 17
# (upper, lower) point pairs of each opening, outer corner to inner corner / left to right. A
# lower point never goes above its upper partner (lips and lids meet, they do not cross).
LID_PAIRS = {"eye_r": ((246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155)),
             "eye_l": ((466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381), (398, 382))}
LIP_PAIRS = ((191, 95), (80, 88), (81, 178), (82, 87), (13, 14), (312, 317), (311, 402), (310, 318), (415, 324))
EYE_WIDTH = {"eye_r": (33, 133), "eye_l": (263, 362)}
LID_GAIN_RANGE = (0.5, 2.0)


def components_for(regions: Iterable[str]) -> tuple[Component, ...]:
    """The components of the named regions ("mouth", "eyes", "brows"), in COMPONENTS order."""
    names = {c for r in regions for c in REGION_COMPONENTS[r]}
    return tuple(c for c in COMPONENTS if c.name in names)


def _place(comp: Component, ref_c: np.ndarray, drv_c: np.ndarray) -> np.ndarray:
    """(M, 3) driver member points scaled and moved onto the reference's component frame."""
    a, b = comp.scale_pair
    s = np.linalg.norm(ref_c[a] - ref_c[b]) / max(np.linalg.norm(drv_c[a] - drv_c[b]), 1e-9)
    anc = list(comp.anchors)
    t = ref_c[anc].mean(0) - s * drv_c[anc].mean(0)
    return s * drv_c[list(comp.members)] + t


@functools.lru_cache(maxsize=None)
def spread_weights(members: tuple[int, ...], sigma: float = SIGMA) -> np.ndarray:
    """(478, M) weights spreading member displacements to every landmark (rows of members are
    one-hot; a Gaussian of canonical distance, `sigma` in canonical units). Built on the canonical
    face, so it is the same for every face."""
    canon = g.canonical().points[:, :2]
    d2 = ((canon[:, None, :] - canon[None, list(members), :]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * sigma ** 2))
    w = k / k.sum(1, keepdims=True) * k.max(1, keepdims=True)
    for j, m in enumerate(members):
        w[m] = 0.0
        w[m, j] = 1.0
    return w


def _deltas(ref_c: np.ndarray, drv_c: np.ndarray, components: tuple[Component, ...],
            pinned: tuple[Component, ...] = ()) -> tuple[tuple[int, ...], np.ndarray]:
    """(member indices, (M, 3) displacements) taking the reference's components to the driver's,
    the chin included when the lower lip moves; members of `pinned` components get zero
    displacement, so they stay exactly where they are."""
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
    fixed = [i for comp in pinned for i in comp.members if i not in members]
    if fixed:
        members += fixed
        delta = np.vstack([delta, np.zeros((len(fixed), 3))])
    return tuple(members), delta


def _moved(ref_c: np.ndarray, members: tuple[int, ...], delta: np.ndarray) -> np.ndarray:
    if not members:
        return np.array(ref_c, np.float64)
    return ref_c + spread_weights(members) @ delta


def _lid_gains(ref_c: np.ndarray, anchor_c: np.ndarray,
               components: tuple[Component, ...]) -> dict[str, float]:
    """Relative motion: per eye, how much the driver's lid movements are scaled so that a blink
    from the anchor's opening closes the reference's (different) opening: the ratio of the
    openings, limited to LID_GAIN_RANGE (1 when the anchor's eye is nearly closed)."""
    gains = {}
    for comp in components:
        if comp.name in LID_PAIRS:
            opening = [_opening(c, LID_PAIRS[comp.name], EYE_WIDTH[comp.name]) for c in (ref_c, anchor_c)]
            gains[comp.name] = (float(np.clip(opening[0] / opening[1], *LID_GAIN_RANGE))
                                if opening[1] > 0.05 else 1.0)
    return gains


def _opening(c: np.ndarray, pairs: tuple[tuple[int, int], ...], width: tuple[int, int]) -> float:
    """Mean vertical gap of (upper, lower) pairs in canonical units of that part's width."""
    gap = np.mean([c[lo, 1] - c[up, 1] for up, lo in pairs])
    return float(gap / max(np.linalg.norm(c[width[0]] - c[width[1]]), 1e-9))


def _no_crossing(ref_c: np.ndarray, members: tuple[int, ...], delta: np.ndarray) -> np.ndarray:
    """`delta` changed so that no lower lid / lower lip point ends above its upper partner (in
    the canonical frame y points down the face) by more than it already does in the reference;
    such a pair meets in the middle. Without this, a closing driver whose anchor was slightly
    open would push a closed reference mouth's lips through each other."""
    row = {m: i for i, m in enumerate(members)}
    pairs = [p for p in LIP_PAIRS + LID_PAIRS["eye_r"] + LID_PAIRS["eye_l"] if p[0] in row and p[1] in row]
    if not pairs:
        return delta
    iu, il = ([p[k] for p in pairs] for k in (0, 1))
    ru, rl = (np.array([row[i] for i in idx]) for idx in (iu, il))
    allowed = np.minimum(ref_c[il, 1] - ref_c[iu, 1], 0.0)
    gap = (ref_c[il, 1] + delta[rl, 1]) - (ref_c[iu, 1] + delta[ru, 1])
    short = allowed - gap  # > 0 where the pair crosses more than allowed
    if not (short > 0).any():
        return delta
    delta = delta.copy()
    fix = np.where(short > 0, short / 2, 0.0)
    delta[ru, 1] -= fix
    delta[rl, 1] += fix
    return delta


def transfer_expression(ref_c: np.ndarray, drv_c: np.ndarray,
                        components: tuple[Component, ...] = COMPONENTS) -> np.ndarray:
    """Canonical-frame (478, 3) reference shape with the driver's components moved in."""
    return _moved(ref_c, *_deltas(ref_c, drv_c, components))


def transfer_expression_relative(ref_c: np.ndarray, drv_c: np.ndarray, anchor_c: np.ndarray,
                                 components: tuple[Component, ...] = COMPONENTS) -> np.ndarray:
    """Canonical-frame (478, 3) reference shape moved by the driver's change from its anchor
    (place(t) − place(anchor), per component in the reference's units). anchor → ref_c exactly."""
    members, d_t = _deltas(ref_c, drv_c, components)
    _, d_a = _deltas(ref_c, anchor_c, components)
    return _moved(ref_c, members, d_t - d_a)


def retarget(ref: np.ndarray, drv: np.ndarray, *,
             components: tuple[Component, ...] = COMPONENTS) -> np.ndarray:
    """Absolute motion: the reference's landmarks with the driver's head rotation and expression.

    ref: (478, 3) reference landmarks (e.g. in its crop); drv: (478, 3) driver landmarks in any
    frame. Returns (478, 3) float64 in the reference's frame: the reference's position and scale,
    the driver's rotation, the reference's face shape with the driver's eyes/brows/mouth.
    """
    return Retargeter(ref, mode="absolute", components=components)(drv)


def retarget_relative(ref: np.ndarray, drv: np.ndarray, anchor: np.ndarray, *,
                      components: tuple[Component, ...] = COMPONENTS) -> np.ndarray:
    """Relative motion: the reference moved as the driver moved from its `anchor` frame.

    All (478, 3); returns float64 in the reference's frame. `retarget_relative(ref, a, a) == ref`.
    """
    return Retargeter(ref, mode="relative", anchor=anchor, components=components)(drv)


def relative_pose(ref: g.Similarity, drv: g.Similarity, anchor: g.Similarity) -> g.Similarity:
    """Head placement of the reference after the driver's move from `anchor` to `drv`:
    R = R_drv·R_anchorᵀ·R_ref; scale and image-plane shift change as the driver's did relative
    to its anchor, scaled by the face-size ratio (eased off towards MAX_SHIFT, clamped to
    SCALE_RANGE)."""
    rot = drv.rotation @ anchor.rotation.T @ ref.rotation
    ratio = float(np.clip(drv.scale / anchor.scale, *SCALE_RANGE))
    shift = (drv.translation - anchor.translation) * (ref.scale / anchor.scale)
    shift[2] = 0.0  # mediapipe's z is relative depth, not a position
    norm = float(np.linalg.norm(shift)) / ref.scale
    knee = MAX_SHIFT / 2
    if norm > knee:  # ease off smoothly (continuous slope) towards MAX_SHIFT
        shift *= (knee + knee * np.tanh((norm - knee) / knee)) / norm
    return g.Similarity(scale=ref.scale * ratio, rotation=rot, translation=ref.translation + shift)


QUARTER_TURN_ABOVE = 60.0  # degrees of reference roll past which absolute motion turns its frame


def quarter_turns(fit: g.Similarity) -> int:
    """How many quarter turns clockwise (−1, 0, 1 or 2) a head is rolled from upright, counting
    only a roll past QUARTER_TURN_ABOVE degrees (a photo on its side, not a tilted head)."""
    roll = g.rotation_to_pose(fit.rotation).roll
    return 0 if abs(roll) <= QUARTER_TURN_ABOVE else (round(roll / 90.0) + 1) % 4 - 1


def quarter_turn(fit: g.Similarity) -> np.ndarray | None:
    """The in-plane rotation (3×3) of `quarter_turns` for a reference head, or None for none.
    Absolute motion applies the driver's head rotation after it: a photo on its side (no EXIF
    orientation) or a person lying down keeps that, instead of having the head turned upright on
    its neck to match an upright driver."""
    turns = quarter_turns(fit)
    return g.pose_to_rotation(g.HeadPose(yaw=0.0, pitch=0.0, roll=90.0 * turns)) if turns else None


class Retargeter:
    """Target landmarks for driver frames, for one reference (its fit computed once).

    mode: "absolute" or "relative" (then `anchor`, the driver's (478, 3) anchor landmarks, is
    required); transfer: "all" | "expression" (keep the reference's pose and position) | "pose"
    (keep the reference's expression); components: what moves (`components_for(regions)`).
    Calling it with (478, 3) driver landmarks returns (478, 3) float64 in the reference's frame.
    """

    def __init__(self, ref: np.ndarray, *, mode: str = "absolute", anchor: np.ndarray | None = None,
                 transfer: str = "all", components: tuple[Component, ...] = COMPONENTS) -> None:
        if mode not in ("absolute", "relative") or transfer not in ("all", "expression", "pose"):
            raise ValueError(f"bad mode/transfer {mode!r}/{transfer!r}")
        if mode == "relative" and anchor is None:
            raise ValueError("relative motion needs the driver's anchor landmarks")
        self.mode, self.transfer, self.components = mode, transfer, components
        # Parts not selected are pinned: they stay the reference's exactly.
        self.pinned = tuple(c for c in COMPONENTS if c not in components)
        self.fit_ref = g.fit_head(ref)
        self.ref_c = self.fit_ref.inverse_apply(np.asarray(ref, np.float64))
        self._turn = quarter_turn(self.fit_ref) if mode == "absolute" else None
        if mode == "relative":
            self.fit_anchor = g.fit_head(anchor)
            anchor_c = self.fit_anchor.inverse_apply(np.asarray(anchor, np.float64))
            self._anchor_delta = _deltas(self.ref_c, anchor_c, components, self.pinned)[1]
            self._lid_gain = _lid_gains(self.ref_c, anchor_c, components)

    def __call__(self, drv: np.ndarray) -> np.ndarray:
        fit_d = g.fit_head(drv)
        return self._pose(fit_d).apply(self._shape(fit_d, drv))

    def _shape(self, fit_d: g.Similarity, drv: np.ndarray) -> np.ndarray:
        if self.transfer == "pose":
            return np.array(self.ref_c)
        members, delta = _deltas(self.ref_c, fit_d.inverse_apply(np.asarray(drv, np.float64)),
                                 self.components, self.pinned)
        if self.mode == "relative":
            delta = delta - self._anchor_delta
            for rows, gain in self._lid_rows(members):
                delta[rows] *= gain
        return _moved(self.ref_c, members, _no_crossing(self.ref_c, members, delta))

    def _lid_rows(self, members: tuple[int, ...]) -> list[tuple[list[int], float]]:
        """Rows of each eye's lid points in `members`, with that eye's lid gain."""
        row = {m: i for i, m in enumerate(members)}
        return [([row[i] for pair in LID_PAIRS[name] for i in pair if i in row], gain)
                for name, gain in self._lid_gain.items()]

    def _pose(self, fit_d: g.Similarity) -> g.Similarity:
        r = self.fit_ref
        if self.transfer == "expression":
            return r
        if self.mode == "absolute":
            rotation = fit_d.rotation if self._turn is None else self._turn @ fit_d.rotation
            return g.Similarity(scale=r.scale, rotation=rotation, translation=r.translation)
        return relative_pose(r, fit_d, self.fit_anchor)


class SourceRetargeter:
    """Target landmarks for a *video* source (video-to-video): every source frame is its own
    reference, so it keeps its head pose (and position), and the driver's change from its anchor
    frame moves the selected parts.

    `rest`: (478, 3) landmarks of the source's rest frame (its typical expression); `anchor`: the
    driver's anchor landmarks (the driver frame nearest the rest frame). `source_expression`:
    "replace" — the moved parts show the driver's change on the source's *rest* face, so the
    source's own movement of those parts (its own speech, its blinks) is replaced: a dubbed mouth
    says only the new words; "keep" — the change is added on top of each source frame's own
    expression (the source's own motion of those parts stays and the driver's adds to it). Parts
    not selected (`components`) always keep the source frame's own shape. `transfer`: "expression"
    (the source's head pose), "all" (the driver's head rotation, shift and scale change from its
    anchor added to the source frame's pose), "pose" (only that; the source's own expression).
    Calling it with (source (478, 3), driver (478, 3)) returns (478, 3) float64 in the source
    frame's pixels."""

    def __init__(self, rest: np.ndarray, anchor: np.ndarray, *, transfer: str = "expression",
                 components: tuple[Component, ...] = COMPONENTS, source_expression: str = "replace") -> None:
        if source_expression not in SOURCE_EXPRESSIONS:
            raise ValueError(f"bad source_expression {source_expression!r}")
        self.transfer, self.components, self.source_expression = transfer, components, source_expression
        self.anchor = np.asarray(anchor, np.float64)
        # The rest face moved as the driver moved (shape only; the pose comes from each frame).
        self.rest = Retargeter(rest, mode="relative", anchor=anchor, transfer="expression", components=components)
        self.fit_anchor = self.rest.fit_anchor
        members, _ = _deltas(self.rest.ref_c, self.rest.ref_c, components, self.rest.pinned)
        moved = {i for c in components for i in c.members} | (set(_CHIN) if CHIN_FOLLOWS in members else set())
        self._members = members
        self._moved_rows = np.array([m in moved for m in members])  # pinned rows stay the frame's own

    def __call__(self, source: np.ndarray, drv: np.ndarray) -> np.ndarray:
        src = np.asarray(source, np.float64)
        fit_s, fit_d = g.fit_head(src), g.fit_head(drv)
        if self.transfer == "pose":
            shape = fit_s.inverse_apply(src)
        elif self.source_expression == "keep":
            frame = Retargeter(src, mode="relative", anchor=self.anchor, transfer="expression",
                               components=self.components)
            shape = frame._shape(fit_d, drv)
        else:
            shape = self._replaced(src, fit_s, fit_d, drv)
        return self._posed(fit_s, fit_d, shape)

    def _replaced(self, src: np.ndarray, fit_s: g.Similarity, fit_d: g.Similarity, drv: np.ndarray) -> np.ndarray:
        """`replace`'s canonical shape: the frame's own, with the moved parts of the rest face moved."""
        src_c = fit_s.inverse_apply(src)
        moved = self.rest._shape(fit_d, drv)
        delta = (moved[list(self._members)] - src_c[list(self._members)]) * self._moved_rows[:, None]
        return _moved(src_c, self._members, delta)

    def from_rest(self, source: np.ndarray, drv: np.ndarray) -> np.ndarray:
        """The target for rendering this frame's lower face from a *resting* frame of the source
        (`v2v`'s resting bank; `replace` only). Below the nose (`speech_weights`): the rest face
        with the moved parts moved by the driver, every landmark — so nothing of this frame's own
        speech remains, neither in its lips nor in its cheeks and jaw, which move as it talks —
        plus this frame's own change from the rest face in the parts not selected (e.g. its
        blinks under `--regions mouth`); from the nose tip up, `__call__`'s target; blended
        between. Head pose as `__call__`."""
        src = np.asarray(source, np.float64)
        fit_s, fit_d = g.fit_head(src), g.fit_head(drv)
        shape = self.rest._shape(fit_d, drv)
        own = tuple(i for c in COMPONENTS if c not in self.components for i in c.members)
        if own:
            shape = _moved(shape, own, fit_s.inverse_apply(src)[list(own)] - self.rest.ref_c[list(own)])
        w = speech_weights()[:, None]
        return self._posed(fit_s, fit_d, w * shape + (1 - w) * self._replaced(src, fit_s, fit_d, drv))

    def _posed(self, fit_s: g.Similarity, fit_d: g.Similarity, shape: np.ndarray) -> np.ndarray:
        pose = fit_s if self.transfer == "expression" else relative_pose(fit_s, fit_d, self.fit_anchor)
        return pose.apply(shape)


@functools.lru_cache(maxsize=1)
def speech_weights() -> np.ndarray:
    """(478,) how much each landmark is part of the lower face that moves as one speaks: 0 from
    the nose tip up, 1 from the upper lip's midpoint down, linear between (canonical height)."""
    y = g.canonical().points[:, 1]
    return np.clip((y - y[1]) / max(y[0] - y[1], 1e-9), 0.0, 1.0)


# ───────────────────────────── anchor choice ─────────────────────────────

def motion_key(points: np.ndarray, pose_weight: float = 1.0) -> np.ndarray:
    """(9,) vector whose Euclidean distances rank anchor candidates: head pose (yaw, pitch, roll
    in degrees, × `pose_weight`) and EXPRESSION_WEIGHT × `expression.expression_descriptor`. Two
    frames 10 units apart differ like a 10° head turn, or a mouth opening of 0.1 eye-corner
    distances."""
    return np.concatenate([pose_weight * g.head_pose(points).as_array(),
                           EXPRESSION_WEIGHT * expression_descriptor(points)])


def choose_anchor(ref: np.ndarray, candidates: Iterable[tuple[int, np.ndarray]], *,
                  pose_weight: float = 1.0) -> tuple[int, float]:
    """(index, distance) of the candidate (index, (478, 3) landmarks) nearest the reference in
    `motion_key`; streams the candidates (constant memory). ValueError when there is none.
    `pose_weight` < 1 when the head pose is not transferred (a video source keeps its own): then
    the expression, whose offset from the anchor is what moves, matters most."""
    key = motion_key(ref, pose_weight)
    best, best_d = -1, np.inf
    for i, pts in candidates:
        d = float(np.linalg.norm(motion_key(pts, pose_weight) - key))
        if d < best_d:
            best, best_d = i, d
    if best < 0:
        raise ValueError("no anchor candidates")
    return best, best_d
