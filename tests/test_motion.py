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



@pytest.mark.parametrize("turn", [90, -90, 180])
def test_a_reference_on_its_side_keeps_its_frame_under_absolute_motion(turn):
    """A photo on its side (no EXIF orientation) or a person lying down: the driver's head
    rotation applies in the reference's quarter-turned frame — the result is the upright
    reference's result turned with it — instead of turning the head upright on its neck."""
    ref = synth.face(256, yaw=8, roll=3)
    drv = synth.open_mouth(synth.face(400, yaw=-20, pitch=8, roll=-6), 0.3)
    q = g.pose_to_rotation(g.HeadPose(yaw=0.0, pitch=0.0, roll=float(turn)))
    turned = ref @ q.T  # the photo turned about its origin (in-plane: z unchanged)
    out = motion.retarget(turned, drv)
    assert np.abs(out - motion.retarget(ref, drv) @ q.T).max() < 1e-6
    assert g.head_pose(out).roll == pytest.approx(turn - 6, abs=1e-4)
    tilted = synth.face(256, roll=55)  # a tilt, not a turned photo: the driver's roll as before
    assert g.head_pose(motion.retarget(tilted, drv)).roll == pytest.approx(-6, abs=1e-4)

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


# ───────────────────────────── relative motion ─────────────────────────────

def eye_aperture(points):
    return np.linalg.norm(points[159] - points[145]) / np.linalg.norm(points[33] - points[133])


def other_identity(size=500, scale=0.7, **pose):
    """A driver whose face differs from the canonical one: bigger eyes, wider mouth, higher brows."""
    can = g.canonical().points.copy()
    for eye, (a, b) in ((g.RIGHT_EYE + g.RIGHT_IRIS, (33, 133)), (g.LEFT_EYE + g.LEFT_IRIS, (263, 362))):
        centre = (can[a] + can[b]) / 2
        can[list(eye), 1] = centre[1] + 1.6 * (can[list(eye), 1] - centre[1])
    lips = list(dict.fromkeys(g.LIPS_OUTER + g.LIPS_INNER))
    can[lips, 0] *= 1.3
    can[list(g.RIGHT_BROW + g.LEFT_BROW), 1] -= 0.08
    rot = g.pose_to_rotation(g.HeadPose(pose.get("yaw", 0.0), pose.get("pitch", 0.0), pose.get("roll", 0.0)))
    return can @ rot.T * (0.32 * size * scale) + [size / 2, size / 2, 0]


def test_relative_anchor_frame_is_the_reference_exactly():
    ref = synth.face(256, yaw=10, scale=1.1, shift=(4, -3))
    anchor = synth.open_mouth(other_identity(yaw=-20, pitch=5), 0.1)
    out = motion.retarget_relative(ref, anchor, anchor)
    assert np.abs(out - ref).max() < 1e-6


def test_relative_rotation_composes_with_the_reference_pose():
    ref = synth.face(256, yaw=10, pitch=-5)
    anchor = synth.face(400, yaw=-20, pitch=5, roll=3, scale=0.6)
    drv = synth.face(400, yaw=-5, pitch=12, roll=-4, scale=0.6)
    out = motion.retarget_relative(ref, drv, anchor)
    r = [g.fit_head(p).rotation for p in (ref, drv, anchor)]
    assert np.allclose(g.fit_head(out).rotation, r[1] @ r[2].T @ r[0], atol=1e-6)
    # A pure turn: the reference's yaw plus the driver's change of yaw.
    out = motion.retarget_relative(synth.face(256, yaw=10), synth.face(400, yaw=5), synth.face(400, yaw=-10))
    assert g.head_pose(out).yaw == pytest.approx(25, abs=1e-4)


def test_relative_translation_and_scale_follow_the_driver_in_reference_units():
    ref = synth.face(256)
    anchor = synth.face(800, scale=0.5)  # the driver's face is half the reference's size
    drv = synth.face(800, scale=0.55, shift=(10, 0))
    fit_out, fit_ref = g.fit_head(motion.retarget_relative(ref, drv, anchor)), g.fit_head(ref)
    assert fit_out.scale == pytest.approx(fit_ref.scale * 1.1, rel=1e-6)
    shift = fit_out.translation - fit_ref.translation
    assert shift[0] == pytest.approx(10 * 256 / 800 / 0.5, rel=1e-6) and abs(shift[1]) < 1e-6
    far = synth.face(800, scale=0.5, shift=(400, 0))  # far beyond what the crop allows: clamped
    shift = g.fit_head(motion.retarget_relative(ref, far, anchor)).translation - fit_ref.translation
    assert np.linalg.norm(shift) == pytest.approx(motion.MAX_SHIFT * fit_ref.scale, rel=1e-6)


