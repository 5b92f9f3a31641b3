"""On-disk tracks, gap filling, zero-phase smoothing, the stability metric and face following."""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

from reenact import geometry as g
from reenact import temporal, tracking
from reenact.landmarks import Face
from tests import synth

FPS = 25.0


def mouth(points):
    return np.linalg.norm(points[13, :2] - points[14, :2]) / np.linalg.norm(points[33, :2] - points[263, :2])


def smooth(frames, tmp_path, fps=FPS):
    with temporal.FrameFile(tmp_path / "o", mode="w") as out, \
            temporal.FrameFile(tmp_path / "w", (temporal.PARAMS,), mode="w") as work:
        temporal.smooth_sequence(iter(frames), fps, work, out)
        return [None if np.isnan(out[i][0, 0]) else out[i].astype(np.float64) for i in range(len(out))]


def talking(n=100, seed=0, noise=0.004):
    """Slow head turn + fast mouth (opens over 3 frames at 4 Hz) + detector-like noise."""
    rng = np.random.default_rng(seed)
    truth, noisy = [], []
    for i in range(n):
        t = i / FPS
        p = synth.face(300, yaw=15 * np.sin(2 * np.pi * 0.3 * t), shift=(10 * np.sin(2 * np.pi * 0.2 * t), 0))
        p = synth.open_mouth(p, 0.25 * max(0.0, np.sin(2 * np.pi * 4 * t)))
        truth.append(p)
        s = g.face_scale(p)
        q = p.copy()
        q[:, :2] += rng.normal(0, noise * s, 2) + rng.normal(0, 0.5 * noise * s, (len(p), 2))
        noisy.append(q)
    return truth, noisy


def test_frame_file_round_trip_and_torn_records(tmp_path):
    path = tmp_path / "t.f32"
    a = np.arange(478 * 3, dtype=np.float32).reshape(478, 3)
    with temporal.FrameFile(path, mode="w") as ff:
        ff.append(a)
        ff.append(temporal.missing())
        ff[2] = a + 1
        assert len(ff) == 3
    with open(path, "ab") as f:  # a writer killed mid-record leaves a partial record
        f.write(b"\0" * 100)
    with temporal.FrameFile(path) as ff:
        assert len(ff) == 3
        assert np.array_equal(ff[0], a) and np.isnan(ff[1]).all() and np.array_equal(ff[2], a + 1)
        with pytest.raises(IndexError):
            ff[3]



def test_a_frame_file_that_failed_to_open_is_quietly_collected(tmp_path, monkeypatch):
    """Ctrl-C during `os.open` (or a missing file) leaves an instance without a file: its
    finalizer printed "Exception ignored in FrameFile.__del__ … AttributeError" on the way out."""
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(FileNotFoundError):
        temporal.FrameFile(tmp_path / "absent")
    gc.collect()
    assert unraisable == []

@pytest.mark.parametrize("found, expect", [
    ("FFFF", "FFFF"),
    ("F..F", "FIIF"),        # short gap: interpolated
    ("F....F", "FHHHHF"),    # longer than max_gap=3: held
    ("..FF.", "HHFFH"),      # short lead-in: first face held; the end: last face held
    ("....FF", "SSSSFF"),    # long lead-in: the reference shown
    ("....", "SSSS"),
])
def test_gap_status(found, expect):
    codes = {"F": temporal.FACE, "I": temporal.INTERPOLATED, "H": temporal.HELD, "S": temporal.STILL}
    status = temporal.gap_status(np.array([c == "F" for c in found]), max_gap=3)
    assert status.tolist() == [codes[c] for c in expect]


