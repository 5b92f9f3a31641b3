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

import contextlib
import dataclasses
import errno
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from reenact import media, motion, resume, temporal, tracking
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
    driver's timeline (and its audio)."""

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
    seconds: dict[str, float] = field(default_factory=dict)


def reenact_video(ref_path: str | Path | list, drive_path: str | Path, out_path: str | Path,
                  config: InferenceConfig, *, options: VideoOptions = VideoOptions(),
                  overwrite: bool = False, progress: Progress | None = None) -> VideoSummary:
    """Render the reference with a driver video (or frame folder) into `out_path` (driver's fps,
    frame count and audio). `ref_path`: one photo, or several / a folder / a glob of the same
    person (the first is the primary; `options.multi`, see `pipeline.Reenactor`). Raises
    NoFaceFound (nothing written) when no driver frame has the chosen face; OutputError for an
    unfinished render without `options.resume`; Interrupted (exit 130) on Ctrl-C/SIGTERM once a
    chunk is complete (the work folder is kept)."""
    timer = StageTimer()
    target = media.check_output_path(out_path, overwrite=overwrite, kinds=media.WRITABLE_VIDEO_SUFFIXES,
                                     inputs=(ref_path, drive_path))
    with Landmarker(mode="image") as lm, timer("landmarks"):
        refs = load_references(ref_path, lm, max_side=config.max_side, choice=options.ref_face)
    inputs = {f"reference{i or ''}": resume.input_signature(r.name) for i, r in enumerate(refs)}
    work = resume.WorkDir.open(target, job=_job_hash(config, options), chunk=options.chunk,
                               inputs={**inputs, "driver": resume.input_signature(drive_path)},
                               resume=options.resume, overwrite=overwrite)
    try:
        summary = _render_job(refs, Path(drive_path), target, config, options, work, timer, progress, overwrite)
    except KeyboardInterrupt:
        if work.finish_failed():
            done = len(work.completed_chunks())
            raise Interrupted(f"interrupted — {done} completed chunk{'s' if done != 1 else ''} kept in {work.path}",
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


def _render_job(refs: list[Reference], drive_path: Path, target: Path, config: InferenceConfig,
                options: VideoOptions, work: resume.WorkDir, timer: StageTimer,
                progress: Progress | None, overwrite: bool) -> VideoSummary:
    ref = refs[0]
    with media.open_frames(drive_path, fps=options.fps, background=True) as src:
        info = src.info
        if work.state.track is None:
            _track(src, work, options, timer, progress)
    track = work.state.track
    if track["with_face"] == 0:
        n = f"the {track['frames']} frames of {drive_path}"
        if options.driver_face == "largest":
            raise NoFaceFound(f"no face found in any of {n}", "the driver video must show a face")
        raise NoFaceFound(f"{tracking.describe_choice(options.driver_face)} was not found in any of {n}",
                          f"it shows at most {track['max_faces']} faces at once; --driver-face counts from 0")
    status = _process(work, info.fps, options.motion, timer)
    anchor = _anchor(work, ref, status, options.motion) if options.motion.mode == "relative" else None
    r = Reenactor(refs, config, timer=timer, retarget=retargeter(ref, options.motion, None if anchor is None else anchor[1]),
                  multi=options.multi)
    size = _output_size(r, info, config)
    summary = _summary(status, track, info, size, ref, options, anchor)
    summary.chunks_resumed = _render_chunks(work, r, status, drive_path, options, size, info.fps, timer, progress)
    summary.multi, summary.usage = r.mode, r.usage() if r.mode == "select" else []
    with timer("join"):
        media.concat_videos([work.segment(k) for k in range(summary.chunks)], target,
                            duration=len(status) / info.fps, overwrite=overwrite,
                            audio_from=None if drive_path.is_dir() else drive_path)
    return summary


def _track(src, work: resume.WorkDir, options: VideoOptions, timer: StageTimer,
           progress: Progress | None) -> None:
    """Pass 1 into work/track.f32; records its summary in the state."""
    total = src.info.n_frames
    report = (lambda i: progress("tracking", i, total)) if progress else None  # an estimate; the bar grows past it
    with temporal.FrameFile(work.file("track.f32"), mode="w") as track:
        s = tracking.track_driver(src, track, choice=options.driver_face, fps=src.info.fps,
                                  progress=report, timer=timer)
    # frames ffmpeg repeated for undecodable ones (or dropped) to keep the driver's timing
    work.state.track = {**dataclasses.asdict(s), "repeated": getattr(src, "repeated", 0),
                        "dropped": getattr(src, "dropped", 0)}
    work.state.processed = False
    work.save()


def _process(work: resume.WorkDir, fps: float, motion_cfg: MotionConfig, timer: StageTimer) -> np.ndarray:
    """Gaps filled and smoothed into work/points.f32 (once); the per-frame status."""
    status_file = work.file("status.npy")
    if work.state.processed and status_file.exists():
        return np.load(status_file)
    with timer("smooth"), temporal.FrameFile(work.file("track.f32")) as raw, \
            temporal.FrameFile(work.file("points.f32"), mode="w") as out:
        status = temporal.process_track(raw, out, work.file("forward.f32"), fps=fps,
                                        max_gap=motion_cfg.max_gap, smooth=motion_cfg.smooth)
    np.save(status_file, status)
    work.state.processed = True
    work.save()
    return status


def _anchor(work: resume.WorkDir, ref: Reference, status: np.ndarray,
            motion_cfg: MotionConfig) -> tuple[int, np.ndarray]:
    """(index, landmarks) of the anchor frame: `motion_cfg.anchor`, or the frame with a face
    nearest the reference in pose and expression (`motion.choose_anchor`)."""
    with temporal.FrameFile(work.file("points.f32")) as pts:
        i = motion_cfg.anchor
        if i is None:
            faces = ((j, pts[j]) for j in np.flatnonzero(status == temporal.FACE))
            i, _ = motion.choose_anchor(ref.face.points, faces)
        elif i >= len(status):
            raise UsageError(f"--anchor {i} is past the driver's last frame ({len(status) - 1})",
                             "give a frame index within the video, or leave --anchor out")
        elif status[i] != temporal.FACE:
            raise UsageError(f"--anchor {i}: the driver's face was not found in that frame",
                             "choose a frame that shows the face, or leave --anchor out")
        work.state.anchor = int(i)
        work.save()
        return int(i), pts[i]


def _output_size(r: Reenactor, info: media.VideoInfo, config: InferenceConfig) -> tuple[int, int]:
    w, h = r.output_size()
    if config.compare:
        w += max(1, round(info.width * h / info.height))
    return w + w % 2, h + h % 2


def _summary(status: np.ndarray, track: dict, info: media.VideoInfo, size: tuple[int, int],
             ref: Reference, options: VideoOptions, anchor: tuple[int, np.ndarray] | None) -> VideoSummary:
    counts = np.bincount(status, minlength=4)
    return VideoSummary(
        frames=len(status), with_face=int(counts[temporal.FACE]), interpolated=int(counts[temporal.INTERPOLATED]),
        held=int(counts[temporal.HELD]), still=int(counts[temporal.STILL]), fps=info.fps, size=size,
        audio=info.has_audio, reference_faces=ref.n_faces, driver_faces=int(track["max_faces"]),
        motion=options.motion.mode, anchor=None if anchor is None else anchor[0],
        smoothed=options.motion.smooth, chunks=math.ceil(len(status) / options.chunk),
        repeated=int(track.get("repeated", 0)), dropped=int(track.get("dropped", 0)))


def _render_chunks(work: resume.WorkDir, r: Reenactor, status: np.ndarray, drive_path: Path,
                   options: VideoOptions, size: tuple[int, int], fps: float, timer: StageTimer,
                   progress: Progress | None) -> int:
    """Pass 2: every chunk not yet complete → its segment. Returns how many were reused."""
    n, c = len(status), options.chunk
    done = work.completed_chunks()
    finished = sum(min(n, (k + 1) * c) - k * c for k in done)
    if progress:
        progress("rendering", finished, n)
    compare = r.config.compare
    decode = compare or r.needs_driver_image  # pass 2 reads the driver's frames only when it must
    with temporal.FrameFile(work.file("points.f32")) as pts, \
            (media.open_frames(drive_path, fps=options.fps, background=True) if decode
             else contextlib.nullcontext()) as frames:
        for k in range(math.ceil(n / c)):
            lo, hi = k * c, min(n, (k + 1) * c)
            if k in done:  # already rendered: keep the decoder and the reference choice in step
                for i in range(lo, hi):
                    r.advance(None if status[i] == temporal.STILL else Face(points=pts[i]))
                    if decode:
                        _next(frames, i, drive_path, timer)
                continue
            with media.VideoWriter(work.segment(k), fps=fps, size=size, overwrite=True,
                                   preset=options.preset, background=True) as writer:
                for i in range(lo, hi):
                    face = None if status[i] == temporal.STILL else Face(points=pts[i])
                    frame = _next(frames, i, drive_path, timer) if decode else None
                    out = r.render(face, frame)
                    if compare:
                        out = side_by_side(frame, out)
                    with timer("encode"):
                        writer.write(_pad_to(out, size))
                    finished += 1
                    if progress:
                        progress("rendering", finished, n)
            work.mark_chunk(k)
    return len(done)


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
