"""Video reenactment: two passes over the driver, resumable chunks, constant memory.

    pass 1  tracking   decode the driver (a video, or a folder of frames), follow the chosen face
                       (`tracking`), one landmark record per frame into an on-disk track
            between    fill gaps and smooth (`temporal.process_track`), choose the anchor frame
                       (relative motion: nearest the reference in pose and expression)
    pass 2  rendering  retarget + engine + paste-back per frame; every `chunk` frames become one
                       H.264 segment; at the end the segments are joined without re-encoding
                       and the driver's audio is muxed once over the whole video

Everything lives in a work folder beside the output (`reenact.resume`): a render that is stopped
(Ctrl-C, SIGTERM, SIGKILL, a crash) keeps its completed chunks and continues with `resume=True`.
Decoding is repeated in pass 2 only for `--compare` (the renderer needs only the track).
Memory does not depend on the video's length: frames stream, the track is read one record at a
time, and only a 1-byte status per frame is held.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from reenact import media, motion, resume, runtime, temporal, tracking
from reenact.config import InferenceConfig, MotionConfig, VideoOptions
from reenact.errors import CorruptMedia, Interrupted, NoFaceFound, UsageError, from_os_error
from reenact.landmarks import Face, Landmarker
from reenact.pipeline import Reenactor, Reference, StageTimer, load_references, retargeter, side_by_side

# (stage, done, total): stage is "tracking" or "rendering"; total None when unknown.
Progress = Callable[[str, int, "int | None"], None]


@dataclass
class VideoSummary:
    """What happened in a video render. Frames without the driver's face: `interpolated`
    (short gaps between faces), `held` (the nearest face reused: long gaps, the end, a short
    lead-in) and `still` (a long lead-in before the first face: the reference unchanged).
    `driver_faces`: the most faces seen in one driver frame; `anchor`: the driver frame used as
    the anchor (relative motion); `chunks_resumed`: segments reused from an interrupted run;
    `repeated` / `dropped`: driver frames repaired to keep the output one to one with the
    driver's timeline (and its audio). `workers`: threads that rendered frames at once
    (`render_workers`; the render and paste stages of `seconds` add up their times)."""

    frames: int = 0
    with_face: int = 0
    interpolated: int = 0
    held: int = 0
    still: int = 0
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)
    audio: bool = False
    reference_faces: int = 0
    driver_faces: int = 0
    motion: str = "relative"
    anchor: int | None = None
    smoothed: bool = True
    chunks: int = 0
    chunks_resumed: int = 0
    repeated: int = 0  # driver frames that could not be decoded: the previous frame was used
    dropped: int = 0  # surplus driver frames dropped to keep the driver's frame rate
    multi: str = "single"
    usage: list = field(default_factory=list)  # selection: (reference, frames, [(first, last)])
    workers: int = 1
    seconds: dict[str, float] = field(default_factory=dict)
    audio_from: str = "driver"  # whose audio was asked for: "driver", "source" or "none"
    source: "SourceSummary | None" = None  # video-to-video only


@dataclass
class SourceSummary:
    """A video source's side of a render (`reenact.v2v`): its `frames` at `fps` (after its own
    constant-rate decoding), those `with_face`; `passed`: output frames whose source frame had
    no face (or whose driver frame had none yet) and so are the source frame unchanged; `rest`:
    the source frame taken as its resting face; `length`: what decided the output's length;
    `ping_pong`: which input played backward to fill it ("", "source", "driver"); `resting`:
    (frames in the resting bank, output frames rendered from it), `v2v.resting_bank`; `covered`:
    output frames that kept their own lower face because a hand covers it (`reenact.occlusion`);
    `appearance`: the source frame whose mouth and eyes the region generators encode (None: none
    redraws regions, or each frame its own; `v2v.APPEARANCE_WINDOW`); `unread`: the input
    ("source", "driver") that goes on after the output ends, read only as far as it is shown
    ("": neither)."""

    path: str
    frames: int
    fps: float
    with_face: int
    passed: int
    rest: int
    length: str
    ping_pong: str
    resting: tuple[int, int] = (0, 0)
    covered: int = 0
    appearance: int | None = None
    unread: str = ""


def reenact_video(ref_path: str | Path | list, drive_path: str | Path, out_path: str | Path,
                  config: InferenceConfig, *, options: VideoOptions = VideoOptions(),
                  overwrite: bool = False, progress: Progress | None = None) -> VideoSummary:
    """Render the reference with a driver video (or frame folder) into `out_path` (driver's fps,
    frame count and audio). `ref_path`: one photo, or several / a folder / a glob of the same
    person (the first is the primary; `options.multi`, see `pipeline.Reenactor`). Raises
    NoFaceFound (nothing written) when no driver frame has the chosen face; OutputError for an
    unfinished render without `options.resume`; Interrupted (exit 130) on Ctrl-C/SIGTERM once a
    chunk is complete (the work folder is kept)."""
    from reenact import v2v

    timer = StageTimer()
    specs = list(ref_path) if isinstance(ref_path, (list, tuple)) else [ref_path]
    target = media.check_output_path(out_path, overwrite=overwrite, kinds=media.WRITABLE_VIDEO_SUFFIXES,
                                     inputs=(*specs, drive_path))
    source = Path(specs.pop(0)).expanduser() if v2v.is_video_source(specs[0], options) else None
    if source is None:
        v2v.check_photo_options(options)
    job = _job_hash(config, options)
    options = dataclasses.replace(options, motion=options.motion.with_transfer_for(source is not None))
    # A photo's driver is opened (probed, its decoder started) while the photos load; a video
    # source opens both videos itself.
    with (media.OpenedAhead(drive_path, **_driver_reading(options))
          if source is None else contextlib.nullcontext()) as driver:
        refs = []
        if specs:  # photos of the person (with a video source: more views of it, k-shot)
            with Landmarker(mode="image") as lm, timer("landmarks"):
                refs = load_references(specs, lm, max_side=config.max_side, choice=options.ref_face)
        inputs = {f"reference{i or ''}": resume.input_signature(r.name) for i, r in enumerate(refs)}
        if source is not None:
            inputs["source"] = resume.input_signature(source)
        work = resume.WorkDir.open(target, job=job, chunk=options.chunk,
                                   inputs={**inputs, "driver": resume.input_signature(drive_path)},
                                   resume=options.resume, overwrite=overwrite)
        try:
            if source is not None:
                summary = v2v.render_job(source, refs, Path(drive_path), target, config, options, work, timer,
                                         progress, overwrite)
            else:
                summary = _render_job(refs, Path(drive_path), driver, target, config, options, work, timer,
                                      progress, overwrite)
        except KeyboardInterrupt:
            if work.finish_failed():
                done = len(work.completed_chunks())
                raise Interrupted(
                    f"interrupted — {done} completed chunk{'s' if done != 1 else ''} kept in {work.path}",
                    "run the same command with --resume to continue") from None
            raise
        except OSError as e:  # disk full, a folder gone or read-only: keep what can be resumed
            kept = work.finish_failed()
            raise from_os_error(e, "output", hint=_resume_hint(e, work) if kept else None) from None
        except BaseException:
            work.finish_failed()
            raise
        work.remove()
        summary.seconds = dict(timer.seconds)
        return summary


def _resume_hint(e: OSError, work: resume.WorkDir) -> str:
    done = len(work.completed_chunks())
    fix = "free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
    return f"{fix}, then run the same command with --resume ({done} completed chunk(s) kept in {work.path})"


def _job_hash(config: InferenceConfig, options: VideoOptions) -> str:
    fields = dataclasses.asdict(options)
    fields.pop("resume")
    return resume.job_hash({"config": dataclasses.asdict(config), **fields})


def _render_job(refs: list[Reference], drive_path: Path, driver: media.OpenedAhead, target: Path,
                config: InferenceConfig, options: VideoOptions, work: resume.WorkDir, timer: StageTimer,
                progress: Progress | None, overwrite: bool) -> VideoSummary:
    ref = refs[0]
    with driver.take() as src:
        info = src.info
        if work.state.track is None:
            track_pass(src, work, options, timer, progress)
    track = work.state.track
    require_face(track, drive_path, options.driver_face)
    status = process_pass(work, info.fps, options.motion, timer)
    relative = options.motion.mode == "relative"
    anchor = anchor_frame(work, ref.face.points, status, options.motion) if relative else None
    r = Reenactor(refs, config, timer=timer, retarget=retargeter(ref, options.motion, None if anchor is None else anchor[1]),
                  multi=options.multi)
    size = output_size(r, info, config)
    summary = summarise(status, track, info, size, ref.n_faces, options, anchor)
    summary.workers = render_workers(size, r.engine.name)
    summary.chunks_resumed = _render_chunks(work, r, status, drive_path, options, size, info.fps, timer, progress,
                                            summary.workers)
    summary.multi, summary.usage = r.mode, r.usage() if r.mode == "select" else []
    work.hold_signals()  # from here the render completes: the output, then the folder removed
    with timer("join"):
        media.concat_videos([work.segment(k) for k in range(summary.chunks)], target,
                            duration=len(status) / info.fps, overwrite=overwrite,
                            audio_from=None if drive_path.is_dir() or options.audio == "none" else drive_path)
    return summary


def require_face(track: dict, path: Path, choice: str | int, what: str = "driver") -> None:
    """NoFaceFound (exit 3) when pass 1 found the chosen face in no frame of `path`."""
    if track["with_face"] > 0:
        return
    n = f"the {track['frames']} frames of {path}"
    if choice == "largest":
        raise NoFaceFound(f"no face found in any of {n}", f"the {what} video must show a face")
    option = "--driver-face" if what == "driver" else "--face"
    raise NoFaceFound(f"{tracking.describe_choice(choice)} was not found in any of {n}",
                      f"it shows at most {track['max_faces']} faces at once; {option} counts from 0")


def track_pass(src, work: resume.WorkDir, options: VideoOptions, timer: StageTimer,
               progress: Progress | None, *, source: bool = False, watch=None,
               until: Callable[[], int | None] | None = None) -> None:
    """Pass 1 into work/track.f32 (a video source: work/source-track.f32, following `--face`);
    records its summary in the state. `src`: the frames (with `.info`); `watch`: as for
    `track_both`; `until`: as for `tracking.track_driver`. Detects in
    `tracking.tracking_workers()` threads."""
    _record(work, _track(src, work, options, timer, progress, source=source, watch=watch, until=until,
                         workers=tracking.tracking_workers()), source=source)


# Given the whole length in frames of the source (True) or of the driver (False), how many
# frames of the other one the output shows (None: all of them); `v2v.frames_used`.
FramesUsed = Callable[[bool, int], "int | None"]


def track_both(source, driver, work: resume.WorkDir, options: VideoOptions, timer: StageTimer,
               progress: Progress | None, watch=None, used: FramesUsed | None = None) -> None:
    """Pass 1 of a video source and its driver at once (those not tracked yet; `track_pass`
    each): the source in a thread of its own, the driver here. Mediapipe runs outside the GIL,
    so on two cores both take little more than the longer one. An error or interruption in either
    stops the other; each completed track is recorded (a resumed render keeps it). `watch`: sees
    each source frame as it is tracked (`tracking.track_driver`). One landmarker each (the two
    tracks already fill two cores); a track left to do alone gets `track_pass`'s.

    `used`: once one video has been tracked to its end, the other is tracked no further than
    the output shows it, and its track is cut to exactly that (`_cut_unused`: the same however
    far it had got, so a resumed render gives the same file)."""
    used = used or (lambda source_done, frames: None)
    limits: dict[str, int | None] = {}  # "source"/"driver" → frames of it the output shows, once known

    def ended(key: str, summary: dict) -> dict:
        if not summary["cut"]:  # the video's whole length
            limits["driver" if key == "source" else "source"] = used(key == "source", summary["frames"])
        return summary

    if work.state.source_track is None and work.state.track is None:
        stop, done, failed = threading.Event(), {}, []

        def source_pass() -> None:
            try:
                done["source"] = ended("source", _track(source, work, options, timer, progress, source=True,
                                                        stop=stop, watch=watch, until=lambda: limits.get("source")))
            except BaseException as e:  # noqa: BLE001 — raised again in this thread
                failed.append(e)
                stop.set()

        worker = threading.Thread(target=source_pass, name="track-source", daemon=True)
        worker.start()
        try:
            done["driver"] = ended("driver", _track(driver, work, options, timer, progress, stop=stop,
                                                    until=lambda: limits.get("driver")))
        except tracking.Stopped:
            pass  # the source's pass failed: its error is raised below
        except BaseException:
            stop.set()
            raise
        finally:
            while worker.is_alive():
                worker.join(0.2)  # short waits: a signal still reaches this thread
            for key, summary in done.items():
                _record(work, summary, source=key == "source")
        if failed:
            raise failed[0]
    else:
        for key, summary in (("source", work.state.source_track), ("driver", work.state.track)):
            if summary is not None:
                ended(key, summary)
        if work.state.track is None:
            track_pass(driver, work, options, timer, progress, until=lambda: limits.get("driver"))
            ended("driver", work.state.track)
        if work.state.source_track is None:
            track_pass(source, work, options, timer, progress, source=True, watch=watch,
                       until=lambda: limits.get("source"))
    _cut_unused(work, used)


def _cut_unused(work: resume.WorkDir, used: FramesUsed) -> None:
    """Cut each recorded track to the frames the output shows of it, as `used` says from the
    other video's whole length (a track cut short itself says nothing of its video's length)."""
    s, d = work.state.source_track, work.state.track
    for summary, other, source in ((s, d, True), (d, s, False)):
        n = None if other["cut"] else used(not source, other["frames"])
        if n is not None and summary["frames"] > n:
            _cut(work, n, source=source)


def _cut(work: resume.WorkDir, frames: int, *, source: bool) -> None:
    """Shorten a recorded track to its first `frames` frames, with the summary tracking only
    those would have given."""
    summary = dict(work.state.source_track if source else work.state.track)
    with temporal.FrameFile(work.file(_prefix(source) + "track.f32"), mode="a") as track:
        track.truncate(frames)
        found = temporal.frames_with_face(track)
    more = [[f, n] for f, n in summary["more_faces"] if f < frames]
    summary.update(frames=frames, with_face=int(found.sum()), first_face=int(np.argmax(found)) if found.any() else -1,
                   max_faces=max((n for _, n in more), default=0), more_faces=more, cut=True)
    _record(work, summary, source=source)


def _track(src, work: resume.WorkDir, options: VideoOptions, timer: StageTimer, progress: Progress | None, *,
           source: bool = False, stop: threading.Event | None = None, watch=None, workers: int = 1,
           until: Callable[[], int | None] | None = None) -> dict:
    total = src.info.n_frames
    stage = "tracking source" if source else "tracking"
    report = (lambda i: progress(stage, i, total)) if progress else None  # an estimate; the bar grows past it
    with temporal.FrameFile(work.file(_prefix(source) + "track.f32"), mode="w") as track:
        s = tracking.track_driver(src, track, choice=options.ref_face if source else options.driver_face,
                                  fps=src.info.fps, progress=report, timer=timer, stop=stop, watch=watch,
                                  workers=workers, until=until)
    if s.cut and progress:  # the bar's total counted the whole video: it ends here
        progress(stage, s.frames, s.frames)
    # frames ffmpeg repeated for undecodable ones (or dropped) to keep the video's timing
    return {**dataclasses.asdict(s), "repeated": getattr(src, "repeated", 0), "dropped": getattr(src, "dropped", 0)}


def _record(work: resume.WorkDir, summary: dict, *, source: bool) -> None:
    if source:
        work.state.source_track, work.state.source_processed = summary, False
    else:
        work.state.track, work.state.processed = summary, False
    work.save()


def _prefix(source: bool) -> str:
    return "source-" if source else ""


def process_pass(work: resume.WorkDir, fps: float, motion_cfg: MotionConfig, timer: StageTimer, *,
                 source: bool = False) -> np.ndarray:
    """Gaps filled and smoothed into work/points.f32 (once); the per-frame status. A video
    source (work/source-points.f32): smoothed like the driver, but no gap is filled (its
    face-less frames pass through unchanged)."""
    name = _prefix(source)
    status_file = work.file(name + "status.npy")
    done = work.state.source_processed if source else work.state.processed
    if done and status_file.exists():
        return np.load(status_file)
    with timer("smooth"), temporal.FrameFile(work.file(name + "track.f32")) as raw, \
            temporal.FrameFile(work.file(name + "points.f32"), mode="w") as out:
        status = temporal.process_track(raw, out, work.file(name + "forward.f32"), fps=fps,
                                        max_gap=motion_cfg.max_gap, smooth=motion_cfg.smooth, fill=not source)
    np.save(status_file, status)
    if source:
        work.state.source_processed = True
    else:
        work.state.processed = True
    work.save()
    return status


def anchor_frame(work: resume.WorkDir, ref_points: np.ndarray, status: np.ndarray,
                 motion_cfg: MotionConfig, *, pose_weight: float = 1.0) -> tuple[int, np.ndarray]:
    """(index, landmarks) of the anchor frame: `motion_cfg.anchor`, or the frame with a face
    nearest the reference's `ref_points` in pose and expression (`motion.choose_anchor`)."""
    with temporal.FrameFile(work.file("points.f32")) as pts:
        i = motion_cfg.anchor
        if i is None:
            faces = ((j, pts[j]) for j in np.flatnonzero(status == temporal.FACE))
            i, _ = motion.choose_anchor(ref_points, faces, pose_weight=pose_weight)
        elif i >= len(status):
            raise UsageError(f"--anchor {i} is past the driver's last frame ({len(status) - 1})",
                             "give a frame index within the video, or leave --anchor out")
        elif status[i] != temporal.FACE:
            raise UsageError(f"--anchor {i}: the driver's face was not found in that frame",
                             "choose a frame that shows the face, or leave --anchor out")
        work.state.anchor = int(i)
        work.save()
        return int(i), pts[i]


