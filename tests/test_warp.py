"""Piecewise-affine warp on synthetic landmarks with known answers."""

import cv2
import numpy as np
import pytest

from reenact import warp
from reenact import geometry as g
from tests import synth


def dots_image(points: np.ndarray, idx: list[int], size: int) -> np.ndarray:
    img = np.full((size, size, 3), 40, np.uint8)
    for k, i in enumerate(idx):
        x, y = points[i, :2]
        cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), 3 * 16, (255, 255 - 20 * k, 0), -1,
                   cv2.LINE_AA, shift=4)
    return img


def centroid(img: np.ndarray, near: np.ndarray, r: int = 8) -> np.ndarray:
    x0, y0 = np.round(near).astype(int) - r
    patch = img[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1, 0].astype(np.float64) - 40
    patch = np.clip(patch, 0, None)
    ys, xs = np.mgrid[0:2 * r + 1, 0:2 * r + 1]
    return np.array([(xs * patch).sum(), (ys * patch).sum()]) / patch.sum() + [x0, y0]


def test_identity_warp_is_exact():
    pts = synth.face(256, yaw=15)
    img = synth.textured(256)
    src = warp.prepare_source(img, pts)
    out, cover = warp.warp(src, pts)
    assert np.array_equal(out, img)
    assert cover.shape == (256, 256) and cover.max() <= 1.0


def test_landmarks_land_on_target_positions():
    size = 256
    idx = [1, 33, 263, 61, 291, 152, 10, 468]
    src_pts = synth.face(size)
    dst_pts = synth.face(size, roll=10, scale=1.08, shift=(6, -4))
    src = warp.prepare_source(dots_image(src_pts, idx, size), src_pts)
    out, _ = warp.warp(src, dst_pts)
    for i in idx:
        got = centroid(out, dst_pts[i, :2])
        assert np.linalg.norm(got - dst_pts[i, :2]) < 0.5, f"landmark {i}: {got} vs {dst_pts[i, :2]}"


@pytest.mark.parametrize("pose,visible", [((20, -8, 10), 0.8), ((-35, 5, 0), 0.65), ((0, 15, -5), 0.85)])
def test_backward_map_sends_target_landmarks_to_source_landmarks(pose, visible):
    """Exactness of the geometry under rotation: sampling the map at each visible target
    landmark gives that landmark's source position."""
    size = 256
    src_pts = synth.face(size)
    dst_pts = synth.face(size, yaw=pose[0], pitch=pose[1], roll=pose[2], scale=1.05)
    src = warp.prepare_source(synth.textured(size), src_pts)
    mx, my = warp.backward_map(src, dst_pts)
    errors = []
    for i in range(468):
        x, y = dst_pts[i, :2]
        # Bilinear sampling of the map (neighbouring pixels may lie in adjacent triangles).
        got = np.array([cv2.getRectSubPix(mx, (1, 1), (float(x), float(y)))[0, 0],
                        cv2.getRectSubPix(my, (1, 1), (float(x), float(y)))[0, 0]])
        errors.append(np.linalg.norm(got - src_pts[i, :2]))
    errors = np.array(errors)
    # Visible landmarks are exact; those hidden by a fold (far cheek, nose sides; more of them
    # the larger the yaw) map elsewhere.
    assert np.median(errors) < 0.1
    assert (errors < 0.5).mean() > visible


def test_border_is_fixed_and_every_pixel_covered():
    size = 192
    src_pts = synth.face(size)
    dst_pts = synth.face(size, yaw=-30, shift=(10, 0))
    img = synth.textured(size, seed=5)
    src = warp.prepare_source(img, src_pts)
    out, _ = warp.warp(src, dst_pts)
    # Border anchors do not move: border pixels stay (up to resampling where the clamped head
    # ring touches the border), while the face itself moved a lot.
    for got, want in ((out[0], img[0]), (out[:, -1], img[:, -1]), (out[-1], img[-1])):
        d = np.abs(got.astype(int) - want)
        assert d.max() <= 6 and d.mean() < 0.5
    assert np.abs(out[64:128, 64:128].astype(int) - img[64:128, 64:128]).mean() > 10
    assert len(src.triangles) > 900


