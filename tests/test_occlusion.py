"""Hands in front of the face (`reenact.occlusion`): the covered share of the lower face, and
which frames `HandWatch` marks."""

from pathlib import Path

import numpy as np
import pytest

from reenact import geometry as g
from reenact import media, occlusion
from reenact.landmarks import Face
from tests import synth

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PEXELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "samples" / "pyfeat" / "WolfgangLanger_Pexels.mp4"


def _hand(centre: np.ndarray, radius: float) -> np.ndarray:
    """21 points on a disc: a stand-in hand's landmarks."""
    a = np.linspace(0, 2 * np.pi, 21, endpoint=False)
    return np.stack([centre[0] + radius * np.cos(a), centre[1] + radius * np.sin(a)], 1).astype(np.float32)


def test_a_hand_over_the_mouth_covers_the_lower_face_and_one_on_the_forehead_does_not():
    points = synth.face(256)
    mouth, forehead = points[13, :2], points[10, :2]
    scale = g.face_scale(points)
    assert occlusion.covered_share(points, []) == 0.0
    assert occlusion.covered_share(points, [_hand(forehead, 0.4 * scale)]) == 0.0
    over = occlusion.covered_share(points, [_hand(mouth, 0.5 * scale)])
    assert occlusion.COVER_SHARE < over < 1.0
    assert occlusion.covered_share(points, [_hand(mouth, 5 * scale)]) == pytest.approx(1.0)
    # two hands cover more than one
    left, right = points[61, :2], points[291, :2]
    one = occlusion.covered_share(points, [_hand(left, 0.3 * scale)])
    assert occlusion.covered_share(points, [_hand(left, 0.3 * scale), _hand(right, 0.3 * scale)]) > one


def test_hand_watch_marks_covered_frames_and_their_neighbours(monkeypatch):
    """The tracker runs on every HAND_EVERY-th frame with a face; a frame counts as covered when
    the frame looked at before it was too (a lone false hand does not); a covered frame marks
    HAND_REACH frames either side too; a frame without a face is not looked at."""
    points = synth.face(256)
    looked: list[int] = []
    every, reach = occlusion.HAND_EVERY, occlusion.HAND_REACH
    start, faceless = 3 * every, 7 * every
    hands_on = {start, start + every, start + 2 * every, 12 * every}  # three looks in a row; a lone false one

    class Tracker:
        def find(self, rgb):
            looked.append(int(rgb[0, 0, 0]))
            return [_hand(points[13, :2], 40.0)] if rgb[0, 0, 0] in hands_on else []

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(occlusion, "HandTracker", Tracker)
    watch = occlusion.HandWatch()
    n = 14 * every
    for i in range(n):
        watch(np.full((8, 8, 3), i, np.uint8), None if i == faceless else Face(points=points))
    assert watch.frames == n
    covered = watch.covered()  # waits for the tracker's thread
    assert looked == [i for i in range(0, n, every) if i != faceless]
    assert covered.shape == (n,)
    assert list(np.flatnonzero(covered)) == list(range(start - reach, start + 2 * every + reach + 1))
    # as if the video had ended sooner (a source cut short): a hand needs its second look in it
    assert not watch.covered(start + every).any() and watch.covered(start + every).shape == (start + every,)
    k = start + every + 1
    assert list(np.flatnonzero(watch.covered(k))) == list(range(start - reach, k))


def test_hand_watch_hands_on_its_threads_error_and_stops(monkeypatch):
    class Broken:
        def __enter__(self):
            raise RuntimeError("no hand model")

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(occlusion, "HandTracker", Broken)
    watch = occlusion.HandWatch()
    for i in range(40):  # more frames than its queue holds: the failed thread takes none
        watch(np.zeros((8, 8, 3), np.uint8), Face(points=synth.face(256)))
    with pytest.raises(RuntimeError, match="no hand model"):
        watch.covered()
    idle = occlusion.HandWatch()
    idle(np.zeros((8, 8, 3), np.uint8), Face(points=synth.face(256)))
    idle.close()  # stops a waiting thread
    assert idle._thread is None


@pytest.mark.skipif(not PEXELS.exists(), reason="needs ../shared/data/samples/pyfeat (the Pexels clip)")
def test_the_hand_tracker_finds_a_hand_over_a_real_mouth():
    from reenact.landmarks import HandTracker, Landmarker

    frames = [f for k, f in enumerate(media.VideoReader(PEXELS)) if k in (20, 100)]  # no hand; hand over the mouth
    shares = []
    with Landmarker(mode="image") as lm:
        for f in frames:
            with HandTracker() as hands:
                shares.append(occlusion.covered_share(lm.detect(f)[0].points, hands.find(f)))
    assert shares[0] == 0.0 and shares[1] >= occlusion.COVER_SHARE, shares
    with HandTracker() as hands:
        assert hands.find(media.read_image(EXAMPLES / "ref.jpg")) == []