def output_size(r: Reenactor, info: media.VideoInfo, config: InferenceConfig) -> tuple[int, int]:
    w, h = r.output_size()
    if config.compare:
        w += max(1, round(info.width * h / info.height))
    return w + w % 2, h + h % 2


def summarise(status: np.ndarray, track: dict, info: media.VideoInfo, size: tuple[int, int],
              reference_faces: int, options: VideoOptions, anchor: tuple[int, np.ndarray] | None, *,
              frames: int | None = None) -> VideoSummary:
    """The summary of a render from the driver's status and track; `frames`: the output's
    length when it is not the driver's (video-to-video)."""
    counts = np.bincount(status, minlength=4)
    n = len(status) if frames is None else frames
    return VideoSummary(
        frames=n, with_face=int(counts[temporal.FACE]), interpolated=int(counts[temporal.INTERPOLATED]),
        held=int(counts[temporal.HELD]), still=int(counts[temporal.STILL]), fps=info.fps, size=size,
        audio=info.has_audio and options.audio != "none", reference_faces=reference_faces,
        driver_faces=int(track["max_faces"]), motion=options.motion.mode, anchor=None if anchor is None else anchor[0],
        smoothed=options.motion.smooth, chunks=math.ceil(n / options.chunk),
        repeated=int(track.get("repeated", 0)), dropped=int(track.get("dropped", 0)), audio_from=options.audio)


