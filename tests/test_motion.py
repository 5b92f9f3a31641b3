"""Motion retargeting: driver pose and expression onto the reference's face shape."""

import numpy as np
import pytest

from reenact import geometry as g
from reenact import motion
from tests import synth


def aperture(points):
    return np.linalg.norm(points[13] - points[14]) / np.linalg.norm(points[33] - points[263])


def test_self_retarget_is_identity():
    ref = synth.face(256, yaw=10)
    assert np.abs(motion.retarget(ref, ref) - ref).max() < 1e-6


def test_driver_pose_and_reference_position():
    ref = synth.face(256, scale=1.1, shift=(5, 3))
    drv = synth.face(900, yaw=-25, pitch=10, roll=5, scale=0.6, shift=(-100, 50))
    out = motion.retarget(ref, drv)
    assert np.allclose(g.head_pose(out).as_array(), [-25, 10, 5], atol=1e-4)
    fit_out, fit_ref = g.fit_head(out), g.fit_head(ref)
    assert fit_out.scale == pytest.approx(fit_ref.scale)
    assert np.allclose(fit_out.translation, fit_ref.translation)


def test_mouth_opening_transfers_in_reference_units():
    ref = synth.face(256)
    drv = synth.open_mouth(synth.face(600, scale=0.5, yaw=5), 0.3)
    out = motion.retarget(ref, drv)
    assert aperture(out) == pytest.approx(aperture(drv), rel=0.05)
    assert aperture(out) > aperture(ref) + 0.2


def test_reference_face_shape_is_kept():
    ref = synth.face(256)
    # A driver with a much wider face contour and longer nose (identity), neutral expression.
    can = g.canonical().points.copy()
    oval = list(g.FACE_OVAL)
    can[oval, 0] *= 1.25
    can[list(g.NOSE), 1] += 0.08
    drv = can * 80 + [300, 300, 0]
    out = motion.retarget(ref, drv)
    upper_oval = [i for i in oval if g.canonical().points[i, 1] < 0]
    # The driver's contour is 16 px wider at this scale; the output's stays within 2 px of the
    # reference's (what remains is the pose bias the driver's odd shape puts into its head fit).
    assert np.abs(out[upper_oval, :2] - ref[upper_oval, :2]).max() < 2.0, "face contour stays the reference's"
    nose_tip_shift = np.abs(out[1, :2] - ref[1, :2]).max()
    assert nose_tip_shift < 2.0, "the nose stays the reference's"