def test_relative_keeps_the_reference_face_shape_absolute_copies_the_driver():
    ref = synth.face(256)
    anchor = other_identity(yaw=5)
    drv = synth.open_mouth(other_identity(yaw=5), 0.2)
    rel = motion.retarget_relative(ref, drv, anchor)
    ab = motion.retarget(ref, drv)
    # Eye size: the driver's eyes are 1.6× taller; relative keeps the reference's, absolute copies.
    assert eye_aperture(rel) == pytest.approx(eye_aperture(ref), rel=0.01)
    assert eye_aperture(ab) == pytest.approx(1.6 * eye_aperture(ref), rel=0.05)
    # Mouth width: the driver's is 1.3× wider; relative keeps the reference's width...
    width = lambda p: np.linalg.norm(p[61] - p[291]) / np.linalg.norm(p[33] - p[263])  # noqa: E731
    assert width(rel) == pytest.approx(width(ref), rel=0.02)
    assert width(ab) == pytest.approx(1.3 * width(ref), rel=0.05)
    # ...but the opening (the change from the anchor) is transferred.
    assert aperture(rel) - aperture(ref) == pytest.approx(aperture(drv) - aperture(anchor), rel=0.05)


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_transfer_pose_keeps_the_reference_expression(mode):
    ref = synth.open_mouth(synth.face(256), 0.15)
    anchor = synth.face(400, scale=0.6)
    drv = synth.face(400, yaw=-20, pitch=8, scale=0.6)  # closed mouth, turned head
    out = motion.Retargeter(ref, mode=mode, anchor=anchor, transfer="pose")(drv)
    assert np.allclose(g.to_canonical(out), g.to_canonical(ref), atol=1e-6), "shape is the reference's"
    assert np.allclose(g.head_pose(out).as_array(), [-20, 8, 0], atol=1e-4)


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_transfer_expression_keeps_the_reference_pose(mode):
    ref = synth.face(256, yaw=12, shift=(3, 2))
    anchor = synth.face(400, scale=0.6)
    drv = synth.open_mouth(synth.face(400, yaw=-25, scale=0.6, shift=(30, 0)), 0.25)
    out = motion.Retargeter(ref, mode=mode, anchor=anchor, transfer="expression")(drv)
    fit_out, fit_ref = g.fit_head(out), g.fit_head(ref)
    # (the open mouth nudges the rigid fit by a few hundredths of a degree)
    assert np.allclose(g.head_pose(out).as_array(), g.head_pose(ref).as_array(), atol=0.1)
    assert np.allclose(fit_out.translation[:2], fit_ref.translation[:2], atol=0.3)
    assert aperture(out) > aperture(ref) + 0.2


def moved(out, ref, group, tol=1e-6):
    """With transfer="expression" the output is posed exactly like the reference: compare points."""
    return np.abs(out[list(group)] - ref[list(group)]).max() > tol


@pytest.mark.parametrize("regions, expect", [
    (("mouth",), {"mouth"}), (("eyes",), {"eyes"}), (("brows",), {"brows"}),
    (("mouth", "eyes"), {"mouth", "eyes"}), (("mouth", "eyes", "brows"), {"mouth", "eyes", "brows"})])
def test_regions_move_only_their_landmark_groups(regions, expect):
    ref = synth.face(256)
    anchor = synth.face(400, scale=0.6)
    drv = other_identity(400, scale=0.6)  # every part differs from the anchor's
    drv = synth.open_mouth(drv, 0.2)
    groups = {"mouth": g.LIPS_OUTER + g.LIPS_INNER, "eyes": g.RIGHT_EYE + g.LEFT_EYE + g.RIGHT_IRIS,
              "brows": g.RIGHT_BROW + g.LEFT_BROW}
    out = motion.Retargeter(ref, mode="relative", anchor=anchor, transfer="expression",
                            components=motion.components_for(regions))(drv)
    assert {name for name, idx in groups.items() if moved(out, ref, idx)} == expect


def test_anchor_is_the_frame_nearest_the_reference():
    ref = synth.open_mouth(synth.face(256, yaw=10), 0.1)
    frames = [synth.face(400, yaw=10),                                # same pose, mouth closed
              synth.open_mouth(synth.face(400, yaw=-15), 0.1),       # same mouth, turned away
              synth.open_mouth(synth.face(400, yaw=8, scale=0.5), 0.1),  # near in both
              synth.open_mouth(synth.face(400, yaw=30), 0.3)]
    idx, dist = motion.choose_anchor(ref, enumerate(frames))
    assert idx == 2 and dist == pytest.approx(2.0, abs=0.1)
    with pytest.raises(ValueError):
        motion.choose_anchor(ref, [])


def opening(points, pairs):
    c = g.to_canonical(points)
    return min(c[lo, 1] - c[up, 1] for up, lo in pairs)


def test_relative_lips_never_cross_and_blinks_close_fully():
    ref = synth.face(256)  # closed mouth, open eyes
    anchor = synth.open_mouth(synth.face(400, scale=0.6), 0.05)  # the driver's mouth a little open
    shut = synth.face(400, scale=0.6)
    out = motion.retarget_relative(ref, shut, anchor)
    assert opening(ref, motion.LIP_PAIRS) < 0.04, "(else the test would not test anything)"
    assert opening(out, motion.LIP_PAIRS) >= -1e-3, "the lips met, they did not cross"
    # A driver with half-open eyes blinks: the reference's wider eyes close completely too.
    sleepy = synth.close_eyes(synth.face(400, scale=0.6), 0.5)
    out = motion.retarget_relative(ref, synth.close_eyes(synth.face(400, scale=0.6), 1.0), sleepy)
    assert eye_aperture(out) < 0.1 * eye_aperture(ref)
    assert np.abs(motion.retarget_relative(ref, sleepy, sleepy) - ref).max() < 1e-6
