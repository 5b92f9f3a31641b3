"""The direct render: a native-resolution warp drawn straight into the photo (one resampling),
against the crop render + paste-back it replaces, on a synthetic photo with known landmarks."""

import cv2
import numpy as np
import pytest

from reenact import align, engines, pipeline, regions
from reenact.config import InferenceConfig
from reenact.landmarks import Face
from tests import synth

H, W = 720, 960


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


@pytest.fixture(scope="module")
def photo():
    """A textured 960×720 photo with a rolled, turned face off-centre (a ~864² native crop)."""
    image = np.ascontiguousarray(synth.textured(W, seed=3)[:H])
    points = synth.face(W, roll=-10, yaw=12, scale=0.9, shift=(70, -80))
    return pipeline.Reference(image, Face(points=points), 1)


def _reenactor(ref, **kw) -> pipeline.Reenactor:
    return pipeline.Reenactor(ref, InferenceConfig(engine="warp", **kw))


def _crop_path(r: pipeline.Reenactor, driver: np.ndarray) -> np.ndarray:
    """What the crop render + paste-back would give for the driver landmarks `driver` (a state of
    the same crop prepared for that path: a direct state has no crop image)."""
    state = r.states[0]
    if r.engine.direct(state):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(engines, "DIRECT_FACTOR", float("inf"))
            state = r.engine.prepare(r.reference.image, r.reference.face, state.size)
    rgb, mask = r.engine.render(state, r.target(Face(points=driver)))
    return align.paste_back(r.reference.image, rgb, state.crop, mask)


def test_native_state_renders_directly_and_small_crops_do_not(photo):
    r = _reenactor(photo)
    assert r.states[0].size > 512 and r.engine.direct(r.states[0])
    assert r.states[0].image is None and r.states[0].head is None  # it samples the photo: no crop made
    for side, crop in ((256, 256), (384, 384), (400, 400)):  # the model crop; up to 2× it (eval's faces)
        small = _reenactor(pipeline.Reference(synth.textured(side), Face(points=synth.face(side)), 1))
        assert small.states[0].size == crop and not small.engine.direct(small.states[0])


def test_identity_target_reproduces_the_photo_in_place(photo):
    """No motion: the composed map is the identity, so the photo comes back (one resampling at
    the pixel centres) — a patch drawn in the wrong place or scale would not."""
    r = _reenactor(photo)
    patch = r.engine.render_patch(r.states[0], photo.face.points, photo.image.shape, r.states[0].crop)
    h, w = patch.alpha.shape
    assert h > 300 and w > 300 and patch.alpha.max() == pytest.approx(1.0)
    under = photo.image[patch.y:patch.y + h, patch.x:patch.x + w]
    diff = np.abs(patch.rgb.astype(int) - under.astype(int))[patch.alpha > 0]
    assert diff.max() <= 1 and diff.mean() < 0.01
    out = r.render(Face(points=photo.face.points))
    assert np.abs(out.astype(int) - photo.image.astype(int)).max() <= 2


@pytest.mark.parametrize("move", ["mouth", "turn"])
def test_direct_render_matches_crop_then_paste(photo, move):
    r = _reenactor(photo)
    pts = photo.face.points
    if move == "mouth":
        target = synth.open_mouth(pts, 0.35)  # a new opening: the cavity is drawn in the patch too
    else:
        target = synth.face(W, roll=-4, yaw=-8, pitch=6, scale=0.92, shift=(60, -70))
    direct = r.render(Face(points=target))
    old = _crop_path(r, target)
    state = r.states[0]
    patch = r.engine.render_patch(state, r.target(Face(points=target)), photo.image.shape, state.crop)
    h, w = patch.alpha.shape
    box = (slice(patch.y, patch.y + h), slice(patch.x, patch.x + w))
    assert _psnr(direct[box], old[box]) > 32  # the crop path resamples twice more: softer
    # Nothing outside the patch is touched, nor inside it where its weight is 0.
    outside = np.ones(photo.image.shape[:2], bool)
    outside[box] = False
    assert np.array_equal(direct[outside], photo.image[outside])
    zero = np.zeros_like(outside)
    zero[box] = patch.alpha == 0
    assert zero.any() and np.array_equal(direct[zero], photo.image[zero])
    # The patch holds every pixel the crop path changes (same place, same extent).
    changed = np.abs(old.astype(int) - photo.image.astype(int)).max(2) > 2
    assert not changed[outside].any()


@pytest.mark.parametrize("side", [256, 384])
def test_small_crops_are_still_crop_then_paste(side):
    """A face at up to twice the model crop's resolution keeps the crop render + paste-back, bit
    for bit."""
    image = synth.textured(side, seed=5)
    pts = synth.face(side, roll=5)
    r = _reenactor(pipeline.Reference(image, Face(points=pts), 1))
    assert r.states[0].size == side
    target = synth.open_mouth(pts, 0.3)
    assert np.array_equal(r.render(Face(points=target)), _crop_path(r, target))


def test_region_box_on_a_canvas_reads_and_draws_in_the_same_place():
    """`RegionBox.on`: a box of the face crop, used on an image that maps to the crop by a
    rotation + scale + shift (the direct render's patch), reads the same region and draws into
    the place that maps onto the box."""
    crop = synth.textured(512, seed=7)
    box = regions.RegionBox((300.0, 260.0), 120.0, 64)
    a = np.deg2rad(12)
    to_crop = np.array([[0.8 * np.cos(a), -0.8 * np.sin(a), 40.0], [0.8 * np.sin(a), 0.8 * np.cos(a), -30.0]])
    canvas = cv2.warpAffine(crop, to_crop, (600, 640), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    on = box.on(to_crop)
    assert _psnr(on.extract(canvas), box.extract(crop)) > 30
    white = np.full((64, 64, 3), 255, np.uint8)
    drawn = on.paste(np.zeros_like(canvas), white, np.ones((64, 64), np.float32))[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0:drawn.shape[0], 0:drawn.shape[1]]
    centre = np.array([(xs * drawn).sum(), (ys * drawn).sum()]) / drawn.sum()
    assert np.allclose(to_crop[:, :2] @ centre + to_crop[:, 2], box.centre, atol=1.0)
    side = np.sqrt((drawn > 127).sum()) * 0.8  # canvas pixels → crop pixels
    assert side == pytest.approx(box.side, rel=0.05)
    assert box.on(None) is box