def test_mouth_cavity_only_when_mouth_opens():
    size = 256
    closed = synth.face(size)
    opened = synth.open_mouth(closed, 0.3)
    img = np.full((size, size, 3), 200, np.uint8)
    src = warp.prepare_source(img, closed)
    out, _ = warp.warp(src, opened)
    inner = np.zeros((size, size), np.uint8)
    cv2.fillPoly(inner, [np.round(opened[list(g.LIPS_INNER), :2]).astype(np.int32)], 1)
    assert out[inner.astype(bool)].mean() < 150, "a new mouth opening must be shaded dark"
    same, _ = warp.warp(src, closed)
    assert same.min() == 200, "no shading when the mouth does not open"


def _hair_beside_the_face(size: int, points: np.ndarray) -> np.ndarray:
    """Skin (textured) inside the face oval and dark hair beside it, reaching 2 px inside the
    oval — as in photos, whose detected oval lies on the skin's edge."""
    img = np.full((size, size, 3), 25, np.uint8)
    oval = points[list(g.FACE_OVAL), :2]
    centre = oval.mean(0)
    inner = centre + (oval - centre) * (1 - 2.0 / np.linalg.norm(oval - centre, axis=1, keepdims=True))
    skin = np.zeros((size, size), np.uint8)
    cv2.fillPoly(skin, [np.round(inner * 16).astype(np.int32)], 1, cv2.LINE_AA, shift=4)
    texture = 150 + synth.textured(size).astype(np.int32) // 4
    return np.where(skin[..., None] > 0, texture, img).astype(np.uint8)


def _dark_inside_oval(rgb: np.ndarray, points: np.ndarray, margin: int = 3) -> float:
    """Share of dark (< 80) pixels inside the face oval of `points`, `margin` px in from it."""
    inside = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(points[list(g.FACE_OVAL), :2]).astype(np.int32)], 1)
    inside = cv2.erode(inside, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) > 0
    return float((rgb[inside].max(1) < 80).mean())


def test_revealed_side_is_the_one_turning_towards_the_camera():
    size = 256
    src = warp.prepare_source(synth.textured(size), synth.face(size))
    assert warp.revealed(src, g.fit_head(synth.face(size))) is None  # no turn, nothing revealed
    assert warp.revealed(src, g.fit_head(synth.face(size, pitch=3))) is None  # a nod reveals no side
    weight = warp.revealed(src, g.fit_head(synth.face(size, yaw=25)))
    canon_x = g.canonical().points[:, 0]
    assert weight is not None and weight[list(g.FACE_OVAL)].max() > 0.5
    towards = weight[canon_x * np.sign(canon_x[np.argmax(weight)]) < 0]
    assert towards.max() == 0.0, "the side turning away reveals nothing"
    assert weight[list(g.NOSE) + list(g.LIPS_OUTER) + list(g.RIGHT_EYE) + list(g.LEFT_EYE)].max() == 0.0


@pytest.mark.parametrize("yaw", [20, -30])
def test_turn_shows_skin_not_the_hair_beside_the_face(yaw):
    """A turn reveals the side of the face the reference saw at a grazing angle; the warp must not
    stretch the hair at the reference's silhouette over the revealed cheek."""
    size = 256
    src_pts, dst_pts = synth.face(size), synth.face(size, yaw=yaw)
    src = warp.prepare_source(_hair_beside_the_face(size, src_pts), src_pts)
    out, _ = warp.warp(src, dst_pts)
    assert _dark_inside_oval(out, dst_pts) < 0.002