def test_filled_interpolates_linearly_and_holds(tmp_path):
    a, b = synth.face(256), synth.face(256, shift=(30, 0))
    with temporal.FrameFile(tmp_path / "t", mode="w") as raw:
        for p in (temporal.missing(), a, temporal.missing(), temporal.missing(), b, temporal.missing()):
            raw.append(p)
        status = temporal.gap_status(np.array([False, True, False, False, True, False]), max_gap=3)
        out = list(temporal.filled(raw, status))
    assert np.allclose(out[0], a, atol=1e-4) and np.allclose(out[5], b, atol=1e-4)
    assert np.allclose(out[2], a + (b - a) / 3, atol=1e-4) and np.allclose(out[3], a + 2 * (b - a) / 3, atol=1e-4)


def test_params_round_trip():
    p = synth.open_mouth(synth.face(300, yaw=20, pitch=-8, roll=5, scale=0.8, shift=(7, -4)), 0.1)
    assert np.abs(temporal.from_params(temporal.to_params(p)) - p).max() < 1e-6


def test_smoothing_removes_jitter_and_keeps_fast_mouth_motion(tmp_path):
    truth, noisy = talking()
    out = smooth(noisy, tmp_path)
    jit = [temporal.stability(x).jitter for x in (truth, noisy, out)]
    assert jit[2] < 0.6 * jit[1], jit
    err = lambda xs: np.sqrt(np.mean([(mouth(x) - mouth(t)) ** 2 for x, t in zip(xs, truth)]))  # noqa: E731
    # The mouth opens and closes 4 times a second; smoothing must not flatten it: the smoothed
    # mouth opening is at least as close to the truth as the noisy one was (expression error
    # must not grow; the shape filter is tuned for that, benchmarks/tune_smoothing.py).
    assert err(out) <= err(noisy), (err(noisy), err(out))
    peaks = lambda xs: np.percentile([mouth(x) for x in xs], 95)  # noqa: E731
    assert peaks(out) == pytest.approx(peaks(truth), abs=0.02)


def test_smoothing_has_no_lag_and_restarts_after_missing_frames(tmp_path):
    # A steady move (2 px a frame): zero-phase smoothing with reflected ends leaves it in place,
    # up to the ends of each run of faces.
    ramp = [synth.face(300, shift=(2.0 * i, 0)) for i in range(40)]
    out = smooth(ramp[:20] + [None] + ramp[20:], tmp_path)
    assert out[20] is None
    kept = [o for o in out if o is not None]
    assert max(np.abs(o - r).max() for o, r in zip(kept, ramp)) < 0.1


def test_process_track_fills_and_smooths(tmp_path):
    _, noisy = talking(40)
    with temporal.FrameFile(tmp_path / "raw", mode="w") as raw, temporal.FrameFile(tmp_path / "out", mode="w") as out:
        for i, p in enumerate(noisy):
            raw.append(temporal.missing() if i in (10, 11) else p)
        status = temporal.process_track(raw, out, tmp_path / "work", fps=FPS, max_gap=5, smooth=True)
        assert len(out) == 40 and not np.isnan(out[10]).any()
    assert status[10] == status[11] == temporal.INTERPOLATED and (status != temporal.INTERPOLATED).sum() == 38
    assert not (tmp_path / "work").exists()


def test_stability_metric():
    still = [synth.face(256)] * 5
    assert temporal.stability(still).jitter == 0 and temporal.stability(still).displacement == 0
    moving = [synth.face(256, shift=(0.82 * i, 0)) for i in range(6)]  # 1 % of the 82 px eye distance per frame
    s = temporal.stability(moving)
    assert s.displacement == pytest.approx(1.0, rel=1e-3) and s.jitter == pytest.approx(0, abs=1e-6)
    assert temporal.stability([moving[0], None, moving[1]]).displacement == 0  # gaps break runs


def face_at(x: float, size: float = 1.0) -> Face:
    return Face(points=synth.face(256, scale=size, shift=(x, 0)).astype(np.float32))


