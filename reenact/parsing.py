"""Shape encoder E (fixed, not learned): 478 landmarks → multi-channel face-parsing map.

The map is rendered from the mesh's component polygons at any size, anti-aliased, values in
[0, 1]. Region channels are exclusive labels (they sum to at most 1 per pixel): components are
composited in depth order, so that at large yaw the near side (e.g. the nose) hides the far eye,
and the skin is what the face oval leaves over. `contour` is a line channel on top.

Channels (`CHANNELS`): skin, contour, brow_r, brow_l, eye_r, eye_l, iris_r, iris_l, nose,
upper_lip, lower_lip, mouth (interior/teeth). "_r"/"_l" are the subject's right/left.
"""

from __future__ import annotations

import cv2
import numpy as np

from reenact import geometry as g

CHANNELS = ("skin", "contour", "brow_r", "brow_l", "eye_r", "eye_l", "iris_r", "iris_l",
            "nose", "upper_lip", "lower_lip", "mouth")
N_CHANNELS = len(CHANNELS)
INDEX = {name: i for i, name in enumerate(CHANNELS)}

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT

# Colours for the debug visualisation (RGB).
PALETTE = np.array([
    (230, 190, 160), (255, 255, 255), (120, 70, 30), (150, 90, 40), (240, 240, 255), (220, 220, 250),
    (40, 120, 220), (30, 160, 200), (250, 150, 60), (220, 40, 70), (180, 30, 120), (60, 0, 20),
], dtype=np.float32)


