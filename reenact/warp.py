"""Classical landmark warp of the reference crop (the warp engine, and FusionNet's warp path).

Control points = the 478 mesh landmarks + a "head ring" (the face oval pushed outwards in the
canonical frame, so forehead, hair and jaw move rigidly with the head) + fixed anchors on the
crop border. The reference's control points are Delaunay-triangulated once; each frame moves the
landmarks and ring to the target and maps every triangle affinely (piecewise-affine warp,
continuous across edges). Triangles are rasterised far-to-near by the target's depth, so at large
yaw the near side correctly covers the far side.

A classical warp cannot invent what the reference does not show; the one case handled here is
an opening mouth: the new mouth interior is shaded as a dark cavity (`mouth_cavity`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from reenact import geometry as g

RING_SCALE = 1.4  # head ring = face oval scaled about the canonical centre
BORDER_STEPS = 6  # anchors per crop side
_FAR = 1e6


@dataclass(frozen=True)
class WarpSource:
    """Everything the warp needs from one reference crop (computed once, reused per frame).

    image: size×size×3 uint8 RGB crop; points: (478, 3) landmarks in crop pixels;
    control: (K, 2) float32 source control points; triangles: (T, 3) int32 indices into them.
    """

    image: np.ndarray
    points: np.ndarray
    control: np.ndarray
    triangles: np.ndarray

    @property
    def size(self) -> int:
        return self.image.shape[0]


def _ring(points: np.ndarray) -> np.ndarray:
    """(R, 3) head-ring points for (478, 3) landmarks (posed with the face's own fit)."""
    canon = g.canonical().points
    oval = canon[list(g.FACE_OVAL)]
    ring = oval * np.array([RING_SCALE, RING_SCALE, 1.0])
    return g.fit_head(points).apply(ring)


def _border(size: int) -> np.ndarray:
    t = np.linspace(0, size - 1, BORDER_STEPS + 1)
    lo, hi = np.zeros_like(t), np.full_like(t, size - 1)
    pts = np.concatenate([np.stack([t, lo], 1), np.stack([t, hi], 1),
                          np.stack([lo, t], 1)[1:-1], np.stack([hi, t], 1)[1:-1]])
    return np.hstack([pts, np.full((len(pts), 1), _FAR)])


def control_points(points: np.ndarray, size: int) -> np.ndarray:
    """(K, 3) control points: landmarks, head ring (clamped inside the crop), border anchors."""
    ring = _ring(points)
    ring[:, :2] = np.clip(ring[:, :2], 1.0, size - 2.0)
    return np.vstack([np.asarray(points, np.float64), ring, _border(size)])


def _delaunay(pts: np.ndarray, size: int) -> np.ndarray:
    subdiv = cv2.Subdiv2D((-1, -1, size + 2, size + 2))
    lookup: dict[tuple[float, float], int] = {}
    for i, (x, y) in enumerate(pts.astype(np.float32)):
        x, y = float(np.clip(x, -0.5, size + 0.5)), float(np.clip(y, -0.5, size + 0.5))
        lookup.setdefault((x, y), i)
        subdiv.insert((x, y))
    tris = []
    for t in subdiv.getTriangleList().reshape(-1, 3, 2):
        idx = [lookup.get((float(x), float(y))) for x, y in t]
        if None not in idx and len(set(idx)) == 3:
            tris.append(idx)
    return np.array(tris, np.int32)


def prepare_source(image: np.ndarray, points: np.ndarray) -> WarpSource:
    """Triangulate a reference crop (size×size×3 uint8) with its (478, 3) crop-space landmarks."""
    size = image.shape[0]
    ctrl = control_points(points, size)
    return WarpSource(image=image, points=np.asarray(points, np.float32),
                      control=ctrl[:, :2].astype(np.float32), triangles=_delaunay(ctrl[:, :2], size))


def _affines(src: np.ndarray, dst: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3, 2) matrices A with [x, y, 1] @ A = source position, for each triangle's dst→src map,
    and a (T,) mask of non-degenerate destination triangles."""
    d = np.concatenate([dst[tris], np.ones((len(tris), 3, 1))], axis=2)  # T×3×3
    s = src[tris]  # T×3×2
    det = np.linalg.det(d)
    ok = np.abs(det) > 1e-9
    a = np.zeros((len(tris), 3, 2))
    a[ok] = np.linalg.solve(d[ok], s[ok])
    return a, ok


def backward_map(source: WarpSource, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel of the output crop, where to sample the reference crop.

    Returns (map_x, map_y), float32 size×size, for cv2.remap. Piecewise affine over the source
    triangulation moved to `target` (478, 3) crop coordinates; triangles are rasterised far to
    near by target depth so that nearer surfaces win where the mesh folds."""
    size = source.size
    dst = control_points(target, size)
    affines, ok = _affines(source.control.astype(np.float64), dst[:, :2], source.triangles)
    depth = dst[source.triangles, 2].mean(1)
    ids = np.zeros((size, size), np.int32)
    fixed = np.round(dst[:, :2] * 16).astype(np.int32)
    for t in np.argsort(-depth):  # far first; nearer triangles overwrite
        if ok[t]:
            cv2.fillConvexPoly(ids, fixed[source.triangles[t]], int(t) + 1, lineType=cv2.LINE_8, shift=4)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    a = affines[np.maximum(ids - 1, 0)].astype(np.float32)  # H×W×3×2
    map_x = xs * a[..., 0, 0] + ys * a[..., 1, 0] + a[..., 2, 0]
    map_y = xs * a[..., 0, 1] + ys * a[..., 1, 1] + a[..., 2, 1]
    empty = ids == 0
    map_x[empty], map_y[empty] = xs[empty], ys[empty]
    return map_x, map_y


def warp(source: WarpSource, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warp the reference crop so that its landmarks land on `target` (478, 3) crop coordinates.

    Returns (rgb size×size×3 uint8, coverage size×size float32 in [0, 1]: the moved head region,
    i.e. the hull of the target's head ring, feathered)."""
    map_x, map_y = backward_map(source, target)
    rgb = cv2.remap(source.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    rgb = mouth_cavity(rgb, source.points, target)
    return rgb, head_mask(target, source.size)


def head_mask(points: np.ndarray, size: int) -> np.ndarray:
    """Feathered hull of the head ring of `points` (crop coords): where a warp moves pixels."""
    ring = control_points(points, size)[g.N_LANDMARKS:g.N_LANDMARKS + len(g.FACE_OVAL), :2]
    canvas = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(ring * 16).astype(np.int32))
    cv2.fillConvexPoly(canvas, hull, 255, lineType=cv2.LINE_AA, shift=4)
    sigma = size / 64
    k = int(2 * round(3 * sigma) + 1)
    return cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (k, k), sigma)


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def mouth_cavity(rgb: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """Shade the part of the target's mouth opening that the reference's mouth did not show.

    The warp stretches the reference's (closed) lip line over a new opening; where the opening is
    new (area ratio), blend in a dark cavity, darker towards its centre. Returns a new array."""
    inner = list(g.LIPS_INNER)
    scale = g.face_scale(dst_points) / max(g.face_scale(src_points), 1e-6)
    a_src = _area(np.asarray(src_points)[inner, :2]) * scale ** 2
    a_dst = _area(np.asarray(dst_points)[inner, :2])
    new = 0.0 if a_dst <= 1e-6 else float(np.clip((a_dst - 1.2 * a_src) / a_dst, 0.0, 1.0))
    if new <= 0.0:
        return rgb
    size = rgb.shape[0]
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(dst_points)[inner, :2] * 16).astype(np.int32)], 255,
                 lineType=cv2.LINE_AA, shift=4)
    depth = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 3)
    depth = depth / max(float(depth.max()), 1.0)
    lip = rgb[mask > 127].reshape(-1, 3).astype(np.float32)
    base = (np.median(lip, 0) if len(lip) else np.array([120.0, 60, 60])) * 0.35
    cavity = base[None, None, :] * (1.0 - 0.6 * depth[..., None])
    alpha = (mask.astype(np.float32) / 255.0 * new)[..., None]
    return np.clip(rgb * (1 - alpha) + cavity * alpha, 0, 255).astype(np.uint8)
