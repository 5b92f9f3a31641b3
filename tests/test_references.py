"""Nearest-pose reference selection (k-shot) and its hysteresis."""

import numpy as np
import pytest

from reenact import geometry as g
from reenact import references as refs
from tests import synth


def cand(yaw=0.0, pitch=0.0, roll=0.0, expr=None):
    return refs.Candidate(pose=np.array([yaw, pitch, roll]), expression=None if expr is None else np.asarray(expr))


def test_picks_matching_pose_on_constructed_landmarks():
    # References: frontal, turned left, turned right, looking down — built as landmark sets, poses
    # measured from the landmarks like the pipeline does.
    poses = [(0, 0, 0), (-30, 0, 0), (30, 0, 0), (0, 20, 0)]
    bank = [refs.Candidate(pose=g.head_pose(synth.face(yaw=y, pitch=p, roll=r)).as_array()) for y, p, r in poses]
    for k, (y, p, r) in enumerate(poses):
        drv = refs.Candidate(pose=g.head_pose(synth.face(yaw=y + 4, pitch=p - 3, roll=r + 8)).as_array())
        assert refs.nearest(bank, drv) == k


def test_expression_breaks_pose_ties():
    bank = [cand(10, expr=[0.3, 0.0]), cand(10, expr=[0.0, 0.0])]
    assert refs.nearest(bank, cand(10, expr=[0.02, 0.0])) == 1
    assert refs.nearest(bank, cand(10, expr=[0.28, 0.0])) == 0


def test_hysteresis_ignores_small_pose_noise():
    sel = refs.Selector([cand(-10), cand(10)], margin=5.0)
    rng = np.random.default_rng(0)
    # A driver sitting on the boundary (yaw 0) with ±2° of landmark noise must not flicker.
    choices = [sel.choose(cand(rng.uniform(-2, 2), rng.uniform(-2, 2))) for _ in range(200)]
    assert len(set(choices)) == 1
    assert sel.segments == [[0, 199, choices[0]]]
    # Without hysteresis the same input flickers.
    bare = refs.Selector([cand(-10), cand(10)], margin=0.0)
    rng = np.random.default_rng(0)
    flicker = [bare.choose(cand(rng.uniform(-2, 2), rng.uniform(-2, 2))) for _ in range(200)]
    assert len(bare.segments) > 20 and len(set(flicker)) == 2


def test_hysteresis_still_switches_on_real_turns():
    sel = refs.Selector([cand(-30), cand(30)], margin=5.0)
    yaws = list(np.linspace(-35, 35, 71))
    got = [sel.choose(cand(y)) for y in yaws]
    assert got[0] == 0 and got[-1] == 1
    switch = got.index(1)
    assert 2.5 <= yaws[switch] <= 4  # just past the midpoint plus half the margin
    assert sel.counts == [switch, len(yaws) - switch]


def test_hold_keeps_choice_and_records_frames():
    sel = refs.Selector([cand(0), cand(40)])
    assert sel.hold() is None  # nothing chosen yet
    sel.choose(cand(38))
    assert sel.hold() == 1
    assert sel.segments == [[1, 2, 1]] and sel.counts == [0, 2]


def test_empty_bank_is_an_error():
    with pytest.raises(ValueError):
        refs.nearest([], cand())
