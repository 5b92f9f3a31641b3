"""`reenact live` with a video file standing in for the camera (headless): frames rendered and
dropped, latency measured, the recording valid and finished even when the source breaks off."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import reenact
from reenact import live, media
from tests.test_cli import EXAMPLES, assert_clean_error, reenact as cli

REF, DRIVE = EXAMPLES / "ref.jpg", EXAMPLES / "drive.mp4"
DRIVE_FRAMES = 120


@pytest.fixture(scope="module")
def anim():
    with reenact.load(REF, engine="warp") as a:
        yield a


def frame_count(path) -> int:
    with media.VideoReader(path) as r:
        return sum(1 for _ in r)


def test_live_from_a_file_headless(tmp_path, anim):
    out = tmp_path / "live.mp4"
    s = live.run_live(anim, live.LiveOptions(source=str(DRIVE), window=False, output=out))
    assert s.stop == "end of the video"
    assert s.captured == DRIVE_FRAMES and s.rendered + s.dropped == s.captured
    assert s.rendered >= 10 and s.with_face == s.rendered
    assert 0 < s.latency_median_ms <= s.latency_p95_ms and s.fps > 0
    # The recording keeps real time: a dropped frame repeats the previous result.
    assert s.recorded == out and s.recorded_frames == frame_count(out) == s.captured
    info = media.probe_video(out)
    assert (info.width, info.height) == s.size == (640, 360)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_live_stops_cleanly_when_the_source_breaks_off(tmp_path, anim, monkeypatch):
    """A camera unplugged mid-stream: its reads fail after 30 frames."""
    reader = media.VideoReader(DRIVE)

    def read():
        if reader.frames_read == 30:
            raise reenact.MediaError("the device was unplugged")
        return next(reader, None)

    fake = live._Source(read, reader.close, fps=reader.info.fps, paced=True, name="camera 0", end="ended")
    monkeypatch.setattr(live, "open_source", lambda options: fake)
    out = tmp_path / "rec.mp4"
    s = live.run_live(anim, live.LiveOptions(window=False, output=out))
    assert s.stop == "camera 0 broke off: the device was unplugged", s
    assert s.captured == 30 and s.rendered >= 1
    assert s.recorded == out and frame_count(out) == s.recorded_frames == 30


def test_max_frames_and_reanchor(anim):
    frames = [f for i, f in zip(range(61), media.VideoReader(DRIVE)) if i in (0, 60)]
    ref = media.read_image(REF)
    diff = lambda a: np.abs(a.astype(int) - ref).mean()  # noqa: E731
    with anim.stream(fps=24, smooth=False) as stream:
        assert diff(stream(frames[0])) < 1.0  # the first face is the anchor: the reference's own face
        before = diff(stream(frames[1]))
        stream.reanchor()  # space in the live window: this face is now the neutral one
        after = diff(stream(frames[1]))
    assert after < 0.5 * before, (before, after)
    s = live.run_live(anim, live.LiveOptions(source=str(DRIVE), window=False, max_frames=5))
    assert s.rendered == 5 and s.stop == "5 frames rendered" and s.recorded is None


def test_capture_keeps_only_the_newest_frame():
    frames = iter(np.full((4, 4, 3), i, np.uint8) for i in range(1, 50))
    src = live._Source(lambda: next(frames, None), lambda: None, fps=1000, paced=False, name="fake", end="done")
    cap = live.Capture(src, np.zeros((4, 4, 3), np.uint8)).start()
    time.sleep(0.3)  # a slow renderer: the source ran ahead
    g = cap.take()
    assert g.index == 49 and g.frame[0, 0, 0] == 49 and cap.dropped == 49
    assert cap.take() is None and cap.stop_reason == "done"
    cap.stop()
    assert not any(t.name == "reenact-capture" for t in threading.enumerate())


def test_cli_live_records_and_reports(tmp_path):
    out = tmp_path / "rec.mp4"
    r = cli("live", REF, "--source", DRIVE, "--no-window", "--max-frames", "6", "--engine", "warp", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "6 rendered of" in r.stdout and "dropped" in r.stdout and "latency" in r.stdout
    assert frame_count(out) >= 6


def test_cli_live_errors(tmp_path, monkeypatch):
    r = cli("live", REF, "--camera", "9", "--no-window")
    assert_clean_error(r, 4, "camera 9")
    r = cli("live", REF, "--source", tmp_path / "none.mp4", "--no-window")
    assert_clean_error(r, 4, "none.mp4")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    r = cli("live", REF, "--source", DRIVE)
    assert_clean_error(r, 2, "--no-window")
    r = cli("live", REF, "--source", DRIVE, "--no-window", "-o", tmp_path / "x.avi")
    assert_clean_error(r, 5, ".avi")
    try:
        import pyvirtualcam  # noqa: F401
    except ImportError:
        r = cli("live", REF, "--source", DRIVE, "--no-window", "--virtual-camera")
        assert_clean_error(r, 1, "pyvirtualcam", "reenact-face[live]")
    assert os.listdir(tmp_path) == []


def test_virtual_camera_without_pyvirtualcam_is_a_clear_error(anim, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # as if not installed
    with pytest.raises(reenact.ReenactError, match="pyvirtualcam") as e:
        live.run_live(anim, live.LiveOptions(source=str(DRIVE), window=False, virtual_camera=True))
    assert "reenact-face[live]" in e.value.hint


@pytest.mark.skipif(not shutil.which("xvfb-run"), reason="needs Xvfb (apt-get install xvfb) for a window")
def test_cli_live_window_under_xvfb(tmp_path):
    cmd = ["xvfb-run", "-a", sys.executable, "-m", "reenact", "live", str(REF), "--source", str(DRIVE),
           "--max-frames", "8", "--engine", "warp", "-o", str(tmp_path / "w.mp4")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "8 rendered of" in r.stdout and (tmp_path / "w.mp4").is_file()
