"""Shape encoder E: parsing-map channels from landmarks."""

import numpy as np
import pytest

from reenact import parsing
from tests import synth

I = parsing.INDEX


def area(pm, name):
    return float(pm[I[name]].sum())


def test_shape_range_and_exclusive_regions():
    pm = parsing.parsing_map(synth.face(), 256)
    assert pm.shape == (parsing.N_CHANNELS, 256, 256) and pm.dtype == np.float32
    assert pm.min() >= 0 and pm.max() <= 1
    regions = [i for n, i in I.items() if n != "contour"]
    assert pm[regions].sum(0).max() <= 1.0 + 1e-5
    for name in parsing.CHANNELS:
        assert area(pm, name) > 0, f"channel {name} is empty on a frontal face"


def test_any_size_scales_areas():
    a = parsing.parsing_map(synth.face(256), 256)
    b = parsing.parsing_map(synth.face(512), 512)
    for name in ("skin", "nose", "eye_r", "upper_lip", "mouth"):
        assert area(b, name) / area(a, name) == pytest.approx(4, rel=0.12)


def test_mouth_interior_grows_when_mouth_opens():
    closed = parsing.parsing_map(synth.face(), 256)
    half = parsing.parsing_map(synth.open_mouth(synth.face(), 0.15), 256)
    wide = parsing.parsing_map(synth.open_mouth(synth.face(), 0.35), 256)
    assert area(closed, "mouth") < area(half, "mouth") < area(wide, "mouth")
    assert area(wide, "mouth") > 5 * max(area(closed, "mouth"), 1.0)


def test_irises_stay_inside_eyes():
    pm = parsing.parsing_map(synth.face(), 256)
    for side in ("r", "l"):
        iris = pm[I[f"iris_{side}"]] > 0.5
        assert iris.any()
        from reenact import geometry as g
        import cv2
        pts = synth.face()[list(g.RIGHT_EYE if side == "r" else g.LEFT_EYE), :2]
        eye = np.zeros((256, 256), np.uint8)
        cv2.fillPoly(eye, [np.round(pts).astype(np.int32)], 1)
        assert (iris & (cv2.dilate(eye, np.ones((3, 3))) == 0)).sum() == 0


def test_near_side_hides_far_side_at_large_yaw():
    pm = parsing.parsing_map(synth.face(yaw=50), 256)
    # Turned towards image right: the subject's left eye (image right) is the far one.
    assert area(pm, "eye_l") < 0.8 * area(pm, "eye_r")
    front = parsing.parsing_map(synth.face(), 256)
    assert area(front, "eye_l") == pytest.approx(area(front, "eye_r"), rel=0.05)


def test_colorize_and_face_mask():
    pm = parsing.parsing_map(synth.face(128), 128)
    rgb = parsing.colorize(pm)
    assert rgb.shape == (128, 128, 3) and rgb.dtype == np.uint8
    m = parsing.face_mask(pm)
    assert m[64, 64] > 0.99 and m[0, 0] == 0


def test_rejects_wrong_landmark_count():
    with pytest.raises(ValueError):
        parsing.parsing_map(np.zeros((68, 2)), 64)
