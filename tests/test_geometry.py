"""Canonical face, rigid fits and head pose."""

import numpy as np
import pytest

from reenact import geometry as g
from tests import synth


def test_canonical_is_symmetric_and_scaled():
    c = g.canonical()
    assert c.points.shape == (478, 3)
    assert np.array_equal(c.mirror[c.mirror], np.arange(478)), "mirror map must be an involution"
    reflected = c.points[c.mirror] * [-1, 1, 1]
    assert np.abs(reflected - c.points).max() < 1e-5
    assert np.linalg.norm(c.points[33] - c.points[263]) == pytest.approx(1.0, abs=1e-5)
    assert c.points[1, 2] < c.points[234, 2], "nose tip must be nearer the camera than the cheek"


@pytest.mark.parametrize("pose", [(0, 0, 0), (30, 0, 0), (-25, 10, 5), (10, -15, -20), (60, 5, 0)])
def test_pose_round_trip(pose):
    p = g.HeadPose(*pose)
    assert np.allclose(g.rotation_to_pose(g.pose_to_rotation(p)).as_array(), pose, atol=1e-9)
    assert np.allclose(g.head_pose(synth.face(yaw=pose[0], pitch=pose[1], roll=pose[2])).as_array(),
                       pose, atol=1e-6)


def test_pose_sign_conventions():
    # yaw > 0: the nose moves towards the image's right; pitch > 0: nose moves down; roll > 0:
    # the right eye (image left) moves up... i.e. clockwise tilt moves the image-left eye up.
    front = synth.face()
    assert synth.face(yaw=20)[1, 0] > front[1, 0]
    assert synth.face(pitch=20)[1, 1] > front[1, 1]
    tilted = synth.face(roll=20)
    assert tilted[263, 1] > tilted[33, 1]


def test_fit_similarity_recovers_transform():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    rot = g.pose_to_rotation(g.HeadPose(20, -10, 35))
    dst = 2.5 * src @ rot.T + [1.0, -2.0, 3.0]
    fit = g.fit_similarity(src, dst)
    assert fit.scale == pytest.approx(2.5)
    assert np.allclose(fit.rotation, rot)
    assert np.allclose(fit.apply(src), dst)
    assert np.allclose(fit.inverse_apply(dst), src)
    with pytest.raises(ValueError):
        g.fit_similarity(np.zeros((5, 3)), dst[:5])


def test_mirror_points_negates_yaw_and_roll():
    pts = synth.face(yaw=25, roll=8, pitch=5)
    flipped = g.mirror_points(pts, width=256)
    pose = g.head_pose(flipped)
    assert pose.yaw == pytest.approx(-25, abs=1e-4)
    assert pose.roll == pytest.approx(-8, abs=1e-4)
    assert pose.pitch == pytest.approx(5, abs=1e-4)
