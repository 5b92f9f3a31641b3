"""Face regions that the learned half of FusionNet redraws: the mouth and the eyes.

The classical warp cannot show what the reference does not: teeth and the inside of a mouth that
opens, the eyeball under a lid that opens, the lid over an eye that closes. Small region
generators (`reenact.model.region`) redraw just those parts, on a square *region crop* of the
engine's face crop:

* mouth: centred on the outer lip contour, side `MOUTH_SIDE` × the face scale (outer-eye-corner
  distance of the head fit), one crop per face;
* eyes: one crop per eye, centred on the eye contour, side `EYE_SIDE` × the face scale; the
  subject's left eye is mirrored so that it looks like a right eye (one network draws both).

Region crops are axis-aligned in the face crop (the face crop has already removed the head's
roll). This module holds their geometry (`RegionBox`: extract, landmarks in, paste back), the
blend masks (where a region's output replaces the warp), and the landmark edits that make
training pairs (`close_mouth`, `close_eyes`: the round trip of `reenact.train.regions`).
No torch, no ONNX here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from reenact import align, motion, parsing
from reenact import geometry as g

REGIONS = ("mouth", "eyes")
MOUTH_SIDE = 1.0  # mouth crop side in face scales (outer-eye-corner distances)
EYE_SIDE = 0.6  # eye crop side in face scales
SPREAD_SIGMA = 0.06  # canonical units: how far a lip/lid edit spreads to neighbouring points

# (upper, lower) pairs of an opening, in order along it (as `reenact.motion` uses them).
LIP_PAIRS = ((191, 95), (80, 88), (81, 178), (82, 87), (13, 14), (312, 317), (311, 402), (310, 318), (415, 324))
LID_PAIRS = {"right": ((246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155)),
             "left": ((466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381), (398, 382))}
EYE_POINTS = {"right": g.RIGHT_EYE + g.RIGHT_IRIS, "left": g.LEFT_EYE + g.LEFT_IRIS}
EYE_WIDTH = {"right": (33, 133), "left": (263, 362)}


@dataclass(frozen=True)
class RegionBox:
    """A square region of a face crop. `centre` (x, y) and `side` in face-crop pixels; `size`:
    the region model's resolution; `mirrored`: the region crop is flipped left-right."""

    centre: tuple[float, float]
    side: float
    size: int
    mirrored: bool = False
    # 2×3 (row-major) map from the pixels of the image that `extract` and `paste` work on to
    # face-crop pixels; None: that image is the face crop (see `on`).
    canvas: tuple[float, ...] | None = None

    def on(self, canvas: np.ndarray | None) -> RegionBox:
        """The same box, extracted from and pasted into an image whose pixels map to face-crop
        pixels by `canvas` (2×3: the direct render's patch of the photo); None: the face crop."""
        return self if canvas is None else replace(self, canvas=tuple(np.asarray(canvas, np.float64).ravel()))

    def _place(self) -> tuple[np.ndarray, tuple[float, float], float, float]:
        """(image pixels → region pixels 2×3, the box centre and side in image pixels, how much
        wider than its side the rotated box's bounding rectangle is)."""
        if self.canvas is None:
            return self.matrix, self.centre, self.side, 1.0
        canvas = np.array(self.canvas).reshape(2, 3)
        inv = cv2.invertAffineTransform(canvas)  # face crop → image
        centre = inv[:, :2] @ np.array(self.centre) + inv[:, 2]
        scale = float(np.sqrt(abs(np.linalg.det(inv[:, :2]))))
        spread = float(np.abs(inv[0, :2]).sum()) / scale  # |cos| + |sin| of the rotation
        return align.compose(self.matrix, canvas), (float(centre[0]), float(centre[1])), self.side * scale, spread

    @property
    def matrix(self) -> np.ndarray:
        """2×3 float64, face-crop pixels → region pixels (pixel centres map to pixel centres)."""
        s = self.size / self.side
        cx, cy = self.centre
        half = (self.size - 1) / 2
        m = np.array([[s, 0.0, half - s * cx], [0.0, s, half - s * cy]])
        if self.mirrored:
            m[0] = [-s, 0.0, half + s * cx]
        return m

    def points(self, points: np.ndarray) -> np.ndarray:
        """(478, 2|3) face-crop landmarks → region landmarks (re-indexed when mirrored, so each
        index keeps its anatomical meaning: a mirrored left eye carries right-eye indices)."""
        m = self.matrix
        out = np.asarray(points, np.float64).copy()
        out[:, :2] = out[:, :2] @ m[:, :2].T + m[:, 2]
        if out.shape[1] == 3:
            out[:, 2] *= self.size / self.side
        return out[g.canonical().mirror] if self.mirrored else out

    def extract(self, image: np.ndarray) -> np.ndarray:
        """The region crop (size×size×C, same dtype) of a face-crop image (or of the image `on`
        names); outside → edge pixels."""
        m, centre, side, spread = self._place()
        if side > 2 * self.size:  # warpAffine has no area filter: blur before shrinking a lot
            sigma = 0.5 * side / self.size
            # Only the box and the blur's reach around it: the same pixels as blurring the whole
            # image, provided that, where the window meets an image edge, it holds the pixels the
            # blur reflects there (`reach` deep).
            reach = int(np.ceil(4 * sigma)) + 1
            h, w = image.shape[:2]
            x0, y0, x1, y1 = _bounds(image.shape, centre, side / 2 * spread + 2 + reach)
            x0, x1 = max(0, min(x0, w - reach)), min(w, max(x1, reach))
            y0, y1 = max(0, min(y0, h - reach)), min(h, max(y1, reach))
            image = cv2.GaussianBlur(image[y0:y1, x0:x1], (0, 0), sigma)
            m = m.copy()
            m[:, 2] += m[:, :2] @ (x0, y0)  # window pixels → region pixels
        return cv2.warpAffine(image, m, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    def paste(self, base: np.ndarray, patch: np.ndarray, mask: np.ndarray, *,
              under: np.ndarray | None = None, in_place: bool = False) -> np.ndarray:
        """`base` (face crop, or the image `on` names; H×W×3 uint8) with `patch` (size×size×3
        uint8) blended in by `mask` (size×size float32 in [0, 1]); only the box's bounding
        rectangle is touched. With `under` (the region crop the patch was drawn over,
        `extract(base)`), only the patch's change from it is added: the base keeps its detail
        finer than the region's resolution. A copy of `base`, or `base` itself drawn into with
        `in_place` (a render the caller owns: no copy of a large image per region)."""
        m, centre, side, spread = self._place()
        inv = cv2.invertAffineTransform(m)
        x0, y0, x1, y1 = _support_bounds(base.shape, _bounds(base.shape, centre, side / 2 * spread + 2), mask, inv)
        if x1 <= x0 or y1 <= y0:
            return base
        inv[:, 2] -= (x0, y0)  # region → rectangle pixels
        size = (x1 - x0, y1 - y0)
        alpha = cv2.warpAffine(mask.astype(np.float32), inv, size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)[..., None]
        out = base if in_place else base.copy()
        rect = out[y0:y1, x0:x1].astype(np.float32)
        if under is None:
            up = cv2.warpAffine(patch, inv, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            rect = rect * (1 - alpha) + up * alpha
        else:
            change = patch.astype(np.float32) - under.astype(np.float32)
            rect += cv2.warpAffine(change, inv, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) * alpha
        out[y0:y1, x0:x1] = np.clip(rect + 0.5, 0, 255).astype(np.uint8)
        return out


def _bounds(shape: tuple[int, ...], centre: tuple[float, float], half: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the pixels within `half` of `centre`, clipped to `shape`."""
    h, w = shape[:2]
    x0, y0 = max(0, int(np.floor(centre[0] - half))), max(0, int(np.floor(centre[1] - half)))
    x1, y1 = min(w, int(np.ceil(centre[0] + half)) + 1), min(h, int(np.ceil(centre[1] + half)) + 1)
    return x0, y0, x1, y1


def _support_bounds(shape: tuple[int, ...], box: tuple[int, int, int, int], mask: np.ndarray,
                    to_image: np.ndarray) -> tuple[int, int, int, int]:
    """`box` (x0, y0, x1, y1, image pixels) cut to the pixels a paste of `mask` (region pixels,
    `to_image` 2×3 region → image) can change: where its bilinear resampling is not 0, i.e.
    within one region pixel of a pixel > 0 (an empty box when there is none). A mouth opening
    fills a few per cent of its box: at native resolution that is most of the paste's cost."""
    x, y, w, h = cv2.boundingRect((mask > 0).astype(np.uint8))
    if not w:
        return 0, 0, 0, 0
    corners = np.array([[x - 1, y - 1], [x + w, y - 1], [x - 1, y + h], [x + w, y + h]], np.float64)
    reach = corners @ to_image[:, :2].T + to_image[:, 2]
    (a0, b0), (a1, b1) = np.floor(reach.min(0)).astype(int) - 1, np.ceil(reach.max(0)).astype(int) + 2
    x0, y0, x1, y1 = box
    return max(x0, a0, 0), max(y0, b0, 0), min(x1, a1, shape[1]), min(y1, b1, shape[0])


def mouth_box(points: np.ndarray, size: int, scale: float | None = None) -> RegionBox:
    """The mouth crop of (478, 3) face-crop landmarks. `scale`: the face scale when known."""
    scale = g.face_scale(points) if scale is None else scale
    c = np.asarray(points, np.float64)[list(g.LIPS_OUTER), :2].mean(0)
    return RegionBox((float(c[0]), float(c[1])), MOUTH_SIDE * scale, size)


def eye_boxes(points: np.ndarray, size: int, scale: float | None = None) -> dict[str, RegionBox]:
    """The two eye crops ("right" as is, "left" mirrored) of (478, 3) face-crop landmarks."""
    scale = g.face_scale(points) if scale is None else scale
    pts = np.asarray(points, np.float64)
    boxes = {}
    for side, idx in (("right", g.RIGHT_EYE), ("left", g.LEFT_EYE)):
        c = pts[list(idx), :2].mean(0)
        boxes[side] = RegionBox((float(c[0]), float(c[1])), EYE_SIDE * scale, size, mirrored=side == "left")
    return boxes


def boxes(region: str, points: np.ndarray, size: int, scale: float | None = None) -> list[RegionBox]:
    """Every crop of `region` ("mouth": one, "eyes": right then left) for face-crop landmarks."""
    if region == "mouth":
        return [mouth_box(points, size, scale)]
    if region == "eyes":
        return list(eye_boxes(points, size, scale).values())
    raise ValueError(f"region must be one of {REGIONS}, got {region!r}")


# ---------------------------------------------------------------- openings and blend masks

def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def mouth_opening(points: np.ndarray, scale: float | None = None) -> float:
    """Area of the inner lip contour in face scales² (0 = closed; a wide-open mouth ≈ 0.1)."""
    scale = g.face_scale(points) if scale is None else scale
    return _area(np.asarray(points, np.float64)[list(g.LIPS_INNER), :2]) / max(scale, 1e-9) ** 2


def eye_opening(points: np.ndarray, side: str) -> float:
    """Mean lid gap of one eye ("right"/"left") in units of that eye's width (open ≈ 0.3)."""
    pts = np.asarray(points, np.float64)
    gap = np.mean([pts[lo, 1] - pts[up, 1] for up, lo in LID_PAIRS[side]])
    a, b = EYE_WIDTH[side]
    return float(max(gap, 0.0) / max(np.linalg.norm(pts[a, :2] - pts[b, :2]), 1e-9))


def fill_polygon(size: int, poly: np.ndarray) -> np.ndarray:
    """A polygon (K, 2+) filled anti-aliased on a size×size float32 canvas in [0, 1]."""
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [np.round(poly[:, :2] * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def _disc(radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def grow(mask: np.ndarray, radius: float, feather: float) -> np.ndarray:
    """A [0, 1] mask dilated by a disc of `radius` pixels and feathered (`feather`: sigma, px)."""
    return align.feathered_mask(cv2.dilate(mask, _disc(radius)), feather=feather)


def shrink(mask: np.ndarray, radius: float, feather: float) -> np.ndarray:
    """A [0, 1] mask eroded by a disc of `radius` pixels and feathered (`feather`: sigma, px)."""
    return align.feathered_mask(cv2.erode(mask, _disc(radius)), feather=feather)


MOUTH_RIM = 2 / 64  # region-crop sides: the rim of the opening that the mouth blend leaves to the warp
MOUTH_RIM_FEATHER = 1.6 / 64


def mouth_mask(region_points: np.ndarray, size: int) -> np.ndarray:
    """Where the mouth generator (or the driver's mouth) replaces the warp (size×size float32):
    the target's inner mouth opening less its rim (MOUTH_RIM), feathered. The warp puts the
    inner lip edge exactly where the target asks and shades the cavity behind it; the redraw
    fills the inside (teeth, tongue). Blended over the edge instead, the 64² generator's softer,
    thicker lip edge made an opened mouth read as less open than asked (docs/regions.md)."""
    return shrink(_mouth_opening(region_points, size), MOUTH_RIM * size, MOUTH_RIM_FEATHER * size)


def mouth_training_mask(region_points: np.ndarray, size: int) -> np.ndarray:
    """The mouth generator's loss region in training packs (`reenact.train.regions`): the inner
    mouth opening grown a little over the inner lip edge and feathered (the lip edge is
    supervised too, although the blend, `mouth_mask`, leaves it to the warp)."""
    return grow(_mouth_opening(region_points, size), size / 24, size / 40)


def _mouth_opening(region_points: np.ndarray, size: int) -> np.ndarray:
    """The target's inner mouth opening, filled (size×size float32 in [0, 1])."""
    return fill_polygon(size, np.asarray(region_points)[list(g.LIPS_INNER)])


def mouth_area_mask(parsing_map: np.ndarray) -> np.ndarray:
    """Where an area-blend mouth generator replaces the warp (size×size float32): the lips and the
    inner mouth of the target's parsing map ((12, S, S), `reenact.parsing`), grown over the skin
    around them (an eighth of the crop) and feathered; it fades out towards the crop's edges, which
    stay the warp's (no seam where a wide mouth fills the crop)."""
    size = parsing_map.shape[-1]
    lips = np.clip(sum(parsing_map[parsing.INDEX[c]] for c in ("upper_lip", "lower_lip", "mouth")), 0.0, 1.0)
    edge = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32)  # pixels to the nearest edge
    window = np.clip((edge - 1) / (size / 12), 0.0, 1.0)
    return grow(lips.astype(np.float32), size / 8, size / 16) * np.minimum.outer(window, window)


def eye_mask(region_points: np.ndarray, size: int) -> np.ndarray:
    """Where the eye generator may replace the warp in a (right-eye-indexed) eye crop: the eye
    opening grown over the lids, feathered."""
    return grow(fill_polygon(size, np.asarray(region_points)[list(g.RIGHT_EYE)]), size / 10, size / 24)


def eye_strength(ref_points: np.ndarray, target_points: np.ndarray, side: str) -> float:
    """How much one eye needs the generator (0..1): the warp had to stretch the lids open — the
    target's opening exceeds the reference's by more than 15 % (full weight at a factor 2). An
    eye that closes is left to the warp (the generator was trained on opening lids)."""
    ref, tgt = (max(eye_opening(p, side), 0.02) for p in (ref_points, target_points))
    change = np.log(tgt / ref)
    return float(np.clip((change - np.log(1.15)) / (np.log(2.0) - np.log(1.15)), 0.0, 1.0))


# ---------------------------------------------------------------- landmark edits (training pairs)

def _close(points: np.ndarray, pairs: tuple[tuple[int, int], ...], amount: float,
           follow: dict[int, tuple[int, ...]]) -> np.ndarray:
    """Move each (upper, lower) pair towards its midpoint by `amount` of its gap (1 = touching);
    points in `follow[i]` move with point i; the displacement spreads smoothly to neighbours."""
    pts = np.asarray(points, np.float64)
    delta: dict[int, np.ndarray] = {}
    for up, lo in pairs:
        gap = pts[lo] - pts[up]
        delta[up], delta[lo] = gap * amount / 2, -gap * amount / 2
    for lead, members in follow.items():
        for m in members:
            delta.setdefault(m, delta[lead])
    members = tuple(delta)
    return pts + motion.spread_weights(members, SPREAD_SIGMA) @ np.array([delta[m] for m in members])


# Outer lip points that follow an inner point when the lips close (upper lip down, lower lip up).
_LIP_FOLLOW = {13: (0, 37, 267), 14: (17, 84, 314, 181, 405), 82: (39,), 312: (269,), 87: (84,), 317: (314,)}


def close_mouth(points: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """(478, 3) landmarks with the inner lips brought together by `amount` (0..1) of their gap."""
    return _close(points, LIP_PAIRS, amount, _LIP_FOLLOW)


def close_eyes(points: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """(478, 3) landmarks with both eyes' lids brought together by `amount` of their gap; the
    iris follows the upper lid half-way (it slides under it)."""
    pairs = LID_PAIRS["right"] + LID_PAIRS["left"]
    follow = {159: g.RIGHT_IRIS, 386: g.LEFT_IRIS}
    out = _close(points, pairs, amount, {})
    pts = np.asarray(points, np.float64)
    for lead, iris in follow.items():
        out[list(iris)] = pts[list(iris)] + (out[lead] - pts[lead]) * 0.5
    return out