def test_small_turns_and_moves_reveal_nothing():
    """Below REVEAL_MIN_TURN, or without a turn, the warp is the plain piecewise-affine one."""
    size = 256
    src = warp.prepare_source(synth.textured(size), synth.face(size, yaw=20))
    for dst_pts in (synth.face(size, yaw=16), synth.face(size, yaw=20, roll=8, scale=1.1, shift=(5, 3))):
        assert warp.revealed(src, g.fit_head(dst_pts)) is None
    assert warp.revealed(src, g.fit_head(synth.face(size, yaw=8))) is not None


def _map_pair(size: int, **pose) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], int]:
    """(exact map, default map, default factor) for the canonical face moved to `pose` in a
    size×size crop (eyes half closed and mouth opened, so lids and lips fold)."""
    src_pts = synth.face(size)
    dst_pts = synth.open_mouth(synth.close_eyes(synth.face(size, **pose), 0.6), 0.25)
    src = warp.prepare_source(synth.textured(size), src_pts)
    return warp.backward_map(src, dst_pts, factor=1), warp.backward_map(src, dst_pts), warp.map_factor(size)


def test_model_size_crops_keep_the_exact_map():
    """The 256² crops (models, `reenact eval`) and anything up to EXACT_MAP_SIZE: bit-identical."""
    assert warp.map_factor(256) == warp.map_factor(warp.EXACT_MAP_SIZE) == 1
    exact, default, _ = _map_pair(256, yaw=25, roll=5)
    assert all(np.array_equal(a, b) for a, b in zip(exact, default))


def test_large_crops_use_a_coarse_map():
    assert warp.map_factor(1024) == 4 and warp.map_factor(2048) == 8 and warp.map_factor(528) == 4
    exact, coarse, _ = _map_pair(1024, yaw=10)
    assert not np.array_equal(exact[0], coarse[0])  # really the coarse path


@pytest.mark.parametrize("pose", [dict(yaw=10), dict(yaw=-35, pitch=8, roll=6)])
def test_coarse_map_is_sub_pixel_away_from_folds(pose):
    (ex, ey), (cx, cy), f = _map_pair(1024, **pose)
    err = np.hypot(ex - cx, ey - cy)
    assert (err <= 0.5).mean() > 0.99 and err.mean() < 0.1
    # Away from folds and squeezed slivers (where the exact map moves > 2 px per pixel), grown
    # by two blocks, and from the crop border (where the upsampling clamps): sub-pixel.
    steep = np.zeros(err.shape, np.uint8)
    steep[:, 1:] |= np.hypot(np.diff(ex, axis=1), np.diff(ey, axis=1)) > 2
    steep[1:, :] |= np.hypot(np.diff(ex, axis=0), np.diff(ey, axis=0)) > 2
    away = ~cv2.dilate(steep, np.ones((4 * f + 1, 4 * f + 1), np.uint8)).astype(bool)
    away[:f], away[-f:], away[:, :f], away[:, -f:] = False, False, False, False
    assert away.mean() > 0.85
    assert (err[away] <= 0.5).mean() > 0.999 and err[away].mean() < 0.01


@pytest.mark.parametrize("pose", [dict(yaw=10), dict(yaw=-35, pitch=8, roll=6)])
def test_coarse_map_samples_a_surface_at_folds(pose):
    """Next to a fold the coarse map must not sample between the two surfaces: every pixel's
    source position is (within 1.5 px) one the exact map has within a block of it."""
    (ex, ey), (cx, cy), f = _map_pair(1024, **pose)
    best = np.full(ex.shape, np.inf, np.float32)
    pad = [np.pad(m, f, mode="edge") for m in (ex, ey)]
    for dy in range(-f, f + 1):
        for dx in range(-f, f + 1):
            sx, sy = (p[f + dy:f + dy + ex.shape[0], f + dx:f + dx + ex.shape[1]] for p in pad)
            np.minimum(best, np.hypot(sx - cx, sy - cy), out=best)
    assert best.max() < 1.5, f"{(best >= 1.5).sum()} pixels sample between surfaces"
