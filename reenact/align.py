"""Crop geometry: similarity-aligned square face crops and paste-back into the full frame.

A crop is described by a 2×3 matrix `M` (full-frame pixels → crop pixels, a similarity) and its
side. The alignment puts the canonical face, frontal, at a fixed place in the crop: its outer eye
corners `EYE_SPAN` of the side apart, centred horizontally, the eye line at `EYE_Y`. The fit uses
only rigid landmarks, so the crop follows the head (position, scale, roll) but not the expression.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from reenact import geometry as g

EYE_SPAN = 0.32  # outer-eye-corner distance as a fraction of the crop side
CENTRE_Y = 0.50  # where the canonical face's centroid sits (fraction of the side)


@dataclass(frozen=True)
class Crop:
    """A square crop of a frame. `matrix`: 2×3 float64, frame → crop pixels."""

    matrix: np.ndarray
    size: int

    @property
    def inverse(self) -> np.ndarray:
        return cv2.invertAffineTransform(self.matrix)

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def points_to_crop(self, points: np.ndarray) -> np.ndarray:
        """(N, 2|3) frame coordinates → crop coordinates (z scaled with x, y)."""
        return apply_affine(self.matrix, points)

    def points_to_frame(self, points: np.ndarray) -> np.ndarray:
        return apply_affine(self.inverse, points)

    def extract(self, frame: np.ndarray) -> np.ndarray:
        """The crop (size×size×C, same dtype as `frame`); outside the frame → edge pixels."""
        interp = cv2.INTER_AREA if self.scale < 0.5 else cv2.INTER_LINEAR
        if interp == cv2.INTER_AREA:  # warpAffine has no area filter: pre-shrink instead
            return _extract_downscaled(frame, self)
        return cv2.warpAffine(frame, self.matrix, (self.size, self.size), flags=interp,
                              borderMode=cv2.BORDER_REPLICATE)


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2|3) points through the 2×3 affine `m` (float64; z scaled with x, y)."""
    pts = np.asarray(points, np.float64)
    out = pts.copy()
    out[:, :2] = pts[:, :2] @ m[:, :2].T + m[:, 2]
    if pts.shape[1] == 3:
        out[:, 2] = pts[:, 2] * float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    return out


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2×3 affine of `outer` after `inner` (both 2×3)."""
    return np.hstack([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]])


def translated(m: np.ndarray, x: float, y: float) -> np.ndarray:
    """2×3 affine `m` applied to points given relative to (x, y): p ↦ m(p + (x, y))."""
    return compose(m, np.array([[1.0, 0.0, x], [0.0, 1.0, y]]))


def _extract_downscaled(frame: np.ndarray, crop: Crop) -> np.ndarray:
    factor = crop.scale * 2.0  # shrink to twice the crop's resolution first
    small = cv2.resize(frame, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    m = crop.matrix.copy()
    m[:, :2] /= factor
    return cv2.warpAffine(small, m, (crop.size, crop.size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def template(size: int) -> np.ndarray:
    """Canonical face (478, 3) placed in a size×size crop (frontal)."""
    canon = g.canonical().points
    return canon * (EYE_SPAN * size) + np.array([size / 2, CENTRE_Y * size, 0.0])


def align(points: np.ndarray, size: int = 256) -> Crop:
    """The aligned crop for a face with (478, 2|3) frame landmarks.

    Similarity fitted on the rigid landmarks in the image plane (2-D), so yaw shrinks the crop's
    scale only slightly and roll is removed.
    """
    idx = list(g.RIGID)
    fit = g.fit_similarity(np.asarray(points, np.float64)[idx, :2], template(size)[idx, :2])
    m = np.hstack([fit.scale * fit.rotation[:2, :2], fit.translation[:2, None]])
    return Crop(matrix=m, size=size)


def feathered_mask(mask: np.ndarray, *, feather: float) -> np.ndarray:
    """Blur a [0, 1] mask with a Gaussian of sigma `feather` pixels, keeping it within [0, 1].

    Wide blurs run on a copy shrunk by up to 8× (sigma ≥ 3 px there) and are scaled back: the
    result is smooth at that scale anyway, and a 100-pixel kernel at full size costs ~20× more."""
    m = np.asarray(mask, np.float32)  # read only: every step below makes a new array
    if feather <= 0:
        return m.copy()
    f = int(np.clip(feather // 3, 1, 8))
    h, w = m.shape
    small = cv2.resize(m, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA) if f > 1 else m
    sigma = feather / f
    k = int(2 * round(3 * sigma) + 1)
    blurred = cv2.GaussianBlur(small, (k, k), sigma)
    if f > 1:
        blurred = cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(blurred, 0.0, 1.0, out=blurred)


@functools.lru_cache(maxsize=8)
def edge_falloff(size: int, margin: float) -> np.ndarray:
    """(size, size) float32: 1 inside, smoothly 0 at the crop border over `margin` pixels.
    Cached per (size, margin): the array is shared and read-only."""
    r = np.arange(size, dtype=np.float32)
    d = np.minimum(r, size - 1 - r) / max(margin, 1e-6)
    ramp = np.clip(d, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    out = np.outer(ramp, ramp)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class Patch:
    """A rendered rectangle of a frame: `rgb` (h×w×3 uint8) and its blend weight `alpha` (h×w
    float32 in [0, 1], 1 = take the patch), placed with its top-left pixel at (x, y)."""

    rgb: np.ndarray
    alpha: np.ndarray
    x: int
    y: int

    BAND = 32  # rows per band of `onto`

    def onto(self, frame: np.ndarray) -> np.ndarray:
        """A copy of `frame` (H×W×3 uint8) with the patch blended in; pixels where alpha is 0 are
        returned bit-identical, pixels where it is 1 are the patch's."""
        h, w = self.alpha.shape
        if not h or not w:
            return frame.copy()
        x, y = self.x, self.y
        out = np.empty_like(frame)  # the frame around the patch, then the patch's rectangle
        out[:y], out[y + h:] = frame[:y], frame[y + h:]
        out[y:y + h, :x], out[y:y + h, x + w:] = frame[y:y + h, :x], frame[y:y + h, x + w:]
        box, under = out[y:y + h, x:x + w], frame[y:y + h, x:x + w]
        solid = self.alpha >= 1.0
        for r0 in range(0, h, self.BAND):
            r1 = min(h, r0 + self.BAND)
            # In each band of rows, the columns where the patch is opaque in every row are copied
            # (a run in the middle: the head); only the rest is blended.
            inside = solid[r0:r1].all(0)
            a = int(inside.argmax()) if inside.any() else w
            b = w - int(inside[::-1].argmax()) if a < w else w
            if a < w and not inside[a:b].all():
                a = b = w
            box[r0:r1, a:b] = self.rgb[r0:r1, a:b]
            for c0, c1 in ((0, a), (b, w)):
                if c1 > c0:
                    _blend(self.rgb[r0:r1, c0:c1], under[r0:r1, c0:c1], self.alpha[r0:r1, c0:c1], box[r0:r1, c0:c1])
        return out


