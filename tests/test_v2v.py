"""Video-to-video (`reenact video SOURCE.mp4 DRIVER.mp4`, `reenact.v2v`): the timeline (length
rules, ping-pong, frame rates), the source retargeting, frame access by index, and end to end
through the console script on 1-second 320×180 cuts of the bundled clip: length and audio
choices, pixels outside the head unchanged, face-less source frames passed through, resume,
k-shot photos, batch, and bad inputs."""

from __future__ import annotations

import csv
import signal
import subprocess
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from reenact import align, media, motion
from reenact import geometry as g
from reenact.config import VideoOptions
from reenact.errors import UsageError
from reenact.expression import expression_descriptor
from reenact.pipeline import StageTimer
from reenact.v2v import IndexedFrames, Timeline, frames_used, is_video_source, pingpong
from tests import synth
from tests.conftest import REPO
from tests.test_cli import assert_clean_error, no_leftovers, reenact
from tests.test_video_production import frames_of, start_and_stop, state

EXAMPLES = REPO / "examples"


# ───────────────────────────── timeline ─────────────────────────────

def test_pingpong_plays_forward_then_backward_without_a_jump():
    assert [pingpong(k, 4) for k in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert [pingpong(k, 1) for k in range(3)] == [0, 0, 0]
    seq = [pingpong(k, 7) for k in range(50)]
    assert max(abs(a - b) for a, b in zip(seq, seq[1:])) == 1  # never a cut


def test_timeline_length_rules_and_frame_rates():
    # source 24 frames, driver 36 frames, both at 24 fps
    t = Timeline.build(24, 24.0, 36, 24.0, "driver")
    assert t.frames == 36 and t.source_backward and not t.driver_backward
    assert [t.source(i) for i in (0, 23, 24, 25, 35)] == [0, 23, 22, 21, 11]
    assert [t.driver(i) for i in (0, 35)] == [0, 35]
    t = Timeline.build(24, 24.0, 36, 24.0, "source")
    assert t.frames == 24 and not t.source_backward and not t.driver_backward
    t = Timeline.build(48, 24.0, 36, 24.0, "source")
    assert t.frames == 48 and t.driver_backward and [t.driver(i) for i in (35, 36, 47)] == [35, 34, 23]
    assert Timeline.build(48, 24.0, 36, 24.0, "shortest").frames == 36
    # a 30 fps source under a 24 fps driver: the output keeps the driver's rate, and output
    # frame i shows the source at the same time (i / 24 s)
    t = Timeline.build(45, 30.0, 36, 24.0, "driver")
    assert t.frames == 36 and not t.source_backward
    assert [t.source(i) for i in (0, 4, 8, 35)] == [0, 5, 10, 43]
    assert Timeline.build(45, 30.0, 36, 24.0, "source").frames == 36  # 1.5 s at 24 fps
    assert Timeline.build(10, 10.0, 36, 24.0, "source").frames == 24  # 1 s


@pytest.mark.parametrize("length", ["driver", "source", "shortest"])
def test_pass_one_cuts_neither_input_short_of_what_the_output_shows(length):
    """`frames_used`: an input cut to the frames it says, given the other's whole length, gives
    the timeline of the uncut inputs, frame for frame."""
    rng = np.random.default_rng(0)
    rates = [10.0, 12.0, 23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 60.0]
    for _ in range(400):
        sfps, dfps = rng.choice(rates, 2)
        s, d = (int(n) for n in rng.integers(1, 300, 2))
        used = frames_used(sfps, dfps, length)
        cut_s, cut_d = used(False, d), used(True, s)
        full = Timeline.build(s, sfps, d, dfps, length)
        cut = Timeline.build(s if cut_s is None else min(s, cut_s), sfps, d if cut_d is None else min(d, cut_d),
                             dfps, length)
        assert cut.frames == full.frames, (s, sfps, d, dfps)
        assert [(cut.source(i), cut.driver(i)) for i in range(full.frames)] == \
               [(full.source(i), full.driver(i)) for i in range(full.frames)], (s, sfps, d, dfps)
    # the frames shown, and at least TRACK_AT_LEAST_S seconds (10)
    shown = {"driver": (1999, None), "source": (None, 1000), "shortest": (1999, 1000)}[length]
    assert (frames_used(50.0, 25.0, length)(False, 1000), frames_used(25.0, 25.0, length)(True, 1000)) == shown
    least = {"driver": (500, None), "source": (None, 250), "shortest": (500, 250)}[length]
    assert (frames_used(50.0, 25.0, length)(False, 50), frames_used(25.0, 25.0, length)(True, 30)) == least


def fake_video(n: int, opened: list) -> type:
    """A stand-in for `v2v.Downscaled`: n frames of 2×4 pixels, frame k filled with k; each
    instance (an opened decoder) appends to `opened`."""

    class Fake:
        def __init__(self):
            opened.append(1)
            self.info = media.VideoInfo(4, 2, 25.0, n, None, False, "fake", 0)
            self.it = iter([np.full((2, 4, 3), k, np.uint8) for k in range(n)])

        def __next__(self):
            return next(self.it)

        def close(self):
            pass

    return Fake


def test_indexed_frames_reads_back_from_its_cache_or_decodes_again(tmp_path):
    opened = []
    Fake = fake_video(6, opened)
    with IndexedFrames(Fake, Path("fake"), cache=tmp_path / "cache.u8", timer=StageTimer()) as frames:
        assert [int(frames[k][0, 0, 0]) for k in (0, 1, 2, 5, 4, 3, 0, 5)] == [0, 1, 2, 5, 4, 3, 0, 5]
    assert len(opened) == 1  # backward reads came from the cache
    with IndexedFrames(Fake, Path("fake"), cache=None, timer=StageTimer()) as frames:
        assert [int(frames[k][0, 0, 0]) for k in (3, 1, 2)] == [3, 1, 2]
        with pytest.raises(media.CorruptMedia, match="fewer frames"):
            frames[6]
    assert len(opened) == 3  # without a cache, going back decodes again from the start
    with IndexedFrames(Fake, Path("fake"), cache=None, timer=StageTimer()) as frames:
        assert int(frames[0][0, 0, 0]) == 0 and int(frames.ahead(3)[0, 0, 0]) == 3
        assert [int(frames[k][0, 0, 0]) for k in (0, 0, 2, 3, 5)] == [0, 0, 2, 3, 5]
        assert len(opened) == 4  # the frames decoded ahead were held: no second decoding
        assert int(frames[1][0, 0, 0]) == 1 and len(opened) == 5  # those passed were let go


# ───────────────────────────── retargeting ─────────────────────────────

def _opening(points: np.ndarray) -> float:
    return float(expression_descriptor(points)[2])


def test_source_retargeter_keeps_the_source_pose_and_moves_the_mouth():
    rest = synth.face()
    source = synth.open_mouth(synth.face(yaw=20, pitch=-8, shift=(15, 5)), 0.05)  # turned and talking
    anchor = synth.face(scale=0.8)
    driver = synth.open_mouth(synth.face(scale=0.8, roll=10), 0.2)
    for mode in ("replace", "keep"):
        r = motion.SourceRetargeter(rest, anchor, source_expression=mode)
        out = r(source, driver)
        pose_src, pose_out = g.head_pose(source), g.head_pose(out)
        assert np.allclose(pose_src.as_array(), pose_out.as_array(), atol=0.5), mode  # the driver's roll is not copied
        # the driver opened its mouth by 0.2 eye spans: replace shows that on the rest face's
        # closed mouth, keep adds it to the source's own 0.05
        want = 0.2 if mode == "replace" else 0.25
        assert _opening(out) == pytest.approx(want + _opening(rest), abs=0.02), mode
        at_anchor = r(source, anchor)
        if mode == "keep":  # the driver at its anchor: the source frame exactly
            assert np.allclose(at_anchor, source, atol=1e-6)
        else:  # the source's own mouth movement is replaced by the rest face's
            assert _opening(at_anchor) == pytest.approx(_opening(rest), abs=0.01)
    # --transfer all adds the driver's head rotation change (its roll of 10°) to the source's pose
    out = motion.SourceRetargeter(rest, anchor, transfer="all")(source, driver)
    assert g.head_pose(out).roll - g.head_pose(source).roll == pytest.approx(10, abs=1.5)


def test_source_retargeter_regions_leave_the_other_parts_to_the_source():
    rest, anchor = synth.face(), synth.face()
    source = synth.close_eyes(synth.face(), 0.8)  # the source blinks
    driver = synth.open_mouth(synth.face(), 0.15)
    out = motion.SourceRetargeter(rest, anchor, components=motion.components_for(("mouth",)))(source, driver)
    eyes = list(g.RIGHT_EYE + g.LEFT_EYE)
    assert np.allclose(out[eyes], source[eyes], atol=1e-6)  # its own blink stays
    assert _opening(out) == pytest.approx(0.15 + _opening(rest), abs=0.02)


def outside_crop(crop: align.Crop, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) bool: the frame pixels outside the bounding box of `crop`'s square (nothing the
    engine renders into it can reach them)."""
    corners = crop.points_to_frame(np.array([[0, 0], [crop.size, 0], [0, crop.size], [crop.size, crop.size]], float))
    (x0, y0), (x1, y1) = np.floor(corners.min(0)).astype(int), np.ceil(corners.max(0)).astype(int)
    mask = np.ones(shape[:2], bool)
    mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = False
    return mask


@pytest.mark.parametrize("zoom", [1, 2])
def test_a_source_frame_keeps_its_exact_pixels_outside_what_moves(zoom):
    """Before encoding: outside the engine's crop nothing changes, and the paste is limited to
    where the warp moves pixels, so eyes that did not move keep the source's exact pixels —
    in the crop render + paste-back and (zoom 2: a 720p frame) the direct render alike."""
    from reenact.config import InferenceConfig
    from reenact.landmarks import Face, Landmarker
    from reenact.pipeline import Reenactor, Reference
    from reenact.v2v import moved_region

    frame = media.read_image(EXAMPLES / "ref.jpg")
    frame = cv2.resize(frame, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC) if zoom > 1 else frame
    with Landmarker(mode="image") as lm:
        points = lm.detect(frame)[0].points.astype(np.float64)
    driver = synth.open_mouth(points, 0.12)
    r = Reenactor(Reference(frame, Face(points=points), 1), InferenceConfig(engine="warp"))
    assert r.engine.direct(r.states[0]) == (zoom > 1)
    r.paste_limit = moved_region
    for regions in (("mouth", "eyes", "brows"), ("mouth",)):
        retarget = motion.SourceRetargeter(points, points, components=motion.components_for(regions))
        r.set_primary(Reference(frame, Face(points=points), 1))
        r.retarget = lambda d: retarget(points, d)
        out = r.render(Face(points=driver))
        outside = outside_crop(r.states[0].crop, frame.shape)
        assert np.array_equal(out[outside], frame[outside])
        mouth = [int(i) for i in g.LIPS_INNER]
        (mx0, my0), (mx1, my1) = points[mouth, :2].min(0).astype(int), points[mouth, :2].max(0).astype(int) + 1
        assert np.abs(out[my0:my1 + 10, mx0:mx1].astype(int) - frame[my0:my1 + 10, mx0:mx1]).mean() > 3  # it opened
        eyes = points[list(g.RIGHT_EYE + g.LEFT_EYE), :2]
        (ex0, ey0), (ex1, ey1) = eyes.min(0).astype(int) - 3, eyes.max(0).astype(int) + 3
        # the driver's eyes did not move: where the warp is the identity, the source's own pixels
        assert np.array_equal(out[ey0:ey1, ex0:ex1], frame[ey0:ey1, ex0:ex1]), regions


@pytest.mark.parametrize("yaw", [0, 30])
def test_moved_region_covers_every_moved_triangle(yaw):
    """The paste limit is the union of the moved triangles, also where they overlap (a mouth
    opening from a closed one; a turn's folds): no hole through which the source's own pixels
    would show."""
    from reenact import engines, warp
    from reenact.config import InferenceConfig
    from reenact.landmarks import Face
    from reenact.v2v import MOVED_PX, moved_region

    engine = engines.build_engine(InferenceConfig(engine="warp"))
    state = engine.prepare(synth.textured(512, seed=1), Face(points=synth.face(512)))
    target = state.crop.points_to_crop(synth.open_mouth(synth.face(512, yaw=yaw), 0.1))
    side = engines.mask_grid(state.size) if engine.direct(state) else state.size
    mask = moved_region(state, target, side)
    src, dst = state.extra.source, warp.target_controls(state.extra.source, target)
    moved = np.linalg.norm(dst[:, :2] - src.control, axis=1) >= MOVED_PX
    corners = np.round(((dst[:, :2] + 0.5) * side / state.size - 0.5) * 16).astype(np.int32)
    union = np.zeros((side, side), np.uint8)
    for tri in corners[src.triangles[moved[src.triangles].any(1)]]:  # one by one: overlaps stay filled
        cv2.fillConvexPoly(union, tri, 255, lineType=cv2.LINE_8, shift=4)
    inside = cv2.erode(union, np.ones((3, 3), np.uint8)) > 0
    assert inside.sum() > 1000 and mask[inside].min() > 0.5


def jaw_drop(points: np.ndarray, amount: float) -> np.ndarray:
    """A talking face: the mouth opened by `amount` and the jaw line below the mouth corners
    lowered with it (more towards the chin), as a jaw drops."""
    fit = g.fit_head(points)
    c = fit.inverse_apply(synth.open_mouth(points, amount))
    canon = g.canonical().points
    lower = [i for i in g.FACE_OVAL if canon[i, 1] > canon[61, 1]]
    c[lower, 1] += amount * (canon[lower, 1] - canon[61, 1]) / (canon[152, 1] - canon[61, 1])
    return fit.apply(c)


def test_rest_target_drops_the_sources_own_speech():
    """`SourceRetargeter.from_rest` (frames rendered from the resting bank): the lower face of
    the target is the rest face moved by the driver whatever the source frame's own mouth and
    jaw do (`__call__` keeps the source's jaw line, which moves as it talks); the upper face and
    the head pose stay the source frame's, and so do its blinks when only the mouth is moved."""
    rest = anchor = synth.face()
    driver = synth.open_mouth(synth.face(), 0.1)
    quiet, talking = synth.face(yaw=10), jaw_drop(synth.face(yaw=10), 0.12)
    lower = motion.speech_weights() == 1  # from the upper lip down
    r = motion.SourceRetargeter(rest, anchor)
    a, b = r.from_rest(quiet, driver), r.from_rest(talking, driver)
    assert np.abs(a[lower] - b[lower]).max() < 1e-6
    assert np.abs(r(quiet, driver)[lower] - r(talking, driver)[lower]).max() > 2  # the old target leaks it
    assert _opening(a) == pytest.approx(0.1 + _opening(rest), abs=0.02)
    assert np.allclose(g.head_pose(a).as_array(), g.head_pose(quiet).as_array(), atol=0.5)
    upper = motion.speech_weights() == 0
    assert np.allclose(a[upper], r(quiet, driver)[upper], atol=1e-6)
    blink = synth.close_eyes(synth.face(yaw=10), 0.8)
    lips = motion.SourceRetargeter(rest, anchor, components=motion.components_for(("mouth",)))
    eyes = list(g.RIGHT_EYE + g.LEFT_EYE)
    assert np.abs(lips.from_rest(blink, driver)[eyes] - blink[eyes]).max() < 0.5  # its own blink stays


def test_resting_bank_spans_the_sources_poses_with_resting_frames():
    from reenact.v2v import BANK_SPREAD, rest_frame, resting_bank

    # 40 frames turning from -15° to +15°; every other frame talks
    points = [jaw_drop(synth.face(yaw=y), 0.1) if k % 2 else synth.face(yaw=y)
              for k, y in enumerate(np.linspace(-15, 15, 40))]
    status = np.zeros(40, np.uint8)  # temporal.FACE
    rest = rest_frame(points, status)
    bank = resting_bank(points, status, rest)
    assert rest in bank and 3 <= len(bank) <= 6 and bank == sorted(bank)
    assert all(k % 2 == 0 for k in bank)  # resting frames only
    yaws = sorted(g.head_pose(points[k]).yaw for k in bank)
    assert min(np.diff(yaws)) >= BANK_SPREAD - 0.5 and yaws[0] < -8 and yaws[-1] > 8  # spread over the turn


def test_appearance_frame_is_the_first_resting_one_early_on():
    from reenact import temporal
    from reenact.v2v import appearance_frame

    # the video mostly rests; its first frames talk but for frames 3 and 5
    points = [jaw_drop(synth.face(), 0.12) if k < 6 and k not in (3, 5) else synth.face() for k in range(40)]
    status = np.zeros(40, np.uint8)  # temporal.FACE
    assert appearance_frame(points, status, None, window=10) == 3
    covered = np.zeros(40, bool)
    covered[3] = True  # a hand over frame 3's mouth
    assert appearance_frame(points, status, covered, window=10) == 5
    assert appearance_frame(points, status, covered, window=3) in (0, 1, 2)  # no resting one: the most typical
    covered[:3] = True
    assert appearance_frame(points, status, covered, window=3) is None
    status[:4] = temporal.STILL  # no face yet: the window starts at the first face
    assert appearance_frame(points, status, None, window=2) == 5


def test_appearance_window_shrinks_for_large_frames(tmp_path):
    """Frames on the way to the appearance frame are held in memory: at most APPEARANCE_BYTES
    of them, so a large frame narrows the window (here to frame 0 alone)."""
    from reenact.v2v import APPEARANCE_BYTES, _fix_appearance

    points = [jaw_drop(synth.face(), 0.12) if k < 2 else synth.face() for k in range(12)]
    status = np.zeros(12, np.uint8)  # temporal.FACE
    opened = []
    Fake = fake_video(12, opened)

    def engine():
        prepare = lambda frame, face: types.SimpleNamespace(extra=types.SimpleNamespace(regions=int(frame[0, 0, 0])))  # noqa: E731
        redrawer = types.SimpleNamespace(appearance_from=None, generates=True)
        return types.SimpleNamespace(redrawer=redrawer, prepare=prepare)

    for frame_bytes, want in ((24, 2), (APPEARANCE_BYTES, 0)):
        e = engine()
        with IndexedFrames(Fake, Path("fake"), cache=None, timer=StageTimer()) as frames:
            assert _fix_appearance(e, points, status, None, frames, frame_bytes) == want
            assert e.redrawer.appearance_from == want  # the frame's own pixels were prepared
            assert [int(frames[k][0, 0, 0]) for k in range(4)] == [0, 1, 2, 3]
    assert len(opened) == 2  # one decoder each: nothing decoded twice


def test_a_redrawer_takes_every_references_features_from_appearance_from():
    from reenact.redraw import Redrawer

    class Encoder:  # stands in for a region model: records what it encodes
        size, seen = 64, []

        def appearance(self, crop):
            self.seen.append(crop.mean())
            return [crop.mean()]

    encoder = Encoder()
    redrawer = Redrawer(mouth="generator", mouth_model=encoder)
    pts = synth.face(256)
    one, other = (redrawer.prepare(np.full((256, 256, 3), v, np.uint8), pts) for v in (50, 200))
    assert redrawer.appearance(other, "mouth") == [200]
    redrawer.appearance_from = one
    assert redrawer.appearance(other, "mouth") == [50] and redrawer.appearance(one, "mouth") == [50]
    assert encoder.seen == [200, 50]  # once per reference it encodes


def test_bank_choice_follows_the_head_pose_with_hysteresis():
    from reenact.v2v import BANK_REACH, _Frames, head_pose

    yaws = [0.0, 1.5, 2.5, 6.0, 9.0, 4.0, 30.0, 9.5]
    points = [synth.face(yaw=y) for y in yaws]
    job = _Frames(None, None, None, points, None, None, None, None, Path("s.mp4"), 1)
    job.bank = [0, 3]  # bank frames at yaw 0 and 6
    job.bank_poses = [head_pose(points[k]) for k in job.bank]
    chosen = [job._choose_bank(j) for j in range(len(yaws))]
    # 0 → bank 1; 1.5, 2.5 stay (not nearer by the margin); 6 and 9 → bank 2; 4 stays on 2;
    # 30° is beyond BANK_REACH of both: the frame itself (0); 9.5 → bank 2 again
    assert 30 - 6 > BANK_REACH
    assert chosen == [1, 1, 1, 2, 2, 2, 0, 2]


def test_a_frame_rendered_from_the_bank_changes_only_its_head():
    """The bank path (`Reenactor.plan(use=…, onto=…, limit=…)`): the frame's own render keeps the
    upper face, the bank frame's render the lower face, pasted into the frame itself; outside
    the engine's crop the frame's pixels are exact."""
    from reenact.config import InferenceConfig
    from reenact.landmarks import Face, Landmarker
    from reenact.pipeline import Reenactor, Reference
    from reenact.v2v import lower_face, upper_face

    frame = media.read_image(EXAMPLES / "ref.jpg")
    other = np.ascontiguousarray(frame[:, ::-1])  # a stand-in for another frame of the source
    with Landmarker(mode="image") as lm:
        points = lm.detect(frame)[0].points.astype(np.float64)
        other_points = lm.detect(other)[0].points.astype(np.float64)
    r = Reenactor([Reference(frame, Face(points=points), 1), Reference(other, Face(points=other_points), 1)],
                  InferenceConfig(engine="warp"), multi="select")
    retarget = motion.SourceRetargeter(points, points)
    r.retarget = lambda d: retarget.from_rest(points, d)
    driver = Face(points=synth.open_mouth(points, 0.1))
    own = r.plan(driver, use=0, limit=upper_face)
    out = r.plan(driver, use=1, onto=own, limit=lower_face)()
    outside = outside_crop(r.states[0].crop, frame.shape)
    assert np.array_equal(out[outside], frame[outside])
    mouth = points[list(g.LIPS_OUTER), :2]
    (mx0, my0), (mx1, my1) = mouth.min(0).astype(int), mouth.max(0).astype(int)
    assert np.abs(out[my0:my1, mx0:mx1].astype(int) - frame[my0:my1, mx0:mx1]).mean() > 3  # it opened
    eyes = points[list(g.RIGHT_EYE + g.LEFT_EYE), :2]
    (ex0, ey0), (ex1, ey1) = eyes.min(0).astype(int) - 3, eyes.max(0).astype(int) + 3
    # the eyes did not move: the frame's own pixels (from its own render's limit), not the bank's
    assert np.array_equal(out[ey0:ey1, ex0:ex1], frame[ey0:ey1, ex0:ex1])


class _Frames:
    """A stand-in decoded video for pass 1: `n` copies of `frame`; raises `error` at `fail`."""

    def __init__(self, frame: np.ndarray, n: int, *, fail: int | None = None, error: Exception | None = None):
        self.frame, self.n, self.fail, self.error, self.read = frame, n, fail, error, 0
        self.info = types.SimpleNamespace(n_frames=n, fps=25.0)

    def __iter__(self):
        for i in range(self.n):
            if i == self.fail:
                raise self.error
            self.read += 1
            yield self.frame


def test_both_tracks_run_at_once_and_a_failing_one_stops_the_other(tmp_path):
    from reenact import resume, video
    from reenact.config import VideoOptions
    from reenact.errors import CorruptMedia
    from reenact.pipeline import StageTimer

    frame = media.read_image(EXAMPLES / "ref.jpg")
    work = resume.WorkDir.open(tmp_path / "o.mp4", job="x", inputs={}, chunk=40, resume=False, overwrite=False)
    source, driver = _Frames(frame, 6), _Frames(frame, 8)
    video.track_both(source, driver, work, VideoOptions(), StageTimer(), None)
    assert work.state.source_track["frames"] == work.state.source_track["with_face"] == 6
    assert work.state.track["frames"] == work.state.track["with_face"] == 8
    # the source breaks after 3 frames: its error is raised, the driver's pass stops long before
    # its end (frames decoded) and neither is recorded as done
    work = resume.WorkDir.open(tmp_path / "p.mp4", job="x", inputs={}, chunk=40, resume=False, overwrite=False)
    source, driver = _Frames(frame, 6, fail=3, error=CorruptMedia("broken source")), _Frames(frame, 10 ** 6)
    with pytest.raises(CorruptMedia, match="broken source"):
        video.track_both(source, driver, work, VideoOptions(), StageTimer(), None)
    assert source.read == 3 and driver.read < 10 ** 6
    assert work.state.source_track is None and work.state.track is None
    # a driver that breaks stops the source
    work = resume.WorkDir.open(tmp_path / "q.mp4", job="x", inputs={}, chunk=40, resume=False, overwrite=False)
    source, driver = _Frames(frame, 10 ** 6), _Frames(frame, 6, fail=2, error=CorruptMedia("broken driver"))
    with pytest.raises(CorruptMedia, match="broken driver"):
        video.track_both(source, driver, work, VideoOptions(), StageTimer(), None)
    assert source.read < 10 ** 6 and work.state.source_track is None and work.state.track is None


def test_pass_one_reads_a_longer_input_only_as_far_as_the_output_shows_it(tmp_path):
    from reenact import resume, temporal, tracking, video
    from reenact.errors import CorruptMedia

    frame = media.read_image(EXAMPLES / "ref.jpg")
    used = lambda source_done, n: None if source_done else n + 2  # noqa: E731 — 2 source frames past the driver's
    # stopped early / read to its end / ending where the output does (not cut: nothing goes unread)
    for name, n_source in (("long.mp4", 10 ** 6), ("short.mp4", 12), ("exact.mp4", 10)):
        work = resume.WorkDir.open(tmp_path / name, job="x", inputs={}, chunk=40, resume=False, overwrite=False)
        source, driver = _Frames(frame, n_source), _Frames(frame, 8)
        video.track_both(source, driver, work, VideoOptions(), StageTimer(), None, used=used)
        s, d = work.state.source_track, work.state.track
        assert source.read < 10 ** 6 and d["frames"] == 8 and not d["cut"]
        assert s["frames"] == s["with_face"] == 10, name  # exactly, however far it had got
        assert s["cut"] == (n_source > 10), name
        assert s["first_face"] == 0 and s["max_faces"] == 1
        with temporal.FrameFile(work.file("source-track.f32")) as track:
            assert len(track) == 10
    # whether the video goes on past the cut: a frame that cannot be decoded is one
    assert tracking._has_more(iter(_Frames(frame, 12, fail=0, error=CorruptMedia("frame 10 is damaged"))))
    assert not tracking._has_more(iter(_Frames(frame, 0)))


def test_is_video_source(tmp_path):
    assert is_video_source(EXAMPLES / "drive.mp4", VideoOptions())
    assert not is_video_source(EXAMPLES / "ref.jpg", VideoOptions())
    assert not is_video_source(tmp_path, VideoOptions())  # a folder is photos of the person …
    assert is_video_source(tmp_path, VideoOptions(reference_frames=True))  # … unless it is said to be frames
    with pytest.raises(UsageError):
        is_video_source(EXAMPLES / "drive.mp4", VideoOptions(reference_frames=True))
    with pytest.raises(UsageError):
        VideoOptions(length="longest")


# ───────────────────────────── end to end ─────────────────────────────

def ffmpeg(*args) -> None:
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """src.mp4: 1 s (24 frames) of the bundled clip at 320×180 with audio; drv.mp4: 1.5 s of
    it from 2.5 s (36 frames, the same woman talking); gap.mp4: src.mp4 with frames 8–12
    painted grey (no face); frames/: the first 10 frames of src.mp4 as PNG files; vfr.mkv: src.mp4
    at a variable frame rate (half its frames, ~12 fps on average)."""
    d = tmp_path_factory.mktemp("v2v")
    src, drv, gap, frames = d / "src.mp4", d / "drv.mp4", d / "gap.mp4", d / "frames"
    ffmpeg("-i", EXAMPLES / "drive.mp4", "-t", "1", "-vf", "scale=320:180", "-c:v", "libx264", "-preset",
           "veryfast", "-c:a", "aac", src)
    ffmpeg("-ss", "2.5", "-i", EXAMPLES / "drive.mp4", "-t", "1.5", "-vf", "scale=320:180", "-c:v", "libx264",
           "-preset", "veryfast", "-c:a", "aac", drv)
    ffmpeg("-i", src, "-vf", "drawbox=enable='between(n,8,12)':c=gray:t=fill", "-c:v", "libx264", "-preset",
           "veryfast", "-c:a", "copy", gap)
    # variable frame rate in another container: every other pair of frames kept, timestamps kept
    vfr = d / "vfr.mkv"
    ffmpeg("-i", src, "-vf", r"select=lt(mod(n\,4)\,2)", "-fps_mode", "vfr", "-c:v", "libx264", "-preset",
           "veryfast", "-an", vfr)
    frames.mkdir()
    for i, f in enumerate(media.VideoReader(src)):
        if i < 10:
            media.write_image(frames / f"{i:04d}.png", f)
    return {"src": src, "drv": drv, "gap": gap, "frames": frames, "vfr": vfr}


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    err = ((a.astype(np.float64) - b.astype(np.float64)) ** 2)[mask].mean()
    return 10 * np.log10(255.0 ** 2 / max(err, 1e-10))


def outside_heads(points: list[np.ndarray | None], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: pixels outside every frame's head crop box (the square the engine renders
    into and pastes from; nothing outside it can change)."""
    mask = np.ones(shape, bool)
    for p in points:
        if p is not None:
            mask &= outside_crop(align.align(p, 256), shape)
    return mask


def audio_seconds(path: Path) -> float | None:
    """Duration of the audio stream (None: no audio)."""
    r = subprocess.run([media.ffmpeg_exe(), "-i", str(path), "-map", "0:a:0", "-f", "null", "-"],
                       capture_output=True, text=True)
    times = [t for t in r.stderr.split("time=")[1:]]
    if "matches no streams" in r.stderr or not times:
        return None
    h, m, s = times[-1].split()[0].split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


@pytest.mark.slow
def test_dubbing_changes_only_the_face_and_follows_the_driver(clips, tmp_path):
    out = tmp_path / "out.mp4"
    r = reenact("video", clips["src"], clips["drv"], "-o", out)
    assert r.returncode == 0, r.stderr
    assert "plays forward and back" in r.stdout and "copied from the driver" in r.stdout
    info = media.probe_video(out)
    assert (info.width, info.height, info.has_audio) == (320, 180, True)
    outs, srcs = frames_of(out), frames_of(clips["src"])
    assert len(outs) == 36  # the driver's length; the 24-frame source ping-pongs
    assert audio_seconds(out) == pytest.approx(1.5, abs=0.1)
    tl = Timeline.build(24, info.fps, 36, info.fps, "driver")
    from reenact.landmarks import Landmarker

    with Landmarker(mode="image") as lm:
        faces = [lm.detect(s) for s in srcs]
    mask = outside_heads([f[0].points if f else None for f in faces], srcs[0].shape[:2])
    assert 0.15 < mask.mean() < 0.9
    values = [psnr(outs[i], srcs[tl.source(i)], mask) for i in range(36)]
    assert min(values) >= 40, values  # outside the head: the source's own pixels (up to coding)
    changed = [psnr(outs[i], srcs[tl.source(i)], ~mask) for i in range(36)]
    assert np.median(changed) < 40  # inside it the face moved


def test_resting_frames_draw_the_lower_face_when_asked(clips, tmp_path):
    """With `--resting` (`VideoOptions.resting`, `replace`) output frames take their lower face
    from the source's resting bank and the summary counts them; by default and with `keep` none."""
    from reenact import video
    from reenact.config import InferenceConfig

    def resting(**options) -> tuple[int, int]:
        s = video.reenact_video(clips["src"], clips["drv"], tmp_path / "out.mp4", InferenceConfig(engine="warp"),
                                options=VideoOptions(**options), overwrite=True)
        return s.source.resting

    bank, used = resting(resting=True)
    assert 1 <= bank <= 6 and used > 0
    assert resting() == (0, 0)
    assert resting(resting=True, source_expression="keep") == (0, 0)
    r = reenact("video", clips["src"], clips["drv"], "--resting", "--engine", "warp", "-o", tmp_path / "cli.mp4")
    assert r.returncode == 0 and "resting frames" in r.stdout, r.stderr


def test_hands_are_looked_for_again_when_a_resumed_render_lacks_them(clips, tmp_path):
    """`v2v._hands`: pass 1 done by an earlier run whose hand marks were not kept → the source
    is looked at again (one mark per source frame), kept, and read back the next time."""
    from reenact import resume, video
    from reenact.pipeline import StageTimer
    from reenact.v2v import Downscaled, _hands

    work = resume.WorkDir.open(tmp_path / "o.mp4", job="x", inputs={}, chunk=40, resume=False, overwrite=False)
    open_source = lambda: Downscaled(clips["src"], None, 0)  # noqa: E731
    with open_source() as src:
        video.track_pass(src, work, VideoOptions(), StageTimer(), None, source=True)
    assert not work.file("source-hands.npy").exists()
    covered = _hands(work, None, open_source, StageTimer())
    assert covered.shape == (24,) and not covered.any()  # no hands in the clip
    assert work.file("source-hands.npy").exists()
    np.save(work.file("source-hands.npy"), np.ones(24, bool))
    assert _hands(work, None, open_source, StageTimer()).all()  # kept: read back, not looked for again


PEXELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "samples" / "pyfeat" / "WolfgangLanger_Pexels.mp4"


@pytest.mark.slow
@pytest.mark.skipif(not PEXELS.exists(), reason="needs ../shared/data/samples/pyfeat (the Pexels clip: hands over the face)")
@pytest.mark.parametrize("resting", [False, True], ids=["replace", "resting"])
def test_a_lower_face_that_a_hand_covers_stays_the_sources(clips, tmp_path, resting):
    """A source whose hand comes up over the mouth (Pexels 1.6–4.6 s): those frames keep their
    own lower face — the hand is not drawn over (nor, with `--resting`, pasted elsewhere) —
    while the frames before it get the driver's mouth (with `--resting` from the bank)."""
    from reenact import video
    from reenact.config import InferenceConfig
    from reenact.landmarks import Landmarker

    source = tmp_path / "hand.mp4"
    ffmpeg("-ss", "1.6", "-i", PEXELS, "-t", "3", "-vf", "scale=320:180", "-c:v", "libx264", "-crf", "18",
           "-preset", "veryfast", "-an", source)
    out = tmp_path / "out.mp4"
    s = video.reenact_video(source, clips["drv"], out, InferenceConfig(engine="warp"),
                            options=VideoOptions(resting=resting, length="source"), overwrite=True)
    bank, used = s.source.resting
    assert s.source.covered > 0 and used + s.source.covered <= s.frames
    assert (bank >= 1 and used > 0) if resting else bank == used == 0
    src, got = frames_of(source), frames_of(out)
    with Landmarker(mode="video") as lm:
        points = [lm.detect(f)[0].points for f in src]

    def lower_diff(i: int) -> float:
        x0, y0 = points[i][list(g.LIPS_OUTER), :2].min(0).astype(int) - 4
        x1, y1 = points[i][list(g.LIPS_OUTER), :2].max(0).astype(int) + 4
        return float(np.abs(got[i][y0:y1, x0:x1].astype(int) - src[i][y0:y1, x0:x1]).mean())

    # the hand is over the mouth in the last second; the first frames have none
    late, early = [lower_diff(i) for i in range(len(src) - 20, len(src))], [lower_diff(i) for i in range(0, 15)]
    assert np.mean(late) < 4.0 < np.mean(early), (np.mean(late), np.mean(early))


@pytest.mark.slow
def test_length_and_audio_choices(clips, tmp_path):
    out = tmp_path / "o.mp4"
    r = reenact("video", clips["src"], clips["drv"], "-o", out, "--length", "source", "--audio", "source")
    assert r.returncode == 0, r.stderr
    assert len(frames_of(out)) == 24 and audio_seconds(out) == pytest.approx(1.0, abs=0.1)
    r = reenact("video", clips["drv"], clips["src"], "-o", out, "--length", "shortest", "--audio", "none",
                "--overwrite", "--transfer", "all")
    assert r.returncode == 0, r.stderr
    assert len(frames_of(out)) == 24 and not media.probe_video(out).has_audio and "none (--audio none)" in r.stdout
    # a folder of frames as the source, at --fps 10: 1 s, so the source's length is 24 driver frames
    r = reenact("video", clips["frames"], clips["drv"], "-o", out, "--reference-frames", "--fps", "10",
                "--length", "source", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert len(frames_of(out)) == 24 and "10 frames at 10 fps" in r.stdout
    # a variable-frame-rate .mkv source under a 23.976 fps driver: the output takes the driver's
    # timing, and the source lasts as long as it does (~0.92 s: its 11 frames, each shown for as
    # long as its timestamps say; the reader repeats frames to a constant rate)
    r = reenact("video", clips["vfr"], clips["drv"], "-o", out, "--length", "source", "--overwrite")
    assert r.returncode == 0, r.stderr
    info, src = media.probe_video(out), media.VideoReader(clips["vfr"])
    n_src = len(list(src))
    assert abs(info.fps - 23.976) < 0.01
    assert len(frames_of(out)) == Timeline.build(n_src, src.info.fps, 36, info.fps, "source").frames
    assert abs(len(frames_of(out)) / info.fps - n_src / src.info.fps) < 0.05
    assert no_leftovers(tmp_path) == ["o.mp4"]


def test_region_generators_encode_one_early_source_frame(clips, tmp_path, monkeypatch):
    """The default engine redraws mouth and eyes with the look of one source frame (the rest
    frame of the first APPEARANCE_WINDOW): each region's encoder runs once for the video."""
    from reenact import runtime, video
    from reenact.config import InferenceConfig
    from reenact.engines import default_engine
    from reenact.v2v import APPEARANCE_WINDOW

    encoded = []
    real = runtime.GeneratorRuntime.appearance
    monkeypatch.setattr(runtime.GeneratorRuntime, "appearance",
                        lambda self, crop: encoded.append(self.size) or real(self, crop))
    s = video.reenact_video(clips["src"], clips["drv"], tmp_path / "o.mp4", InferenceConfig(engine=default_engine()),
                            overwrite=True)
    assert default_engine() == "fusion" and s.frames == 36
    assert encoded and len(encoded) <= 3  # the mouth, each eye: once (those the frames redraw)
    assert s.source.appearance is not None and s.source.appearance < APPEARANCE_WINDOW
    s = video.reenact_video(clips["src"], clips["drv"], tmp_path / "o.mp4",
                            InferenceConfig(engine="fusion", mouth="driver", eyes="warp"), overwrite=True)
    assert s.source.appearance is None  # no generator: nothing to encode


def test_a_longer_source_is_read_only_as_far_as_the_output_shows_it(clips, tmp_path, monkeypatch):
    from reenact import v2v, video
    from reenact.config import InferenceConfig

    monkeypatch.setattr(v2v, "TRACK_AT_LEAST_S", 0.5)  # (10 s: longer than these clips)
    # drv.mp4 (36 frames) as the source under src.mp4 (24 frames): the output shows 24 of them
    s = video.reenact_video(clips["drv"], clips["src"], tmp_path / "o.mp4", InferenceConfig(engine="warp"),
                            overwrite=True)
    assert s.frames == 24 and s.source.frames == 24 and s.source.unread == "source"
    assert len(frames_of(tmp_path / "o.mp4")) == 24
    s = video.reenact_video(clips["src"], clips["drv"], tmp_path / "o.mp4", InferenceConfig(engine="warp"),
                            options=VideoOptions(length="source"), overwrite=True)
    assert s.frames == 24 and s.source.unread == "driver"
    s = video.reenact_video(clips["src"], clips["drv"], tmp_path / "o.mp4", InferenceConfig(engine="warp"),
                            overwrite=True)  # the driver decides: the shorter source plays back and forth
    assert s.frames == 36 and s.source.unread == "" and s.source.ping_pong == "source"


@pytest.mark.slow
def test_face_less_source_frames_pass_through(clips, tmp_path):
    out = tmp_path / "o.mp4"
    r = reenact("video", clips["gap"], clips["drv"], "-o", out, "--length", "source")
    assert r.returncode == 0, r.stderr
    assert "5 output frames show their source frame as it is" in r.stdout
    outs, srcs = frames_of(out), frames_of(clips["gap"])
    full = np.ones(srcs[0].shape[:2], bool)
    assert all(psnr(outs[i], srcs[i], full) > 40 for i in range(8, 13))


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--resting"]], ids=["replace", "resting"])
def test_interrupted_render_resumes_to_the_same_video(clips, tmp_path, extra):
    """--resting also keeps its hand marks (work/source-hands.npy) and bank across the resume."""
    args = ["video", clips["src"], clips["drv"], *extra, "--chunk-frames", "6", "-o"]
    full, part = tmp_path / "full.mp4", tmp_path / "part.mp4"
    assert reenact(*args, full).returncode == 0
    r = start_and_stop([*args, part], part, signal.SIGKILL, after_chunks=2)
    assert not part.exists() and state(part)["chunks_done"] and state(part)["source_track"]
    r = reenact(*args, part, "--resume")
    assert r.returncode == 0 and "resumed" in r.stdout, r.stderr
    fa, fb = frames_of(full), frames_of(part)
    assert len(fa) == len(fb) == 36 and all(np.array_equal(x, y) for x, y in zip(fa, fb))
    assert no_leftovers(tmp_path) == ["full.mp4", "part.mp4"]


@pytest.mark.slow
def test_k_shot_photos_and_batch_take_a_video_source(clips, tmp_path):
    out = tmp_path / "k.mp4"
    r = reenact("video", clips["src"], clips["drv"], "--ref", EXAMPLES / "ref.jpg", "-o", out, "--length", "source")
    assert r.returncode == 0, r.stderr
    assert "reference ref.jpg" in r.stdout and len(frames_of(out)) == 24
    jobs = tmp_path / "jobs.csv"
    with open(jobs, "w", newline="") as f:
        csv.writer(f).writerows([["reference", "driver", "output"], [clips["src"], clips["drv"], "b.mp4"]])
    r = reenact("batch", jobs, "-o", tmp_path / "batch", "--job-options", "--length source --regions mouth")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(frames_of(tmp_path / "batch" / "b.mp4")) == 24


@pytest.mark.slow
def test_bad_inputs_fail_cleanly_and_write_nothing(clips, tmp_path):
    noface, audio = tmp_path / "noface.mp4", tmp_path / "audio.m4a"
    ffmpeg("-f", "lavfi", "-i", "testsrc=d=0.5:s=160x90:r=24", "-c:v", "libx264", "-preset", "veryfast", noface)
    ffmpeg("-f", "lavfi", "-i", "sine=d=0.5", audio)
    truncated = tmp_path / "trunc.mp4"
    truncated.write_bytes(clips["src"].read_bytes()[:9000])
    bad = tmp_path / "bad"
    bad.mkdir()
    media.write_image(bad / "0.png", frames_of(clips["src"])[0])
    (bad / "1.png").write_text("not an image")
    out = tmp_path / "out.mp4"
    before = no_leftovers(tmp_path)
    assert_clean_error(reenact("video", noface, clips["drv"], "-o", out), 3, "no face", "source")
    assert_clean_error(reenact("video", clips["src"], noface, "-o", out), 3, "no face", "driver")
    assert_clean_error(reenact("video", audio, clips["drv"], "-o", out), 4, "audio only")
    assert_clean_error(reenact("video", truncated, clips["drv"], "-o", out), 4, "truncated")
    assert_clean_error(reenact("video", bad, clips["drv"], "--reference-frames", "-o", out), 4, "1.png")
    assert_clean_error(reenact("video", EXAMPLES / "ref.jpg", clips["drv"], "--length", "source", "-o", out), 2,
                       "needs a video")
    assert_clean_error(reenact("video", clips["src"], clips["drv"], "--motion", "absolute", "-o", out), 2,
                       "video source")
    assert_clean_error(reenact("video", clips["frames"], clips["drv"], "--reference-frames", "--audio", "source",
                               "-o", out), 2, "no audio")
    assert no_leftovers(tmp_path) == before
