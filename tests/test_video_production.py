"""Production video features end to end (through the console script, as a user runs them):
interrupted and resumed renders, batch jobs with failures, face choice, transfer modes, frame
folders. Inputs are cut small (1 s, 320×180) so the whole file runs in about a minute."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from reenact import media, video
from reenact.config import InferenceConfig, VideoOptions
from reenact.landmarks import Landmarker
from tests.conftest import REPO
from tests.test_cli import assert_clean_error, no_leftovers, reenact

EXAMPLES = REPO / "examples"
REF, POSE = EXAMPLES / "ref.jpg", EXAMPLES / "pose.jpg"
SMALL = ("--max-side", "320")


def ffmpeg(*args) -> None:
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """short.mp4: 1 s (24 frames) of the bundled driver at 320×180 with audio; two.mp4: the same
    beside its mirror image (two faces); frames/: its first 8 frames as PNG files."""
    d = tmp_path_factory.mktemp("clips")
    short, two, frames = d / "short.mp4", d / "two.mp4", d / "frames"
    ffmpeg("-i", EXAMPLES / "drive.mp4", "-t", "1", "-vf", "scale=320:180", "-c:v", "libx264",
           "-preset", "veryfast", "-c:a", "aac", short)
    ffmpeg("-i", short, "-filter_complex", "[0:v]split[a][b];[b]hflip[m];[a][m]hstack", "-c:v", "libx264",
           "-preset", "veryfast", "-an", two)
    frames.mkdir()
    for i, f in enumerate(media.VideoReader(short)):
        if i < 8:
            media.write_image(frames / f"{i:06d}.png", f)
    return {"short": short, "two": two, "frames": frames}


def frames_of(path: Path) -> list[np.ndarray]:
    return list(media.VideoReader(path))


def state(out: Path) -> dict:
    try:
        return json.loads((out.parent / f".{out.name}.reenact-parts" / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def start_and_stop(args: list, out: Path, sig: int, *, after_chunks: int) -> subprocess.CompletedProcess:
    """Start `reenact video …`, send `sig` once `after_chunks` chunks are complete."""
    proc = subprocess.Popen([sys.executable, "-m", "reenact", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(state(out).get("chunks_done", [])) < after_chunks:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_compare_video_decodes_the_driver_again_in_step(clips, tmp_path):
    """--compare reads the driver a second time (pass 2, decoded ahead in a thread) across
    chunks: every output frame shows its own driver frame on the left."""
    out = tmp_path / "cmp.mp4"
    r = reenact("video", REF, clips["short"], *SMALL, "--engine", "warp", "--compare", "--chunk-frames", "10",
                "-o", out)
    assert r.returncode == 0, r.stderr
    driver, result = frames_of(clips["short"]), frames_of(out)
    assert len(result) == len(driver) == 24
    h = result[0].shape[0]
    w = round(driver[0].shape[1] * h / driver[0].shape[0])
    for d, o in zip(driver, result):
        left = cv2.resize(d, (w, h), interpolation=cv2.INTER_AREA).astype(int)
        assert np.abs(o[:, :w].astype(int) - left).mean() < 6


def test_a_large_driver_is_decoded_shrunk_in_both_passes(clips, tmp_path, monkeypatch):
    """A driver above DRIVER_MAX_SIDE comes shrunk from ffmpeg, for its landmarks (pass 1) and
    its pixels (pass 2, --compare), and the output is as large as before. (How close its
    landmarks stay is measured on real 4K drivers: `video.DRIVER_MAX_SIDE`.)"""
    from reenact import pipeline

    shown = []
    real = pipeline.side_by_side
    monkeypatch.setattr(video, "side_by_side", lambda d, o: shown.append(d.shape) or real(d, o))
    out = tmp_path / "o.mp4"
    monkeypatch.setattr(video, "DRIVER_MAX_SIDE", 160)  # the 320×180 clip is "large"
    s = video.reenact_video(REF, clips["short"], out, InferenceConfig(engine="warp", compare=True, max_side=320),
                            overwrite=True)
    assert set(shown) == {(90, 160, 3)} and s.with_face == 24
    small = frames_of(out)
    monkeypatch.setattr(video, "DRIVER_MAX_SIDE", 1920)
    video.reenact_video(REF, clips["short"], out, InferenceConfig(engine="warp", compare=True, max_side=320),
                        overwrite=True)
    full = frames_of(out)
    assert len(small) == len(full) == 24 and small[0].shape == full[0].shape


def test_opened_ahead_gives_its_source_or_error_and_closes_what_nobody_took(monkeypatch):
    closed = []

    class Source:
        def close(self):
            closed.append(self)

    def slow_open(path, **kw):
        time.sleep(0.2)
        if path == "bad":
            raise media.CorruptMedia("broken driver")
        return Source()

    monkeypatch.setattr(media, "open_frames", slow_open)
    with media.OpenedAhead("good") as ahead:
        source = ahead.take()
    assert isinstance(source, Source) and not closed  # taken: the taker closes it
    with pytest.raises(media.CorruptMedia, match="broken driver"), media.OpenedAhead("bad") as ahead:
        ahead.take()
    ahead = media.OpenedAhead("good")
    ahead.close()  # still opening: waited for, then closed
    assert len(closed) == 1


def test_the_driver_opened_ahead_is_closed_when_the_photo_fails(tmp_path):
    from reenact.errors import NoFaceFound
    from tests.test_media import ffmpeg_children

    blank = tmp_path / "blank.png"
    media.write_image(blank, np.full((180, 320, 3), 128, np.uint8))
    with pytest.raises(NoFaceFound):
        video.reenact_video(blank, EXAMPLES / "drive.mp4", tmp_path / "o.mp4", InferenceConfig(engine="warp"))
    deadline = time.time() + 10
    while ffmpeg_children() and time.time() < deadline:
        time.sleep(0.05)
    assert not ffmpeg_children() and no_leftovers(tmp_path) == ["blank.png"]


@pytest.mark.slow
def test_interrupted_render_resumes_to_the_same_video(clips, tmp_path):
    args = ["video", REF, clips["short"], *SMALL, "--chunk-frames", "4", "-o"]
    full, part = tmp_path / "full.mp4", tmp_path / "part.mp4"
    assert reenact(*args, full).returncode == 0
    # Ctrl-C after a chunk: exit 130, the completed chunks are kept, and the user is told how to go on.
    r = start_and_stop([*args, part], part, signal.SIGINT, after_chunks=1)
    assert r.returncode == 130 and "--resume" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not part.exists() and state(part)["chunks_done"]
    # Without --resume the unfinished render is not silently overwritten; other options do not resume.
    assert_clean_error(reenact(*args, part), 5, "unfinished", "--resume")
    assert_clean_error(reenact(*args[:-1], "--no-smooth", "-o", part, "--resume"), 5, "other options")
    # Resume, and kill that run outright (SIGKILL: no clean-up at all) after one more chunk.
    done = len(state(part)["chunks_done"])
    r = start_and_stop([*args, part, "--resume"], part, signal.SIGKILL, after_chunks=done + 1)
    assert r.returncode == -signal.SIGKILL and not part.exists()
    r = reenact(*args, part, "--resume")
    assert r.returncode == 0 and "resumed" in r.stdout, r.stderr
    # The same video: frame count, fps, audio and (decoded) frames identical to the uninterrupted one.
    a, b = media.probe_video(full), media.probe_video(part)
    assert (a.fps, a.has_audio, a.width, a.height) == (b.fps, b.has_audio, b.width, b.height) and b.has_audio
    fa, fb = frames_of(full), frames_of(part)
    assert len(fa) == len(fb) == len(frames_of(clips["short"]))
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb))
    assert no_leftovers(tmp_path) == ["full.mp4", "part.mp4"]


@pytest.mark.slow
def test_batch_continues_past_failures_and_writes_a_summary(clips, tmp_path):
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), (np.random.default_rng(0).random((200, 200, 3)) * 255).astype(np.uint8))
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("reference,driver,output,options\n"
                    f"{REF},{POSE},img.png,--transfer expression\n"
                    f"{REF},{clips['short']},vid.mp4,--motion absolute\n"
                    f"noise.png,{clips['short']},noface.mp4,\n"
                    f"missing.jpg,{clips['short']},,\n"
                    f"{REF},{clips['short']},opt.mp4,--regions nose\n")
    out = tmp_path / "out"
    r = reenact("batch", jobs, "-o", out, "--job-options", "--max-side 320")
    assert r.returncode == 1 and "3 of 5 jobs failed" in r.stderr and "Traceback" not in r.stderr, r.stderr
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(x["status"], x["exit_code"]) for x in rows] == [
        ("ok", "0"), ("ok", "0"), ("failed", "3"), ("failed", "4"), ("failed", "2")]
    assert rows[2]["error_class"] == "NoFaceFound" and "no face" in rows[2]["error"]
    assert rows[1]["frames"] == "24" and float(rows[1]["seconds"]) > 0
    assert json.loads((out / "summary.json").read_text())["totals"] == {"ok": 2, "failed": 3, "skipped": 0, "not run": 0}
    assert sorted(p.name for p in out.iterdir()) == ["img.png", "summary.csv", "summary.json", "vid.mp4"]
    # Again with --resume: finished outputs are skipped, the failures are tried again.
    r = reenact("batch", jobs, "-o", out, "--job-options", "--max-side 320", "--resume")
    assert r.returncode == 1
    assert [x["status"] for x in csv.DictReader((out / "summary.csv").open())] == ["skipped", "skipped", "failed", "failed", "failed"]
    # All pairs of two folders: photos and a folder of frames as drivers.
    refs, drivers = tmp_path / "refs", tmp_path / "drivers"
    refs.mkdir(), drivers.mkdir()
    (refs / "ref.jpg").write_bytes(REF.read_bytes())
    (drivers / "pose.jpg").write_bytes(POSE.read_bytes())
    (drivers / "clip").symlink_to(clips["frames"])
    r = reenact("batch", "--refs", refs, "--drivers", drivers, "-o", tmp_path / "pairs", "--job-options", "--max-side 320")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == [
        "ref-as-clip.mp4", "ref-as-pose.png", "summary.csv", "summary.json"]
    assert_clean_error(reenact("batch", "-o", out), 2, "JOBS.csv")
    assert_clean_error(reenact("batch", jobs, "-o", out, "--job-options", "--motoin absolute"), 2, "motoin")


def changed_columns(result: Path, original: np.ndarray) -> tuple[int, int]:
    diff = np.flatnonzero((media.read_image(result).astype(int) != original).any(axis=(0, 2)))
    return int(diff.min()), int(diff.max())


def test_face_choice_in_a_two_face_reference(tmp_path):
    gap = np.full((360, 320, 3), 128, np.uint8)  # keeps each face's head region in its own half
    two = np.hstack([media.read_image(REF), gap, media.read_image(POSE)])  # 1600×360
    media.write_image(tmp_path / "two.png", two)
    for face, half in (("0", (0, 800)), ("1", (800, 1600))):
        out = tmp_path / f"f{face}.png"
        r = reenact("image", tmp_path / "two.png", POSE, "--face", face, "-o", out)
        assert r.returncode == 0 and "2 faces in the reference" in r.stderr, r.stderr
        lo, hi = changed_columns(out, two)
        assert half[0] <= lo and hi < half[1], (face, lo, hi)
    assert_clean_error(reenact("image", tmp_path / "two.png", POSE, "--face", "2", "-o", tmp_path / "x.png"),
                       2, "has 2 faces")
    assert_clean_error(reenact("image", tmp_path / "two.png", POSE, "--face", "left", "-o", tmp_path / "x.png"),
                       2, "largest")


def test_face_choice_in_a_group_photo(shared_data, tmp_path):
    group = shared_data / "samples" / "pyfeat" / "multi_face.jpg"
    img = media.read_image(group)
    with Landmarker(mode="image") as lm:
        faces = sorted(lm.detect(img), key=lambda f: (f.bbox[0] + f.bbox[2]) / 2)
    out = tmp_path / "g.png"
    r = reenact("image", group, POSE, "--face", "1", "-o", out)
    assert r.returncode == 0 and "5 faces in the reference; used face 1" in r.stderr, r.stderr
    lo, hi = changed_columns(out, img)
    x0, _, x1, _ = faces[1].bbox
    assert x0 - (x1 - x0) <= lo and hi <= x1 + (x1 - x0), (lo, hi, faces[1].bbox)


@pytest.mark.slow
def test_driver_face_choice_in_a_two_face_video(clips, tmp_path):
    r = reenact("video", REF, clips["two"], *SMALL, "--driver-face", "1", "-o", tmp_path / "v.mp4")
    assert r.returncode == 0, r.stderr
    assert "up to 2 faces in each driver frame; used face 1" in r.stderr and "up to 2 per driver frame" in r.stdout
    r = reenact("video", REF, clips["two"], *SMALL, "--driver-face", "2", "-o", tmp_path / "w.mp4")
    assert_clean_error(r, 3, "face 2", "at most 2")
    assert no_leftovers(tmp_path) == ["v.mp4"]


def measure(path: Path, lm: Landmarker) -> tuple[np.ndarray, float, float]:
    """(yaw/pitch/roll, mouth opening, eye opening) of the face in an image."""
    f = lm.detect(media.read_image(path))[0]
    p = f.points
    span = np.linalg.norm(p[33, :2] - p[263, :2])
    eyes = (np.linalg.norm(p[159, :2] - p[145, :2]) + np.linalg.norm(p[386, :2] - p[374, :2])) / span
    return f.pose.as_array(), np.linalg.norm(p[13, :2] - p[14, :2]) / span, eyes


def test_transfer_modes_move_only_what_was_asked(tmp_path):
    outs = {}
    for name, opts in (("pose", ["--transfer", "pose"]), ("expression", ["--transfer", "expression"]),
                       ("mouth", ["--regions", "mouth"])):
        outs[name] = tmp_path / f"{name}.png"
        assert reenact("image", REF, POSE, *opts, "-o", outs[name]).returncode == 0
    with Landmarker(mode="image") as lm:
        ref, drv = measure(REF, lm), measure(POSE, lm)
        pose_only, expr_only, mouth_only = (measure(outs[k], lm) for k in ("pose", "expression", "mouth"))
    turn = np.abs(ref[0] - drv[0]).sum()
    # --transfer pose: the head turns like the driver's, the mouth stays open like the reference's.
    assert np.abs(pose_only[0] - drv[0]).sum() < 0.6 * turn
    assert abs(pose_only[1] - ref[1]) < 0.3 * abs(ref[1] - drv[1])
    # --transfer expression: the head keeps the reference's pose, the mouth closes like the driver's
    # (the target's is closed; at this pose the 2-D warp leaves the lips partly apart, so the
    # detector reads a third of the way closed: what is checked is that it moved, the head did not).
    assert np.abs(expr_only[0] - ref[0]).sum() < 0.3 * turn
    assert expr_only[1] < ref[1] - 0.25 * (ref[1] - drv[1])
    # --regions mouth: the mouth closes, the eyes keep the reference's opening.
    assert abs(mouth_only[1] - drv[1]) < 0.4 * abs(ref[1] - drv[1])
    assert abs(mouth_only[2] - ref[2]) < 0.25 * abs(ref[2] - drv[2])


@pytest.mark.slow
def test_frame_folder_driver_and_option_errors(clips, tmp_path):
    out = tmp_path / "f.mp4"
    r = reenact("video", REF, clips["frames"], *SMALL, "--fps", "10", "--motion", "absolute", "-o", out)
    assert r.returncode == 0 and "absolute" in r.stdout, r.stderr
    info = media.probe_video(out)
    assert info.fps == 10 and not info.has_audio and len(frames_of(out)) == 8
    assert_clean_error(reenact("video", REF, clips["short"], "--fps", "10", "-o", tmp_path / "a.mp4"), 2, "--fps")
    assert_clean_error(reenact("video", REF, clips["frames"], *SMALL, "--anchor", "50", "-o", tmp_path / "b.mp4"),
                       2, "--anchor 50")
    assert_clean_error(reenact("video", REF, clips["short"], "--transfer", "pose", "--regions", "mouth",
                               "-o", tmp_path / "c.mp4"), 2, "--regions")
    assert no_leftovers(tmp_path) == ["f.mp4"]


# ───────────────────────────── library pieces (fast) ─────────────────────────────

def test_frame_folder_reader_natural_order_and_checks(tmp_path):
    from reenact.errors import CorruptMedia, MediaError

    for i in (1, 2, 10):
        media.write_image(tmp_path / f"f{i}.png", np.full((16, 24, 3), i, np.uint8))
    (tmp_path / ".hidden.png").write_bytes(b"")
    with media.open_frames(tmp_path, fps=12.5) as r:
        assert (r.info.width, r.info.height, r.info.fps, r.info.n_frames, r.info.has_audio) == (24, 16, 12.5, 3, False)
        assert [int(f[0, 0, 0]) for f in r] == [1, 2, 10]
    media.write_image(tmp_path / "f11.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(CorruptMedia, match="size"):
        list(media.open_frames(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match="no image frames"):
        media.open_frames(tmp_path / "empty")


def test_concat_videos_is_lossless_and_adds_audio_once(clips, tmp_path):
    src = frames_of(clips["short"])
    parts = []
    for k in range(3):
        parts.append(tmp_path / f"p{k}.mp4")
        with media.VideoWriter(parts[-1], fps=24000 / 1001, size=(320, 180)) as w:
            for f in src[8 * k: 8 * (k + 1)]:
                w.write(f)
    pieces = [f for p in parts for f in frames_of(p)]
    out = media.concat_videos(parts, tmp_path / "joined.mp4", duration=24 * 1001 / 24000, audio_from=clips["short"])
    joined = frames_of(out)
    assert len(joined) == 24 and all(np.array_equal(a, b) for a, b in zip(joined, pieces))
    info = media.probe_video(out)
    assert info.has_audio and info.duration == pytest.approx(1.0, abs=0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joined.mp4", "p0.mp4", "p1.mp4", "p2.mp4"]


def test_work_dir_refuses_a_changed_job(tmp_path):
    from reenact import resume
    from reenact.errors import OutputError

    out = tmp_path / "o.mp4"
    inputs = {"reference": {"size": 1}, "driver": {"size": 2}}
    work = resume.WorkDir.open(out, job="a", inputs=inputs, chunk=10, resume=False, overwrite=False)
    work.mark_chunk(0)
    with pytest.raises(OutputError, match="in use by another run"):  # still locked by `work`
        resume.WorkDir.open(out, job="a", inputs=inputs, chunk=10, resume=True, overwrite=False)
    work.release()  # as when its process ends
    with pytest.raises(OutputError, match="unfinished"):
        resume.WorkDir.open(out, job="a", inputs=inputs, chunk=10, resume=False, overwrite=False)
    with pytest.raises(OutputError, match="driver changed"):
        resume.WorkDir.open(out, job="a", inputs={**inputs, "driver": {"size": 3}}, chunk=10, resume=True,
                            overwrite=False)
    with pytest.raises(OutputError, match="other options"):
        resume.WorkDir.open(out, job="b", inputs=inputs, chunk=10, resume=True, overwrite=False)
    again = resume.WorkDir.open(out, job="a", inputs=inputs, chunk=10, resume=True, overwrite=False)
    assert again.resumed and again.state.chunks_done == [0]
    again.release()
    fresh = resume.WorkDir.open(out, job="b", inputs=inputs, chunk=10, resume=False, overwrite=True)
    assert not fresh.resumed and fresh.state.chunks_done == []
    assert not fresh.finish_failed() and not fresh.path.exists()  # nothing complete: removed


def test_run_batch_records_failures_and_stops_on_ctrl_c(tmp_path):
    from reenact import batch
    from reenact.errors import Interrupted, NoFaceFound

    jobs = [batch.Job(REF, POSE, tmp_path / f"{i}.png") for i in range(4)]
    calls = []

    def settings(job):
        calls.append(job.output.name)
        if job.output.name == "0.png":
            raise NoFaceFound("no face found in a.jpg")
        if job.output.name == "1.png":
            raise RuntimeError("boom")
        raise Interrupted("interrupted — 2 completed chunks kept")

    with pytest.raises(KeyboardInterrupt) as stop:
        batch.run_batch(jobs, settings)
    results = stop.value.results
    assert calls == ["0.png", "1.png", "2.png"]
    assert [(r.status, r.exit_code) for r in results] == [("failed", 3), ("failed", 1), ("failed", 130), ("not run", None)]
    assert results[1].error_class == "RuntimeError" and "boom" in results[1].error
    csv_path, json_path = batch.write_summary(results, tmp_path)
    assert json.loads(json_path.read_text())["totals"] == {"ok": 0, "failed": 3, "skipped": 0, "not run": 1}


def test_a_swallowed_ctrl_c_stops_at_the_next_progress_update(monkeypatch):
    from reenact import cli

    monkeypatch.setattr(cli, "_interrupted", False)
    update = cli._stage_progress(cli.progress_bar())
    update("rendering", 1, 10)
    try:
        cli._on_signal(signal.SIGINT, None)
    except KeyboardInterrupt:
        pass  # as Python does when the signal lands in an at-fork handler (ffmpeg being started)
    with pytest.raises(KeyboardInterrupt):
        update("rendering", 2, 10)


def test_a_swallowed_ctrl_c_prints_no_traceback():
    """Where Python cannot raise the signal's KeyboardInterrupt (a finalizer, an at-fork handler),
    it reports it through sys.unraisablehook as 'Exception ignored … Traceback'; the CLI's hook
    keeps that quiet (the next progress update stops the render), and reports anything else."""
    code = (
        "import signal, sys, weakref\n"
        "from reenact import cli\n"
        "sys.unraisablehook = cli._unraisable\n"
        "class A: pass\n"
        "def boom(_): raise KeyboardInterrupt\n"
        "def bad(_): raise ValueError('other')\n"
        "a = A(); r = weakref.ref(a, boom); del a\n"
        "b = A(); q = weakref.ref(b, bad); del b\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "KeyboardInterrupt" not in r.stderr and "ValueError: other" in r.stderr, r.stderr


@pytest.mark.parametrize("raised", [ImportError("initialization failed"), BrokenPipeError(32, "Broken pipe")])
def test_an_error_after_ctrl_c_is_reported_as_the_interruption(tmp_path, monkeypatch, raised):
    """A KeyboardInterrupt landing in an extension module's initialisation comes back as
    "ImportError: initialization failed" (onnxruntime, imported as the render starts), and a
    SIGTERM'd ffmpeg breaks its pipe: after Ctrl-C / SIGTERM either is the interruption (exit 130),
    not an internal or OS error. The same error without a signal stays what it is."""
    from typer.testing import CliRunner

    from reenact import cli

    def interrupted_write(*_a, **_k):
        if signalled:
            try:
                cli._on_signal(signal.SIGTERM, None)
            except KeyboardInterrupt:  # caught by native code, which raises its own error
                pass
        raise raised

    out = tmp_path / "o.png"
    monkeypatch.setattr(media, "write_image", interrupted_write)
    for signalled in (False, True):
        monkeypatch.setattr(cli, "_interrupted", False)
        r = CliRunner().invoke(cli.app, ["image", str(REF), str(POSE), "-o", str(out)])
        assert (r.exit_code == 130) == signalled and r.exit_code != 0, r.output
        assert ("interrupted" in r.output) == signalled and "Traceback" not in r.output, r.output
        assert not out.exists()


@pytest.mark.parametrize("workers", [1, 3])
def test_rendered_frames_come_in_order_with_the_skips_in_step(workers):
    """Pass 2's frame loop (`video._rendered`): frames of the chunks to render come out in order
    even when their renders finish out of order, and the frames of completed chunks are skipped
    in order between the plans (per-frame state such as the k-shot choice stays in step)."""
    calls = []

    def plan(i):
        calls.append(("plan", i))

        def render():
            time.sleep(0.01 * (2 - i % 3))  # later frames finish first
            return i
        return render

    out = list(video._rendered(plan, lambda i: calls.append(("skip", i)), 11, 3, {1, 3}, workers))
    assert out == [0, 1, 2, 6, 7, 8]
    assert calls == [("plan", i) if i // 3 not in (1, 3) else ("skip", i) for i in range(11)]


def test_a_failed_frame_render_stops_the_loop_and_cancels_the_rest():
    started = []

    def plan(i):
        def render():
            started.append(i)
            if i == 2:
                raise RuntimeError("frame 2 failed")
            time.sleep(0.01)
            return i
        return render

    frames = video._rendered(plan, lambda i: None, 1000, 10, set(), 2)
    with pytest.raises(RuntimeError, match="frame 2"):
        list(frames)
    assert len(started) < 20  # a few frames ahead at most, never the whole video


def test_parallel_render_writes_the_same_video(clips, tmp_path, monkeypatch):
    """Frames rendered in several threads (`video.render_workers`, used for large frames) make
    the same video as one at a time, frame for frame, across chunk boundaries."""
    def render(workers: int, name: str) -> Path:
        monkeypatch.setattr(video, "render_workers", lambda size, engine: workers)
        out = tmp_path / name
        summary = video.reenact_video(REF, clips["short"], out, InferenceConfig(engine="fusion"),
                                      options=VideoOptions(chunk=7))
        assert summary.workers == workers
        return out

    one, three = frames_of(render(1, "one.mp4")), frames_of(render(3, "three.mp4"))
    assert len(one) == len(three) == 24
    assert all(np.array_equal(a, b) for a, b in zip(one, three))


def test_render_workers_follow_frame_size_engine_and_cores():
    cores = min(video.RENDER_WORKERS_MAX, len(os.sched_getaffinity(0)))
    assert video.render_workers((320, 180), "warp") == 1  # the plain warp's small frames: one thread
    assert video.render_workers((320, 180), "fusion") == cores  # learned regions: worth a hand-off
    assert video.render_workers((320, 180), "gan") == cores
    assert video.render_workers((1920, 1080), "warp") == cores
    assert 1 <= cores <= video.RENDER_WORKERS_MAX
