"""Classical landmark warp of the reference crop (the warp engine, and FusionNet's warp path).

Control points = the 478 mesh landmarks + a "head ring" (the face oval pushed outwards in the
canonical frame, so forehead, hair and jaw move rigidly with the head) + fixed points on the crop
border (where rays from the face centre through the ring meet it) and the crop corners.

The mesh has a fixed topology: the face surface is triangulated once on the canonical face
(`face_triangles`), and strips join the oval to the ring and the ring to the border. Each frame
moves the landmarks and ring to the target and maps every triangle affinely (a piecewise-affine
warp, continuous across edges). Triangles are rasterised far-to-near by the target's depth, after
those that turned away, so at large yaw the near side covers the far side. Crops above 512² (the
native-resolution warp) evaluate that map on a coarser grid and upsample it (`map_factor`).

A classical warp cannot invent what the reference does not show. Two cases are handled here: an
opening mouth — the new mouth interior is shaded as a dark cavity (`mouth_cavity`) — and the side
of the face a turn reveals (`revealed`): the reference saw it at a grazing angle, so its outermost
band is a few pixels of skin edge and whatever lies beside it (hair, background), which the warp
would stretch over the revealed cheek. There the band samples the reference a little further in,
and `warp` smooths it with the skin next to it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from reenact import align
from reenact import geometry as g

RING_SCALE = 1.4  # head ring = face oval scaled about the canonical centre
_FAR = 1e6
# Crops up to EXACT_MAP_SIZE (the 256² model crops among them) get the backward map evaluated at
# every pixel; larger ones (the native-resolution warp) on a grid of at most COARSE_MAP_SIZE² nodes.
EXACT_MAP_SIZE = 512
COARSE_MAP_SIZE = 256
# The revealed side (`revealed`): landmarks within REVEAL_BAND canonical units (outer eye corners
# 1 apart) of the face oval, that the reference sees at a grazing angle (facing — the cosine of
# their surface normal to the view — below REVEAL_GRAZING) and the target turns towards the
# camera by more than REVEAL_MIN_TURN of facing (about 6° for the silhouette; less is left to the
# plain warp); the weight ramps up over REVEAL_SPAN of facing. There the reference is sampled
# REVEAL_INSET·weight face scales further in (along the surface, towards the camera), and the
# render is smoothed with the skin around it in proportion (a blur of REVEAL_BLUR face scales),
# so the stretched band does not streak.
REVEAL_BAND = 0.25
REVEAL_GRAZING = 0.45
REVEAL_MIN_TURN = 0.1
REVEAL_SPAN = 0.3
REVEAL_INSET = 0.07
REVEAL_BLUR = 0.06
_FEATURES = (g.RIGHT_EYE + g.RIGHT_BROW, g.LEFT_EYE + g.LEFT_BROW, g.LIPS_OUTER)  # not skin


@dataclass(frozen=True)
class View:
    """Where a warp renders when not into the source crop itself (the direct render): a patch of
    an image, `shape` (h, w), whose pixels map to target-crop pixels by `to_crop` (2×3), sampling
    `image` (the reference photo), whose pixels are the source crop's mapped by `from_crop` (2×3).
    The crop's backward map and these two affines are composed into one map, so the photo is
    resampled once."""

    shape: tuple[int, int]
    to_crop: np.ndarray
    image: np.ndarray
    from_crop: np.ndarray

    @property
    def scale(self) -> float:
        """Patch pixels per target-crop pixel."""
        return 1.0 / float(np.sqrt(abs(np.linalg.det(self.to_crop[:, :2]))))

    def points(self, points: np.ndarray) -> np.ndarray:
        """(N, 2|3) target-crop coordinates → patch coordinates (z scaled with x, y)."""
        return align.apply_affine(cv2.invertAffineTransform(self.to_crop), points)


@dataclass(frozen=True)
class WarpSource:
    """Everything the warp needs from one reference crop (computed once, reused per frame).

    image: size×size×3 uint8 RGB crop, or None for a source that is only rendered through a
    `View` of the photo; points: (478, 3) landmarks in crop pixels; control: (K, 2) float32
    source control points; triangles: (T, 3) int32 indices into them; normals: (478, 3) unit
    surface normals at the landmarks, turned as the reference's head (the camera looks along +z,
    so a surface facing it has normal z < 0); size: the crop's side.
    """

    image: np.ndarray | None
    points: np.ndarray
    control: np.ndarray
    triangles: np.ndarray
    scale: float  # the reference face's scale (outer-eye-corner distance, crop pixels)
    normals: np.ndarray
    size: int


def _ring(points: np.ndarray, fit: g.Similarity | None = None) -> np.ndarray:
    """(R, 3) head-ring points for (478, 3) landmarks (posed with the face's own fit); ring[i]
    lies outside FACE_OVAL[i]."""
    canon = g.canonical().points
    oval = canon[list(g.FACE_OVAL)]
    ring = oval * np.array([RING_SCALE, RING_SCALE, 1.0])
    return (fit or g.fit_head(points)).apply(ring)


def _radial_border(centre: np.ndarray, ring: np.ndarray, size: int) -> np.ndarray:
    """(R, 2): where the ray from `centre` through each ring point meets the crop border."""
    d = ring[:, :2] - centre[:2]
    lo, hi = 0.0, size - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = np.where(d[:, 0] > 0, (hi - centre[0]) / d[:, 0], (lo - centre[0]) / d[:, 0])
        ty = np.where(d[:, 1] > 0, (hi - centre[1]) / d[:, 1], (lo - centre[1]) / d[:, 1])
    t = np.nanmin(np.where(np.isfinite(np.stack([tx, ty])), np.stack([tx, ty]), np.inf), axis=0)
    return np.clip(centre[:2] + d * t[:, None], lo, hi)


_CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


@functools.lru_cache(maxsize=1)
def face_triangles() -> np.ndarray:
    """(T, 3) surface triangulation of the 478 landmarks, fixed for every face.

    Delaunay in a cylindrical unwrapping of the canonical face (u = angle around a vertical
    axis behind the face, v = height), so triangles follow the surface even where the face is
    seen edge-on (the sides), and the eye and mouth openings are spanned lid to lid and lip to
    lip. Triangles outside the face oval are dropped (the head-ring strip covers that band)."""
    canon = g.canonical().points
    uv = np.stack([np.arctan2(canon[:, 0], 1.2 - canon[:, 2]), canon[:, 1]], 1)
    tris = _delaunay_indices(uv)
    oval = uv[list(g.FACE_OVAL)].astype(np.float32)
    centroids = uv[tris].mean(1)
    inside = [cv2.pointPolygonTest(oval, (float(x), float(y)), False) >= 0 for x, y in centroids]
    return tris[np.array(inside)]


@functools.lru_cache(maxsize=1)
def surface_normals() -> np.ndarray:
    """(478, 3) unit normals of the canonical face at its landmarks (area-weighted means of the
    surface triangles' normals), pointing out of the face: towards the camera (−z) at the nose."""
    pts = g.canonical().points
    tris = face_triangles()
    a, b, c = (pts[tris[:, k]] for k in range(3))
    per_triangle = np.cross(b - a, c - a)
    normals = np.zeros_like(pts)
    for k in range(3):
        np.add.at(normals, tris[:, k], per_triangle)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return -normals if normals[g.NOSE_TIP, 2] > 0 else normals


@functools.lru_cache(maxsize=1)
def _oval_band() -> np.ndarray:
    """(478,) 1 on the face oval, falling to 0 at REVEAL_BAND canonical units from it; 0 on the
    eyes, brows and lips (a brow's tail near the oval keeps its own texture)."""
    canon = g.canonical().points[:, :2]
    oval = canon[list(g.FACE_OVAL)]
    dist = np.sqrt(((canon[:, None] - oval[None]) ** 2).sum(-1)).min(1)
    band = np.clip(1.0 - dist / REVEAL_BAND, 0.0, 1.0)
    band[[i for part in _FEATURES for i in part]] = 0.0
    return band


def revealed(source: WarpSource, target_fit: g.Similarity) -> np.ndarray | None:
    """(478,) how much of each landmark's neighbourhood a turn to `target_fit` (the target's head
    fit) reveals — 0 where the reference saw the surface well enough or the target turns it
    away; None when nothing is revealed (most frames: no change to the warp)."""
    before = -source.normals[:, 2]
    after = -(surface_normals() @ target_fit.rotation.T)[:, 2]
    weight = (np.clip((after - before - REVEAL_MIN_TURN) / REVEAL_SPAN, 0.0, 1.0)
              * np.clip((REVEAL_GRAZING - before) / REVEAL_SPAN, 0.0, 1.0) * _oval_band())
    return weight if weight.max() > 0.01 else None


def _reveal_controls(source: WarpSource, weight: np.ndarray) -> np.ndarray:
    """The source control points with each revealed landmark moved REVEAL_INSET·weight face
    scales into the face (against its normal's image-plane direction)."""
    inward = -source.normals[:, :2]
    inward = inward / np.maximum(np.linalg.norm(inward, axis=1, keepdims=True), 1e-9)
    control = source.control.astype(np.float64)
    control[:g.N_LANDMARKS] += inward * (weight[:, None] * REVEAL_INSET * source.scale)
    return control


def _delaunay_indices(pts: np.ndarray) -> np.ndarray:
    pts = (pts - pts.min(0)) * (1000.0 / np.ptp(pts, 0).max()) + 10.0  # Subdiv2D wants int bounds
    subdiv = cv2.Subdiv2D((0, 0, 1020, 1020))
    lookup: dict[tuple[float, float], int] = {}
    for i, (x, y) in enumerate(pts.astype(np.float32)):
        lookup.setdefault((float(x), float(y)), i)
        subdiv.insert((float(x), float(y)))
    tris = []
    for t in subdiv.getTriangleList().reshape(-1, 3, 2):
        idx = [lookup.get((float(x), float(y))) for x, y in t]
        if None not in idx and len(set(idx)) == 3:
            tris.append(idx)
    return np.array(tris, np.int32)


def _strip(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Triangles joining two closed index loops of equal length (a[i] ↔ b[i])."""
    a1, b1 = np.roll(a, -1), np.roll(b, -1)
    return np.concatenate([np.stack([a, a1, b1], 1), np.stack([a, b1, b], 1)])


def _layout(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index ranges of the control points: ring, radial border points, crop corners."""
    n, r = g.N_LANDMARKS, len(g.FACE_OVAL)
    return np.arange(n, n + r), np.arange(n + r, n + 2 * r), np.arange(n + 2 * r, n + 2 * r + 4)


def _triangles(border: np.ndarray, centre: np.ndarray, size: int) -> np.ndarray:
    """All triangles: face surface, oval→ring strip, ring→border strip, and the corner fans."""
    ring_idx, border_idx, corner_idx = _layout(size)
    tris = [face_triangles(), _strip(np.array(g.FACE_OVAL), ring_idx), _strip(ring_idx, border_idx)]
    # Each crop corner joins the two radial border points around it (by angle about the centre).
    ang = np.arctan2(border[:, 1] - centre[1], border[:, 0] - centre[0])
    for c, corner in zip(corner_idx, _CORNERS * (size - 1)):
        a = np.arctan2(corner[1] - centre[1], corner[0] - centre[0])
        diff = np.angle(np.exp(1j * (ang - a)))
        before = border_idx[np.where(diff < 0, diff, -np.inf).argmax()]
        after = border_idx[np.where(diff >= 0, diff, np.inf).argmin()]
        tris.append(np.array([[before, c, after]]))
    return np.concatenate(tris).astype(np.int32)


def control_points(points: np.ndarray, size: int, border: np.ndarray | None = None,
                   fit: g.Similarity | None = None) -> np.ndarray:
    """(K, 3) control points: landmarks, head ring, border points, crop corners.

    `border` (R, 2) fixes the border points (they never move); None computes them radially
    from this face's ring. `fit`: the face's head fit, when the caller already has it."""
    pts = np.asarray(points, np.float64)
    ring = _ring(pts, fit)
    ring[:, :2] = np.clip(ring[:, :2], 2.0, size - 3.0)
    if border is None:
        border = _radial_border(pts.mean(0), ring, size)
    far = np.full((len(border) + 4, 1), _FAR)
    edge = np.hstack([np.vstack([border, _CORNERS * (size - 1)]), far])
    return np.vstack([pts, ring, edge])


def prepare_source(image: np.ndarray | None, points: np.ndarray, size: int | None = None) -> WarpSource:
    """Triangulate a reference crop (size×size×3 uint8) with its (478, 3) crop-space landmarks.
    `image` None: a source rendered only through a `View` of the photo (`size` its crop side)."""
    size = image.shape[0] if image is not None else size
    fit = g.fit_head(points)
    ctrl = control_points(points, size, fit=fit)
    _, border_idx, _ = _layout(size)
    tris = _triangles(ctrl[border_idx, :2], np.asarray(points, np.float64).mean(0), size)
    return WarpSource(image=image, points=np.asarray(points, np.float32),
                      control=ctrl[:, :2].astype(np.float32), triangles=tris, scale=fit.scale,
                      normals=surface_normals() @ fit.rotation.T, size=size)


def _signed_area(pts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = (pts[tris[:, k]].astype(np.float64) for k in range(3))
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def _affines(src: np.ndarray, dst: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3, 2) matrices A with [x, y, 1] @ A = source position, for each triangle's dst→src map,
    and a (T,) mask of non-degenerate destination triangles.

    Closed form (barycentric coordinates) rather than a batched np.linalg.solve: exact, and free of
    BLAS threading, which made the batched solve 10-400x slower on a busy machine."""
    d0, d1, d2 = (dst[tris[:, k]] for k in range(3))  # T×2 each
    s0, s1, s2 = (src[tris[:, k]] for k in range(3))
    e1, e2 = d1 - d0, d2 - d0
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = np.abs(det) > 1e-9
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    # Barycentric weights (b1, b2) of a point p: [b1, b2] = M (p - d0), M = inverse of [e1 e2].
    m = np.stack([np.stack([e2[:, 1], -e2[:, 0]], 1), np.stack([-e1[:, 1], e1[:, 0]], 1)], 1) * inv[:, None, None]
    f1, f2 = s1 - s0, s2 - s0  # source = s0 + b1 f1 + b2 f2
    lin = np.einsum("tij,tjk->tik", np.stack([f1, f2], 2), m)  # T×2×2: source = lin (p - d0) + s0
    a = np.zeros((len(tris), 3, 2))
    a[:, :2, :] = lin.transpose(0, 2, 1)
    a[:, 2, :] = s0 - np.einsum("tij,tj->ti", lin, d0)
    a[~ok] = 0.0
    return a, ok


@functools.lru_cache(maxsize=8)
def _grid(rows: int, cols: int, factor: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(xs, ys) float32 rows×cols output coordinates of the backward map's nodes: the centres
    (j + 0.5)·factor − 0.5 of factor×factor pixel blocks (the pixels themselves for factor 1)."""
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float64)
    ys, xs = ((a + 0.5) * factor - 0.5 for a in (ys, xs))
    xs, ys = xs.astype(np.float32), ys.astype(np.float32)
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def target_controls(source: WarpSource, target: np.ndarray, fit: g.Similarity | None = None) -> np.ndarray:
    """(K, 3) control points of `target` (478, 3 crop coords), with the source's fixed border."""
    _, border_idx, _ = _layout(source.size)
    return control_points(target, source.size, border=source.control[border_idx].astype(np.float64), fit=fit)


def map_factor(size: int) -> int:
    """How many crop pixels apart `backward_map` evaluates the map (1: at every pixel): 1 up to
    EXACT_MAP_SIZE, else the smallest power of two that divides `size` and brings the node grid
    to at most COARSE_MAP_SIZE a side (as far as it divides)."""
    factor = 1
    while size > EXACT_MAP_SIZE and size // factor > COARSE_MAP_SIZE and size % (2 * factor) == 0:
        factor *= 2
    return factor


def view_factor(size: int, view: View) -> int:
    """`map_factor` for a view of a size² crop: the power of two nearest to the crop's node
    spacing in patch pixels (1: exact), whatever the patch's shape (its node grid may overhang
    its edges)."""
    spacing = map_factor(size) * view.scale
    return 1 if spacing < 1.5 else 2 ** int(round(np.log2(spacing)))


def backward_map(source: WarpSource, target: np.ndarray, dst: np.ndarray | None = None, *,
                 factor: int | None = None, view: View | None = None, fit: g.Similarity | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel of the output crop, where to sample the reference crop.

    Returns (map_x, map_y), float32 size×size, for cv2.remap. Piecewise affine over the source
    triangulation moved to `target` (478, 3) crop coordinates (`dst`: its control points, if the
    caller has them); triangles are rasterised far to near by target depth so that nearer
    surfaces win where the mesh folds, after the triangles that turned away (orientation flipped).

    `view`: for every pixel of the view's patch instead, where to sample the view's image (the
    same map, composed with the view's affines: float32 maps of `view.shape`).

    `factor` (default `map_factor(size)`, `view_factor` for a view): evaluate the map at the
    centres of factor×factor pixel blocks and upsample it bilinearly. The map is continuous across
    triangle edges, so this moves samples by a small fraction of a pixel (within `factor` pixels
    of the output's border, where the upsampling clamps, by up to about factor / 2). Where it
    tears (a fold: a nearer surface starts to cover another) the blocks around the tear are
    evaluated exactly (`_mend`).

    `fit`: the target's head fit, when the caller has it. Where a turn reveals a side of the face
    (`revealed`), that band samples the reference further in."""
    size = source.size
    fit = g.fit_head(target) if fit is None else fit
    dst = target_controls(source, target, fit) if dst is None else dst
    weight = revealed(source, fit)
    src_ctrl = source.control if weight is None else _reveal_controls(source, weight)
    src_ctrl, out_ctrl = src_ctrl.astype(np.float64), dst[:, :2]
    # Triangle 0 of the table is "none": pixels no triangle covered are not moved (the identity
    # map in the crop; through a view, crop → source crop unchanged).
    identity = np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    pad = 0
    if view is None:
        rows = cols = size
        factor = map_factor(size) if factor is None else factor
    else:
        factor = view_factor(size, view) if factor is None else factor
        # The nodes reach one block beyond every edge of the patch (it is evaluated `pad` pixels
        # further out and cut), so no pixel of it lies where the upsampling clamps.
        pad = factor if factor > 1 else 0
        rows, cols = view.shape[0] + 2 * pad, view.shape[1] + 2 * pad
        to_out = cv2.invertAffineTransform(view.to_crop)
        to_out[:, 2] += pad
        src_ctrl = align.apply_affine(view.from_crop, src_ctrl)
        out_ctrl = align.apply_affine(to_out, out_ctrl)
        unmoved = align.compose(view.from_crop, align.translated(view.to_crop, -pad, -pad))  # → source image
        identity = unmoved.T[None]
    affines, ok = _affines(src_ctrl, out_ctrl, source.triangles)
    order = _draw_order(source, dst, ok)
    # Node j of the raster is output point (j + 0.5)·factor − 0.5, the centre of block j.
    nodes = out_ctrl if factor == 1 else (out_ctrl + 0.5) / factor - 0.5
    shape = (-(-rows // factor), -(-cols // factor))
    ids = _rasterise(source.triangles, order, nodes, shape)
    table = np.concatenate([identity, affines]).astype(np.float32)  # (T + 1)×3×2
    xs, ys = _grid(*shape, factor)
    maps = [_apply_affines(table[:, :, k], ids, xs, ys) for k in (0, 1)]
    if factor == 1:
        return maps[0], maps[1]
    # INTER_LINEAR puts node j at the centre of block j too.
    fine = [cv2.resize(m, (shape[1] * factor, shape[0] * factor), interpolation=cv2.INTER_LINEAR) for m in maps]
    torn = _torn_nodes(maps, table, ids, xs, ys)
    if torn.any():
        _mend(fine, table, ids, torn, factor, source.triangles, order, out_ctrl)
    if view is not None:  # the node grid overhangs the patch
        fine = [f[pad:pad + view.shape[0], pad:pad + view.shape[1]] for f in fine]
    return fine[0], fine[1]


def _draw_order(source: WarpSource, dst: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """The triangles to draw, in drawing order. Those whose orientation flipped between source
    and target are folded over (turned away): drawn first, so front-facing triangles always cover
    them; then far to near by target depth; degenerate ones not at all."""
    depth = dst[source.triangles, 2].mean(1)
    order = np.lexsort((-depth, ~folded(source.control, dst[:, :2], source.triangles)))
    return order[ok[order]]


def folded(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T,) bool: the triangles whose orientation flips between the `src` and `dst` control
    points (K, 2): folded over, turned away (or degenerate)."""
    return _signed_area(src, triangles) * _signed_area(dst, triangles) <= 0


def _rasterise(triangles: np.ndarray, order: np.ndarray, points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """intp raster (`shape`) of 1 + the last triangle of `order` covering each pixel (0: none),
    `points` (K, 2) in its pixel coordinates. intp: take() would convert int32 on every call."""
    return _raster_ids(triangles, order, points, shape).astype(np.intp)


def _raster_ids(triangles: np.ndarray, order: np.ndarray, points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`_rasterise`'s raster as int32 (for a raster read only a few times)."""
    ids = np.zeros(shape, np.int32)
    corners = np.round(points * 16).astype(np.int32)[triangles[order]]  # 1/16 px, in order
    for t, poly in zip((order + 1).tolist(), corners):
        cv2.fillConvexPoly(ids, poly, t, lineType=cv2.LINE_8, shift=4)
    return ids


TEAR_PX = 1.0  # a node's triangle missing a neighbour node's source position by more: a tear


def _torn_nodes(maps: list[np.ndarray], table: np.ndarray, ids: np.ndarray, xs: np.ndarray, ys: np.ndarray
                ) -> np.ndarray:
    """Nodes whose map jumps to their right or lower neighbour's (a fold: the two lie on surfaces
    that do not meet in the source), where bilinear upsampling would sample between the
    surfaces. Bool, like ids."""
    side = ids.shape[1]
    flat, gx, gy = ids.ravel(), xs.ravel(), ys.ravel()
    torn = np.zeros(ids.size, bool)
    for step in (1, side):
        a = np.flatnonzero(flat[:-step] != flat[step:])  # only nodes on different triangles can tear
        if step == 1:
            a = a[a % side != side - 1]  # not from a row's end to the next row's start
        b, tri = a + step, flat[a]
        miss = np.zeros(len(a), bool)
        for k in (0, 1):  # node a's triangle, extended to node b, vs node b's own source position
            co = table[:, :, k]
            miss |= np.abs(co[tri, 0] * gx[b] + co[tri, 1] * gy[b] + co[tri, 2] - maps[k].ravel()[b]) > TEAR_PX
        torn[a[miss]] = torn[b[miss]] = True
    return torn.reshape(ids.shape)


def _mend(fine: list[np.ndarray], table: np.ndarray, ids: np.ndarray, torn: np.ndarray, factor: int,
          triangles: np.ndarray, order: np.ndarray, dst: np.ndarray) -> None:
    """Evaluate the map exactly (in place) at every pixel whose bilinear weights reach a torn
    node (the blocks of the torn nodes' 3×3 neighbourhoods): rasterised at full resolution in
    their bounding box, with the triangles near those nodes only."""
    iy, ix = np.nonzero(cv2.dilate(torn.astype(np.uint8), np.ones((3, 3), np.uint8)))
    off = np.arange(factor)
    py = (iy[:, None, None] * factor + off[None, :, None]).repeat(factor, 2).ravel()
    px = (ix[:, None, None] * factor + off[None, None, :]).repeat(factor, 1).ravel()
    y0, x0 = py.min(), px.min()
    # The triangles seen at those nodes and their neighbours (sharing a corner): a sliver
    # between two seen triangles, that no node hit, is drawn too.
    near = np.unique(ids[iy, ix])
    corners = np.unique(triangles[near[near > 0] - 1])
    seen = order[np.isin(triangles[order], corners).any(1)]
    local = _raster_ids(triangles, seen, dst[:, :2] - (x0, y0), (py.max() - y0 + 1, px.max() - x0 + 1))
    tri = local.ravel().take((py - y0) * local.shape[1] + (px - x0)).astype(np.intp)  # flat: faster than 2-D
    tri = np.where(tri > 0, tri, ids[iy, ix].repeat(factor * factor))
    fx, fy = px.astype(np.float32), py.astype(np.float32)
    flat = py * fine[0].shape[1] + px
    for k in (0, 1):
        a, b, c = (np.ascontiguousarray(table[:, j, k]) for j in range(3))
        val = a.take(tri)
        val *= fx
        val += b.take(tri) * fy
        val += c.take(tri)
        fine[k].ravel()[flat] = val  # cv2.resize's output: contiguous, ravel() is a view


def _apply_affines(coef: np.ndarray, ids: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """xs · a + ys · b + c per pixel, (a, b, c) = coef[ids] ((T + 1)×3 float32 table, H×W ids).

    One coefficient at a time (`take` from a contiguous column, in place): the same float32
    result as gathering H×W×3 coefficients first, in half the time (no large temporaries)."""
    a, b, c = (np.ascontiguousarray(coef[:, k]) for k in range(3))
    out = a.take(ids)
    out *= xs
    tmp = b.take(ids)
    tmp *= ys
    out += tmp
    out += c.take(ids)
    return out


def warp(source: WarpSource, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warp the reference crop so that its landmarks land on `target` (478, 3) crop coordinates.

    Returns (rgb size×size×3 uint8, coverage size×size float32 in [0, 1]: the moved head region,
    i.e. the hull of the target's head ring, feathered)."""
    fit = g.fit_head(target)
    dst = target_controls(source, target, fit)
    return render(source, target, dst, fit), hull_mask(head_ring(dst), source.size)


def render(source: WarpSource, target: np.ndarray, dst: np.ndarray, fit: g.Similarity,
           view: View | None = None) -> np.ndarray:
    """The warp's RGB render (uint8) of `target` (478, 3 crop coordinates; `dst` its control
    points, `fit` its head fit): the crop (size×size), or `view`'s patch sampled straight from
    the view's image. The mouth's new opening is shaded (`mouth_cavity`) and the side a turn
    reveals smoothed (`smooth_revealed`) in either."""
    map_x, map_y = backward_map(source, target, dst, view=view, fit=fit)
    image = source.image if view is None else view.image
    rgb = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    scale = fit.scale / max(source.scale, 1e-6)
    weight = revealed(source, fit)
    if view is None:
        if weight is not None:
            rgb = smooth_revealed(rgb, weight, dst, fit.scale)
        return mouth_cavity(rgb, source.points, target, scale=scale)
    if weight is not None:
        rgb = smooth_revealed(rgb, weight, view.points(dst[:, :2]), fit.scale * view.scale)
    return mouth_cavity(rgb, source.points, view.points(target), scale=scale * view.scale)


def head_ring(dst: np.ndarray) -> np.ndarray:
    """(R, 2) head ring among control points (`control_points`, `target_controls`)."""
    return dst[g.N_LANDMARKS:g.N_LANDMARKS + len(g.FACE_OVAL), :2]


def smooth_revealed(rgb: np.ndarray, weight: np.ndarray, dst: np.ndarray, scale: float) -> np.ndarray:
    """`rgb` (a warp render, uint8: a crop or a view's patch) with the revealed band (`revealed`'s
    `weight` on the landmarks, `dst` the target's control points in `rgb`'s pixels, `scale` the
    face scale there) blended, in place, towards a blur of the face's own skin — not the hair or
    background beyond the oval, nor eyes, brows and lips — of REVEAL_BLUR·`scale` pixels.
    Computed in the band's bounding box, at a resolution the blur allows. Returns `rgb`."""
    shade = weight[face_triangles()].mean(1)
    keep = shade > 0.01
    hit, shade = face_triangles()[keep], shade[keep]
    if not len(hit):
        return rgb
    sigma = REVEAL_BLUR * scale
    pts = dst[:, :2]
    reach = 3 * sigma
    x0, y0 = np.maximum(np.floor(pts[hit].reshape(-1, 2).min(0) - reach), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(pts[hit].reshape(-1, 2).max(0) + reach), rgb.shape[1::-1]).astype(int)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return rgb
    down = max(1, int(sigma // 3))  # the blur is low-frequency: work at 1/down resolution
    w, h = max(1, (x1 - x0) // down), max(1, (y1 - y0) // down)
    to_small = lambda p: ((p - (x0, y0)) * (w / (x1 - x0), h / (y1 - y0)) * 16).round().astype(np.int32)  # noqa: E731
    face = np.zeros((h, w), np.float32)
    cv2.fillPoly(face, [to_small(pts[list(g.FACE_OVAL)])], 1.0, lineType=cv2.LINE_AA, shift=4)
    for part in _FEATURES:  # eyes with lids and brows, lips: not skin to spread, not to blur
        cv2.fillConvexPoly(face, cv2.convexHull(to_small(pts[list(part)])), 0.0, lineType=cv2.LINE_AA, shift=4)
    band = np.zeros((h, w), np.float32)
    for tri, value in zip(to_small(pts[hit]), shade):
        cv2.fillConvexPoly(band, tri, float(value), lineType=cv2.LINE_8, shift=4)
    box = rgb[y0:y1, x0:x1].copy()
    small = cv2.resize(box, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    s = sigma * w / (x1 - x0)
    skin = cv2.GaussianBlur(small * face[..., None], (0, 0), s) / np.maximum(cv2.GaussianBlur(face, (0, 0), s), 1e-3)[..., None]
    alpha = np.clip(cv2.GaussianBlur(band, (0, 0), s / 2), 0.0, 1.0) * face
    skin = cv2.resize(np.clip(skin + 0.5, 0, 255).astype(np.uint8), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    alpha = cv2.resize(alpha, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    rgb[y0:y1, x0:x1] = cv2.blendLinear(box, skin, 1.0 - alpha, alpha)
    return rgb


def head_mask(points: np.ndarray, size: int) -> np.ndarray:
    """Feathered hull of the head ring of `points` (crop coords): where a warp moves pixels."""
    return hull_mask(head_ring(control_points(points, size)), size)


def hull_mask(ring: np.ndarray, size: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(ring * 16).astype(np.int32))
    cv2.fillConvexPoly(canvas, hull, 255, lineType=cv2.LINE_AA, shift=4)
    return align.feathered_mask(canvas.astype(np.float32) / 255.0, feather=size / 64)


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def new_mouth_opening(src_points: np.ndarray, dst_points: np.ndarray, *, scale: float | None = None) -> float:
    """Share (0..1) of the target's mouth opening that the reference's mouth does not show (its
    inner-lip area beyond 1.2× the reference's, scaled to the target face). `scale`: target face
    scale / source face scale (computed when not given)."""
    inner = list(g.LIPS_INNER)
    if scale is None:
        scale = g.face_scale(dst_points) / max(g.face_scale(src_points), 1e-6)
    a_src = _area(np.asarray(src_points)[inner, :2]) * scale ** 2
    a_dst = _area(np.asarray(dst_points)[inner, :2])
    return 0.0 if a_dst <= 1e-6 else float(np.clip((a_dst - 1.2 * a_src) / a_dst, 0.0, 1.0))


def mouth_cavity(rgb: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray, *,
                 scale: float | None = None) -> np.ndarray:
    """Shade the part of the target's mouth opening that the reference's mouth did not show.

    The warp stretches the reference's (closed) lip line over a new opening; where the opening is
    new (area ratio), blend in a dark cavity, darker towards its centre. `scale`: target face
    scale / source face scale (computed when not given). Drawn into `rgb` (a render the caller
    owns), which is returned."""
    inner = list(g.LIPS_INNER)
    new = new_mouth_opening(src_points, dst_points, scale=scale)
    if new <= 0.0:
        return rgb
    h, w = rgb.shape[:2]
    poly = np.round(np.asarray(dst_points)[inner, :2] * 16).astype(np.int32)  # 1/16 px
    # Everything happens in the opening's bounding box (2 px around it: the anti-aliased edge and
    # a ring of zeros for the distance transform); outside it the blend weight is 0.
    x0, y0 = np.maximum(poly.min(0) // 16 - 2, 0)
    x1, y1 = np.minimum(poly.max(0) // 16 + 3, (w, h))
    if x1 <= x0 or y1 <= y0:
        return rgb
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [poly - 16 * np.array([x0, y0])], 255, lineType=cv2.LINE_AA, shift=4)
    depth = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 3)
    depth = depth / max(float(depth.max()), 1.0)
    box = rgb[y0:y1, x0:x1]
    lip = box[mask > 127].reshape(-1, 3).astype(np.float32)
    base = (np.median(lip, 0) if len(lip) else np.array([120.0, 60, 60], np.float32)) * np.float32(0.35)
    cavity = base[None, None, :] * (1.0 - 0.6 * depth[..., None])
    alpha = (mask.astype(np.float32) * np.float32(new / 255.0))[..., None]
    box[...] = np.clip(box * (1 - alpha) + cavity * alpha, 0, 255).astype(np.uint8)
    return rgb


def normalised_grid(map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """`backward_map`'s pixel maps → S×S×2 float32 (x, y) sampling grid in [-1, 1] for torch's
    `grid_sample` / ONNX GridSample with align_corners=False (pixel centres at (2i + 1)/S − 1)."""
    size = map_x.shape[0]
    return np.stack([(2 * map_x + 1) / size - 1, (2 * map_y + 1) / size - 1], -1).astype(np.float32)