def _render_chunks(work: resume.WorkDir, r: Reenactor, status: np.ndarray, drive_path: Path,
                   options: VideoOptions, size: tuple[int, int], fps: float, timer: StageTimer,
                   progress: Progress | None, workers: int) -> int:
    """Pass 2: every chunk not yet complete → its segment. Returns how many were reused."""
    compare = r.config.compare
    decode = compare or r.needs_driver_image  # pass 2 reads the driver's frames only when it must
    with temporal.FrameFile(work.file("points.f32")) as pts, \
            (media.open_frames(drive_path, **_driver_reading(options)) if decode
             else contextlib.nullcontext()) as frames:
        def face(i: int) -> Face | None:
            return None if status[i] == temporal.STILL else Face(points=pts[i])

        def plan(i: int) -> Callable[[], np.ndarray]:
            frame = _next(frames, i, drive_path, timer) if decode else None
            job = r.plan(face(i), frame)
            return (lambda: side_by_side(frame, job())) if compare else job

        def skip(i: int) -> None:  # already rendered: keep the decoder and the reference choice in step
            r.advance(face(i))
            if decode:
                _next(frames, i, drive_path, timer)

        return write_chunks(work, len(status), options.chunk, size, fps, plan, skip, timer, progress,
                            preset=options.preset, workers=workers)