def test_select_face_largest_or_left_to_right():
    faces = [face_at(60, 0.5), face_at(-60, 0.3), face_at(0, 0.4)]  # Landmarker order: largest first
    assert tracking.select_face(faces, "largest") is faces[0]
    assert [tracking.select_face(faces, i) for i in range(3)] == [faces[1], faces[2], faces[0]]
    assert tracking.select_face(faces, 3) is None and tracking.select_face([], "largest") is None


def test_follower_keeps_the_chosen_face_when_another_grows():
    follow = tracking.FaceFollower(0)  # the leftmost face
    left, right = face_at(-60, 0.3), face_at(60, 0.3)
    assert follow.pick([right, left]) is left
    # The right person comes closer (now the largest), the left one moves a little: still left.
    left2, right2 = face_at(-55, 0.3), face_at(50, 0.6)
    assert follow.pick([right2, left2]) is left2
    # The left person leaves: no face rather than the other person.
    assert follow.pick([right2]) is None


class _FakeLandmarker:
    """Stands in for the video Landmarker in `detect_in_order`: records which frames (their
    numbers, written in pixel 0) each instance saw, in what order, from which threads; finishes
    in a scrambled order (sleeps); raises on frame `fail`."""

    made: list["_FakeLandmarker"] = []
    fail = -1

    def __init__(self, **kw) -> None:
        self.seen: list[int] = []
        self.threads: set[str] = set()
        self.closed = False
        _FakeLandmarker.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.closed = True

    def detect(self, frame: np.ndarray) -> list:
        import threading
        import time

        k = int(frame[0, 0, 0])
        time.sleep(0.004 * ((k * 7) % 3))
        if k == _FakeLandmarker.fail:
            raise RuntimeError(f"landmarker broke on frame {k}")
        self.seen.append(k)
        self.threads.add(threading.current_thread().name)
        return [k]


@pytest.fixture
def fake_landmarker(monkeypatch):
    _FakeLandmarker.made, _FakeLandmarker.fail = [], -1
    monkeypatch.setattr(tracking, "Landmarker", _FakeLandmarker)
    return _FakeLandmarker


def _numbered(n: int, pulled: list[int] | None = None):
    for k in range(n):
        if pulled is not None:
            pulled.append(k)
        yield np.full((2, 2, 3), k, np.uint8)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_detect_in_order_keeps_frame_order_and_gives_each_landmarker_every_nth_frame(fake_landmarker, workers):
    pulled: list[int] = []
    out = []
    for frame, faces in tracking.detect_in_order(_numbered(40, pulled), max_faces=4, workers=workers):
        out.append((int(frame[0, 0, 0]), faces))
        # bounded: never more than DETECT_AHEAD frames per landmarker decoded ahead of the consumer
        assert len(pulled) - len(out) <= workers * tracking.DETECT_AHEAD
    assert out == [(k, [k]) for k in range(40)]  # each frame with its own result, in order
    assert len(fake_landmarker.made) == workers
    for j, lm in enumerate(fake_landmarker.made):
        assert lm.seen == list(range(j, 40, workers))  # its own frames, in order: it can track
        assert lm.closed
    if workers > 1:
        assert all(lm.threads and "MainThread" not in lm.threads for lm in fake_landmarker.made)


def test_detect_in_order_raises_a_landmarkers_error_and_closes_everything(fake_landmarker):
    import threading

    fake_landmarker.fail = 9
    before = threading.active_count()
    got = []
    with pytest.raises(RuntimeError, match="frame 9"):
        for frame, _ in tracking.detect_in_order(_numbered(40), max_faces=4, workers=2):
            got.append(int(frame[0, 0, 0]))
    assert got == list(range(9))  # the frames before the broken one, nothing after it
    assert all(lm.closed for lm in fake_landmarker.made)
    assert threading.active_count() == before  # the landmarker threads are gone


def test_tracking_workers_is_between_one_and_the_maximum():
    assert 1 <= tracking.tracking_workers() <= tracking.TRACK_WORKERS_MAX
