"""Crop alignment and paste-back."""

import numpy as np
import pytest

from reenact import align
from reenact import geometry as g
from tests import synth


def test_align_puts_the_face_on_the_template():
    # A face rotated (roll), scaled and shifted in a big frame lands on the template in the crop.
    pts = synth.face(1000, roll=25, scale=0.7, shift=(120, -80))
    crop = align.align(pts, 256)
    inside = crop.points_to_crop(pts)
    tmpl = align.template(256)
    idx = list(g.RIGID)
    assert np.abs(inside[idx, :2] - tmpl[idx, :2]).max() < 1e-6
    back = crop.points_to_frame(inside)
    assert np.allclose(back, pts)


def test_crop_paste_round_trip_outside_mask_is_exact():
    frame = synth.textured(640)
    frame = np.ascontiguousarray(np.roll(frame, 37, axis=1))
    pts = synth.face(640, roll=-12, scale=0.8, shift=(40, 20))
    crop = align.align(pts, 256)
    patch = crop.extract(frame)
    mask = np.zeros((256, 256), np.float32)
    mask[64:192, 64:192] = 1.0
    mask = align.feathered_mask(mask, feather=6) * align.edge_falloff(256, 16)
    out = align.paste_back(frame, patch, crop, mask)
    # Outside the warped mask nothing may change, bit for bit.
    from reenact.align import apply_affine  # noqa: F401  (exercised via Crop)
    import cv2
    alpha = cv2.warpAffine(mask, crop.inverse, (640, 640), flags=cv2.INTER_LINEAR)
    assert np.array_equal(out[alpha == 0], frame[alpha == 0])
    # Inside, pasting the unmodified crop reproduces the frame up to resampling error.
    inner = alpha > 0.99
    assert inner.sum() > 5000
    assert np.abs(out[inner].astype(int) - frame[inner]).mean() < 4.0

    # A different patch really changes the inside.
    other = np.zeros_like(patch)
    changed = align.paste_back(frame, other, crop, mask)
    assert changed[inner].mean() < 5


def test_extract_downscales_large_frames_without_aliasing():
    big = synth.textured(2048, seed=3)
    pts = synth.face(2048, scale=2.0)
    crop = align.align(pts, 128)
    assert crop.scale < 0.5
    patch = crop.extract(big)
    assert patch.shape == (128, 128, 3) and patch.dtype == np.uint8


def test_edge_falloff_is_zero_at_border_one_inside():
    f = align.edge_falloff(64, 8)
    assert f[0].max() == 0 and f[:, -1].max() == 0
    assert f[32, 32] == pytest.approx(1.0)


def test_paste_outside_frame_is_harmless():
    frame = synth.textured(100)
    pts = synth.face(100, shift=(400, 400))
    crop = align.align(pts, 64)
    out = align.paste_back(frame, np.zeros((64, 64, 3), np.uint8), crop, np.ones((64, 64), np.float32))
    assert np.array_equal(out, frame)