# A driver video larger than this (longest side) is decoded shrunk to it, by ffmpeg: only its
# landmarks are used (and its pixels for --compare and --mouth driver), and mediapipe sees a
# face at 192 pixels. A 4K driver on examples/ref.jpg: 17.5–17.9 → 24.3–25.4 fps, peak 665–689 →
# 278–290 MB; its landmarks within 0.2 % of the face's size of the full-size ones (mean), as
# steady (docs/video-to-video.md has the same for a video source's `--max-side`).
DRIVER_MAX_SIDE = 1920


def _driver_reading(options: VideoOptions) -> dict:
    """How a photo render reads its driver, the same in both passes (pass 2's pixels must match
    pass 1's landmarks): `media.open_frames` keywords."""
    return {"fps": options.fps, "background": True, "max_side": DRIVER_MAX_SIDE}


RENDER_WORKERS_MAX = 4
PARALLEL_MIN_PIXELS = 512 * 512  # smaller output frames of the plain warp render in a few ms: one thread


def render_workers(size: tuple[int, int], engine: str) -> int:
    """Threads pass 2 renders output frames of `size` (w, h) with the engine named `engine` in:
    one per core this process may use, at most RENDER_WORKERS_MAX; 1 (in this thread) for the
    plain warp's frames under PARALLEL_MIN_PIXELS (≈ 5 ms each: handing one to another thread
    costs about what it saves). OpenCV, NumPy and ONNX Runtime release the GIL in their heavy
    calls, so two threads on two idle cores render 2 MP frames about 1.7× as fast as one, and
    small frames with learned regions (fusion) or a generator 1.1–1.2× (README, Performance)."""
    if size[0] * size[1] < PARALLEL_MIN_PIXELS and engine == "warp":
        return 1
    return max(1, min(RENDER_WORKERS_MAX, runtime.usable_cores()))