def _fixed(pts: np.ndarray, ss: int) -> np.ndarray:
    return np.round((pts * ss + (ss - 1) / 2) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _supersample(size: int) -> int:
    """Supersampling factor: polygons are filled without anti-aliasing at size·ss and box-filtered
    down, which gives exact area coverage (cv2's LINE_AA fill inflates small shapes)."""
    return max(1, min(4, 512 // size))


def _down(canvas: np.ndarray, size: int) -> np.ndarray:
    small = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA) if canvas.shape[0] != size else canvas
    return small.astype(np.float32) / 255.0


def _fill(size: int, polys: list[np.ndarray]) -> np.ndarray:
    ss = _supersample(size)
    canvas = np.zeros((size * ss, size * ss), np.uint8)
    cv2.fillPoly(canvas, [_fixed(p, ss) for p in polys], 255, lineType=cv2.LINE_8, shift=_SHIFT)
    return _down(canvas, size)


def _iris(xy: np.ndarray, idx: tuple[int, ...], size: int) -> np.ndarray:
    ss = _supersample(size)
    centre = xy[idx[0]]
    radius = float(np.linalg.norm(xy[list(idx[1:])] - centre, axis=1).mean())
    canvas = np.zeros((size * ss, size * ss), np.uint8)
    c = _fixed(centre[None], ss)[0, 0]
    cv2.circle(canvas, (int(c[0]), int(c[1])), max(1, round(radius * ss * _ONE)), 255,
               thickness=-1, lineType=cv2.LINE_8, shift=_SHIFT)
    return _down(canvas, size)


def _region_masks(xy: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Each component's own (overlapping) mask, before exclusive compositing."""
    poly = lambda idx: xy[list(idx)]  # noqa: E731
    nose_hull = cv2.convexHull(poly(g.NOSE).astype(np.float32))[:, 0, :]
    eye_r, eye_l = _fill(size, [poly(g.RIGHT_EYE)]), _fill(size, [poly(g.LEFT_EYE)])
    return {
        "skin": _fill(size, [poly(g.FACE_OVAL)]),
        "brow_r": _fill(size, [poly(g.RIGHT_BROW)]),
        "brow_l": _fill(size, [poly(g.LEFT_BROW)]),
        "eye_r": eye_r,
        "eye_l": eye_l,
        "iris_r": _iris(xy, g.RIGHT_IRIS, size) * eye_r,  # only the part the lids leave visible
        "iris_l": _iris(xy, g.LEFT_IRIS, size) * eye_l,
        "nose": _fill(size, [nose_hull]),
        "upper_lip": _fill(size, [poly(g.UPPER_LIP)]),
        "lower_lip": _fill(size, [poly(g.LOWER_LIP)]),
        "mouth": _fill(size, [poly(g.LIPS_INNER)]),
    }


# Components drawn in this nesting; each group is ordered by depth at run time.
_GROUPS = (("brow_r", "brow_l", "nose", "eye_r", "eye_l", "upper_lip", "lower_lip", "mouth"),)
_DEPTH_IDX = {"brow_r": g.RIGHT_BROW, "brow_l": g.LEFT_BROW, "nose": g.NOSE, "eye_r": g.RIGHT_EYE,
              "eye_l": g.LEFT_EYE, "upper_lip": g.UPPER_LIP, "lower_lip": g.LOWER_LIP,
              "mouth": g.LIPS_INNER}


def parsing_map(points: np.ndarray, size: int) -> np.ndarray:
    """Render the parsing map of one face.

    points: (478, 2) or (478, 3) landmarks in the pixel frame of the size×size output (z, when
        given, decides which component hides which).
    Returns float32 (N_CHANNELS, size, size) in [0, 1]; region channels sum to ≤ 1 per pixel.
    """
    pts = np.asarray(points, np.float64)
    if pts.shape[0] != g.N_LANDMARKS:
        raise ValueError(f"expected {g.N_LANDMARKS} landmarks, got {pts.shape}")
    xy = pts[:, :2]
    masks = _region_masks(xy, size)
    depth = {k: float(pts[list(v), 2].mean()) if pts.shape[1] == 3 else 0.0
             for k, v in _DEPTH_IDX.items()}
    # Lips and mouth interior are coplanar: keep their anatomical order regardless of depth.
    order = sorted(_GROUPS[0], key=lambda k: -depth[k] if k not in ("upper_lip", "lower_lip", "mouth")
                   else -depth["mouth"])
    out = np.zeros((N_CHANNELS, size, size), np.float32)
    covered = np.zeros((size, size), np.float32)
    # Near-to-far: each component keeps only what nearer components left uncovered.
    for name in reversed(order):
        m = masks[name] * (1.0 - covered)
        out[INDEX[name]] = m
        covered += m
    for iris, eye in (("iris_r", "eye_r"), ("iris_l", "eye_l")):
        out[INDEX[iris]] = np.minimum(masks[iris], out[INDEX[eye]])
        out[INDEX[eye]] -= out[INDEX[iris]]
    out[INDEX["skin"]] = np.clip(masks["skin"] - covered, 0.0, 1.0)
    out[INDEX["contour"]] = _contour(xy, size)
    return out


def _contour(xy: np.ndarray, size: int) -> np.ndarray:
    ss = _supersample(size)
    canvas = np.zeros((size * ss, size * ss), np.uint8)
    thickness = max(1, round(size / 128)) * ss
    cv2.polylines(canvas, [_fixed(xy[list(g.FACE_OVAL)], ss)], True, 255, thickness=thickness,
                  lineType=cv2.LINE_8, shift=_SHIFT)
    return _down(canvas, size)


def face_mask(parsing: np.ndarray) -> np.ndarray:
    """Union of the region channels (the face inside its oval): float32 (size, size) in [0, 1]."""
    regions = [i for name, i in INDEX.items() if name != "contour"]
    return np.clip(parsing[regions].sum(0), 0.0, 1.0)


def colorize(parsing: np.ndarray) -> np.ndarray:
    """RGB uint8 (size, size, 3) visualisation of a parsing map (contour drawn on top)."""
    regions = [i for name, i in INDEX.items() if name != "contour"]
    rgb = np.einsum("chw,cd->hwd", parsing[regions], PALETTE[regions])
    c = parsing[INDEX["contour"]][..., None]
    rgb = rgb * (1 - c) + PALETTE[INDEX["contour"]] * c
    return np.clip(rgb, 0, 255).astype(np.uint8)