def _blend(top: np.ndarray, base: np.ndarray, alpha: np.ndarray, out: np.ndarray) -> None:
    """out = top · alpha + base · (1 − alpha) per pixel, in OpenCV (rounded uint8; views of
    larger arrays are read and written in place); weight 0 keeps the base's pixel exactly."""
    got = cv2.blendLinear(top, base, alpha, 1.0 - alpha, dst=out)
    if got is not out and not np.shares_memory(got, out):  # OpenCV made its own array after all
        out[...] = got


def frame_box(crop: Crop, shape: tuple[int, ...], rect: tuple[float, float, float, float] | None = None
              ) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the frame pixels (`shape`) that the crop's rectangle `rect` (x0, y0, x1,
    y1 in crop pixels; None = the whole crop) can reach, 2 pixels around it, clipped."""
    h, w = shape[:2]
    a0, b0, a1, b1 = (0, 0, crop.size, crop.size) if rect is None else rect
    corners = crop.points_to_frame(np.array([[a0, b0], [a1, b0], [a0, b1], [a1, b1]], np.float64))
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    return max(x0, 0), max(y0, 0), max(min(x1, w), 0), max(min(y1, h), 0)


def mask_in_frame(mask: np.ndarray, to_mask: np.ndarray, box: tuple[int, int, int, int], step: int = 1
                  ) -> np.ndarray:
    """`mask` (float in [0, 1]) resampled onto the frame rectangle `box` (x0, y0, x1, y1), given
    `to_mask` (2×3, frame pixels → mask pixels); 0 outside the mask. `step` > 1: resampled at
    the centres of step×step blocks and upsampled bilinearly (for a mask that is smooth at that
    scale, e.g. one coarser than the frame: a few times cheaper)."""
    x0, y0, x1, y1 = box
    if step == 1:
        return cv2.warpAffine(mask.astype(np.float32), translated(to_mask, x0, y0), (x1 - x0, y1 - y0),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
    cols, rows = -(-(x1 - x0) // step), -(-(y1 - y0) // step)
    blocks = np.array([[step, 0.0, x0 + 0.5 * step - 0.5], [0.0, step, y0 + 0.5 * step - 0.5]])  # block → frame
    small = cv2.warpAffine(mask.astype(np.float32), compose(to_mask, blocks), (cols, rows),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # INTER_LINEAR puts block j's value at its centre again
    return cv2.resize(small, (cols * step, rows * step), interpolation=cv2.INTER_LINEAR)[:y1 - y0, :x1 - x0]


def paste_back(frame: np.ndarray, crop_rgb: np.ndarray, crop: Crop, mask: np.ndarray) -> np.ndarray:
    """Blend `crop_rgb` (size×size×3 uint8) into a copy of `frame` (H×W×3 uint8) through `mask`
    (size×size float in [0, 1], 1 = take the crop). Pixels where the warped mask is 0 are returned
    bit-identical. Only the crop's bounding box in the frame is processed."""
    x0, y0, x1, y1 = frame_box(crop, frame.shape)
    if x1 <= x0 or y1 <= y0:
        return frame.copy()
    inv = crop.inverse.copy()
    inv[:, 2] -= (x0, y0)
    box = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(crop_rgb, inv, box, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask.astype(np.float32), inv, box, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return Patch(warped, alpha, x0, y0).onto(frame)