def write_chunks(work: resume.WorkDir, n: int, chunk: int, size: tuple[int, int], fps: float,
                 plan: Callable[[int], Callable[[], np.ndarray]], skip: Callable[[int], None],
                 timer: StageTimer, progress: Progress | None, *, preset: str, workers: int) -> int:
    """Pass 2's loop: output frames 0..n-1 into one H.264 segment per `chunk` frames, padded to
    `size`. `plan(i)` is called for every frame in order and returns the call that renders it
    (`Reenactor.plan`); those calls run in `workers` threads (`render_workers`), a
    few frames ahead, and their frames are written in order — the same file as rendering one
    frame at a time. Frames of chunks completed by an interrupted run are not rendered but
    `skip(i)` is called for them (in order, between the plans), so per-frame state stays in step.
    `preset`: the x264 preset (`VideoOptions.preset`); frames are encoded in a writer thread.
    Returns how many chunks were reused."""
    if size[0] * size[1] * 3 >= media.FRAME_HEAP_MIN:  # large frames: no fresh pages per frame
        media.reuse_frame_memory()
    done = work.completed_chunks()
    finished = sum(min(n, (k + 1) * chunk) - k * chunk for k in done)
    if progress:
        progress("rendering", finished, n)
    rendered = _rendered(plan, skip, n, chunk, done, workers)
    with contextlib.closing(rendered):
        for k in range(math.ceil(n / chunk)):
            if k in done:
                continue
            lo, hi = k * chunk, min(n, (k + 1) * chunk)
            with media.VideoWriter(work.segment(k), fps=fps, size=size, overwrite=True,
                                   preset=preset, background=True) as writer:
                for _ in range(lo, hi):
                    out = next(rendered)
                    with timer("encode"):
                        writer.write(_pad_to(out, size))
                    finished += 1
                    if progress:
                        progress("rendering", finished, n)
            work.mark_chunk(k)
        for _ in rendered:  # the skips after the last chunk to render: per-frame state to the end
            pass
    return len(done)


def _rendered(plan: Callable[[int], Callable[[], np.ndarray]], skip: Callable[[int], None], n: int,
              chunk: int, done: set[int] | list[int], workers: int) -> Iterator[np.ndarray]:
    """The frames of the chunks not `done`, in order: planned in order in this thread, rendered
    in a pool of `workers` threads with at most 2 × `workers` in flight (1 worker: here, one at
    a time). Closing it (or an exception, Ctrl-C included) cancels what has not started and
    waits for what has."""
    if workers == 1:
        for i in range(n):
            if i // chunk in done:
                skip(i)
            else:
                yield plan(i)()
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="render")
    pending: collections.deque = collections.deque()
    try:
        for i in range(n):
            if i // chunk in done:
                skip(i)
                continue
            pending.append(pool.submit(plan(i)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


def _next(frames, i: int, drive_path: Path, timer: StageTimer) -> np.ndarray:
    with timer("decode"):
        frame = next(frames, None)
    if frame is None:
        raise CorruptMedia(f"{drive_path} gave fewer frames on the second pass ({i})",
                           "the file changed during the render, or decoding is unstable")
    return frame


def _pad_to(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Edge-pad (never rescale) to exactly (w, h)."""
    w, h = size
    dh, dw = h - img.shape[0], w - img.shape[1]
    if dh == 0 and dw == 0:
        return img
    return cv2.copyMakeBorder(img, 0, max(dh, 0), 0, max(dw, 0), cv2.BORDER_REPLICATE)[:h, :w]
