"""Video-to-video: re-animate a person inside their own video (dubbing, expression editing).

When the reference of `reenact video` is a video (or, with `reference_frames`, a folder of
frames), every output frame is a *source* frame with the driver's facial motion applied, and
nothing else changes:

    pass 1   the driver and the source are each tracked (`tracking`) into an on-disk track and
             smoothed (`temporal.process_track`); the source's gaps are not filled: a source
             frame without a face passes through unchanged
    between  the source's *rest* frame (its most typical expression) and the driver's anchor
             (the driver frame nearest it, `motion.choose_anchor`); the timeline (`Timeline`)
    pass 2   per output frame i: source frame s(i) is the reference of its own output frame
             (`Reenactor.set_primary`), the target is `motion.SourceRetargeter` (the source
             frame's head pose, the driver's change from its anchor on the moved parts), the
             engine renders the head crop and it is pasted back into that source frame (pixels
             outside the head region are the source's own, bit for bit)

Timing: the output takes the driver's frame rate. Each input is first decoded at its own
constant rate (a variable-rate file at its average rate, as `media.VideoReader` does); output
frame i (time i / driver fps) shows the driver's frame i and the source frame at the same time,
⌊i · source fps / driver fps⌋ (sample and hold). The length follows `options.length`; the
shorter video plays forward, then backward, and so on (ping-pong: no jump cut). Frames are
fetched by index (`IndexedFrames`): decoded forward, and when a video has to play backward its
decoded frames are kept in the work folder (raw, W×H×3 bytes each) and read back from there.
Memory does not depend on either video's length.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from reenact import align, media, motion, occlusion, regions, resume, temporal, video, warp
from reenact import geometry as g
from reenact import references as refs
from reenact.config import InferenceConfig, VideoOptions
from reenact.errors import CorruptMedia, MediaError, UsageError
from reenact.expression import expression_descriptor
from reenact.engines import RefState, WarpEngine, build_engine
from reenact.landmarks import Face
from reenact.pipeline import Reenactor, Reference, StageTimer, downscale, side_by_side

# A warp triangle whose corners all move less than this (crop pixels) keeps the source's pixels.
MOVED_PX = 0.25
# Anchor choice when the source keeps its own head pose (`--transfer expression`): a degree of
# head-pose difference counts this much (1 elsewhere), so the driver's anchor is above all the
# frame whose expression is nearest the rest face's; a mouth that is open at the anchor but
# closed on the rest face would cut off the driver's smaller openings (lips do not cross).
POSE_WEIGHT = 0.1
# The rest frame is the source frame nearest the median expression of at most this many
# evenly spaced source frames (a bounded sample keeps memory constant).
REST_SAMPLE = 2000
# The resting bank (`--resting` with `replace`, the source's own head pose): frames whose
# expression is among the BANK_RESTING most typical (nearest the median), up to BANK_SIZE of
# them at least BANK_SPREAD degrees of head pose apart, the rest frame first. An output frame
# whose source frame's head pose is within BANK_REACH degrees of a bank frame's renders from the
# nearest one (kept until another is nearer by BANK_MARGIN), so the source's own speech does not
# show through; farther poses render from the frame itself. Each bank frame draws its mouth a
# little differently (teeth, lip line), so every switch is a small jump in the dub's mouth:
# fewer, farther-apart frames follow the driver better (BANK_SPREAD 4 → 8: mouth-opening
# correlation 0.897 → 0.906 self, 0.773 → 0.845 cross, 0.750 → 0.770 on held-out pairs; 12: 0.915,
# 0.806, 0.769; docs/video-to-video.md), the warp bridging up to ~8° of head pose instead of 4°.
BANK_RESTING = 0.3
BANK_SIZE = 6
BANK_SPREAD = 8.0
BANK_REACH = 12.0
BANK_MARGIN = 3.0
# A frame rendered from the bank takes its lower face from there (`lower_face`), grown by this
# many face scales and feathered over this many; the rest from its own render.
LOWER_GROW = 0.15
LOWER_FEATHER = 0.06
LOWER_GRID = 128  # pixels a side of the grid the mask is drawn on
# The region generators (`redraw`) encode the appearance of one source frame for the whole video
# (`appearance_frame`): the first with a resting expression among the APPEARANCE_WINDOW frames
# from the first with a face (fewer where those would take more than APPEARANCE_BYTES; they are
# decoded ahead and held until pass 2 reaches them). Encoded per frame instead, a blink gave the
# eye generator no iris to encode, the generated mouth changed with the source's own, and the
# encoders ran 1.7 times per frame (~2.7 ms of CPU at 720p).
APPEARANCE_WINDOW = 48
APPEARANCE_BYTES = 128 * 2 ** 20
# Pass 1 tracks at least this many seconds of each video (or all of it) even where the output
# shows less (`frames_used`): the source's rest face, resting bank and appearance frame, and the
# driver's anchor, are chosen among what was tracked. With only the 4 s an output showed, the
# mouth correlation of single pairs moved by −0.34 to +0.15 and one pair's head-pose error
# doubled (docs/video-to-video.md, "Only what is shown is read").
TRACK_AT_LEAST_S = 10.0


def is_video_source(spec: str | Path, options: VideoOptions) -> bool:
    """Whether a reference argument is a video source: a video file, or a folder of frames when
    `options.reference_frames` says so (a folder is otherwise photos of the person)."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return options.reference_frames
    if options.reference_frames:
        raise UsageError(f"--reference-frames: {p} is not a folder", "give a folder of frames as the reference")
    if not p.is_file() or p.suffix.lower() in media.IMAGE_SUFFIXES:
        return False
    try:
        return media.media_kind(p) == "video"
    except MediaError:
        return False  # the photo path reports what is wrong with it


def check_photo_options(options: VideoOptions) -> None:
    """UsageError for video-source options given with a photo reference."""
    if options.length != "driver":
        raise UsageError(f"--length {options.length} needs a video as the reference",
                         "with a photo the output always has the driver's length")
    if options.audio == "source":
        raise UsageError("--audio source needs a video as the reference", "use --audio driver or none")


def pingpong(k: int, n: int) -> int:
    """Index k of the endless sequence 0, 1, …, n−1, n−2, …, 1, 0, 1, … (n ≥ 1)."""
    if n <= 1:
        return 0
    period = 2 * (n - 1)
    k %= period
    return k if k < n else period - k


@dataclass(frozen=True)
class Timeline:
    """Output frame i (at the driver's rate) → its source frame and driver frame.

    `frames`: the output's length; the shorter input plays ping-pong to fill it."""

    frames: int
    source_frames: int
    source_fps: float
    driver_frames: int
    driver_fps: float

    @classmethod
    def build(cls, source_frames: int, source_fps: float, driver_frames: int, driver_fps: float,
              length: str) -> "Timeline":
        """`length`: "driver", "source" or "shortest" (`config.LENGTHS`)."""
        as_output = max(1, round(source_frames * driver_fps / source_fps))  # the source's length at the driver's rate
        n = {"driver": driver_frames, "source": as_output, "shortest": min(as_output, driver_frames)}[length]
        return cls(n, source_frames, source_fps, driver_frames, driver_fps)

    def source_position(self, i: int) -> int:
        """Source frame at output time i / driver fps, before ping-pong (may be ≥ source_frames)."""
        return math.floor(i * self.source_fps / self.driver_fps + 1e-6)

    def source(self, i: int) -> int:
        return pingpong(self.source_position(i), self.source_frames)

    def driver(self, i: int) -> int:
        return pingpong(i, self.driver_frames)

    @property
    def source_backward(self) -> bool:
        """Whether the source plays backward somewhere (it is shorter than the output)."""
        return self.source_position(self.frames - 1) >= self.source_frames

    @property
    def driver_backward(self) -> bool:
        return self.frames > self.driver_frames


def frames_used(source_fps: float, driver_fps: float, length: str) -> "video.FramesUsed":
    """For pass 1 (`video.track_both`): given the whole length of the source (True) or of the
    driver (False), how many frames of the other to track (None: all) — as many as the output
    shows of it (what `Timeline.build` gives for the full videos), and at least
    TRACK_AT_LEAST_S seconds: a long source dubbed with a short driver is not read to its end."""

    def used(source_done: bool, frames: int) -> int | None:
        if source_done:  # the output's length when the source decides it
            if length == "driver":
                return None
            need = Timeline.build(frames, source_fps, 1, driver_fps, "source").frames
            return max(need, math.ceil(TRACK_AT_LEAST_S * driver_fps))
        if length == "source":
            return None
        need = Timeline.build(1, source_fps, frames, driver_fps, length).source_position(frames - 1) + 1
        while length == "shortest" and Timeline.build(need, source_fps, frames, driver_fps, length).frames < frames:
            need += 1  # a source this long would itself end the output sooner
        return max(need, math.ceil(TRACK_AT_LEAST_S * source_fps))

    return used


class Downscaled:
    """A frame source (`media.open_frames`) with every frame shrunk to `max_side` (0 = as is),
    as reference photos are (a video's by ffmpeg as it decodes, a folder's images here); same
    interface (iterator, `info`, `repeated`/`dropped`, close)."""

    def __init__(self, path: Path, fps: float | None, max_side: int) -> None:
        self.reader = media.open_frames(path, fps=fps, max_side=max_side)
        self.max_side = max_side
        w, h = media.scaled_size(self.reader.info.width, self.reader.info.height, max_side)
        self.info = dataclasses.replace(self.reader.info, width=w, height=h)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        return downscale(next(self.reader), self.max_side)

    @property
    def repeated(self) -> int:
        return getattr(self.reader, "repeated", 0)

    @property
    def dropped(self) -> int:
        return getattr(self.reader, "dropped", 0)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> "Downscaled":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class IndexedFrames:
    """The frames of a video (or frame folder) by index, in the order a timeline asks for them.

    Decoded forward; an earlier frame is read back from `cache` (a raw uint8 `temporal.FrameFile`
    written as frames are decoded) when one is given, otherwise the video is decoded again from
    its start. Memory: one frame, and the frames `ahead` decoded early until they are asked
    for. CorruptMedia when the video ends before the frame asked for (it gave more frames in
    pass 1)."""

    def __init__(self, open_frames: Callable[[], Downscaled], path: Path, *, cache: Path | None,
                 timer: StageTimer) -> None:
        self._open, self.path, self._cache_path, self.timer = open_frames, path, cache, timer
        self._reader: Downscaled | None = None
        self._cache: temporal.FrameFile | None = None
        self._pos, self._last = -1, None
        self._held: dict[int, np.ndarray] = {}  # decoded by `ahead`, not yet asked for

    def __getitem__(self, k: int) -> np.ndarray:
        if k in self._held:
            for passed in [i for i in self._held if i < k]:  # the timeline moved past them
                del self._held[passed]
            return self._held[k]
        self._held.clear()
        if k == self._pos:
            return self._last
        with self.timer("decode"):
            if k < self._pos:
                if self._cache is not None:
                    return self._cache[k]
                self._restart()
            self._decode_to(k)
        return self._last

    def ahead(self, k: int) -> np.ndarray:
        """Frame k, decoded now, keeping the current frame and every frame decoded on the way to
        k until it is asked for: a frame needed before its turn costs no second decoding."""
        if k <= self._pos or k in self._held:
            return self[k]
        if self._pos >= 0:
            self._held.setdefault(self._pos, self._last)
        with self.timer("decode"):
            self._decode_to(k, hold=True)
        return self._last

    def _decode_to(self, k: int, *, hold: bool = False) -> None:
        if self._reader is None:
            self._start()
        while self._pos < k:
            frame = next(self._reader, None)
            if frame is None:
                raise CorruptMedia(f"{self.path} gave fewer frames on the second pass ({k})",
                                   "the file changed during the render, or decoding is unstable")
            self._pos, self._last = self._pos + 1, frame
            if hold:
                self._held[self._pos] = frame
            if self._cache is not None:
                self._cache[self._pos] = frame

    def _start(self) -> None:
        self._reader = self._open()
        if self._cache_path is not None and self._cache is None:
            info = self._reader.info
            self._cache = temporal.FrameFile(self._cache_path, (info.height, info.width, 3), "w", np.uint8)

    def _restart(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader, self._pos, self._last = None, -1, None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._cache is not None:
            self._cache.close()

    def __enter__(self) -> "IndexedFrames":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rest_frame(points: temporal.FrameFile, status: np.ndarray, covered: np.ndarray | None = None) -> int:
    """The source frame (with a face) whose expression is nearest the source's median
    expression (`expression.expression_descriptor`): its typical, resting face. Not one whose
    lower face a hand covers (`covered`, `occlusion`), unless a hand covers them all."""
    faces = np.flatnonzero(status == temporal.FACE)
    _, _, median = _typical(points, faces)
    gap = lambda j: float(np.linalg.norm(expression_descriptor(points[j]) - median))  # noqa: E731
    return int(min(_uncovered(faces, covered), key=gap))


def _uncovered(frames: np.ndarray, covered: np.ndarray | None) -> np.ndarray:
    """`frames` (indices) without those a hand covers — all of them if it covers every one (the
    choice then is as without the hands: no frame is better)."""
    if covered is None:
        return frames
    kept = frames[~covered[frames]]
    return kept if len(kept) else frames


def _typical(points: temporal.FrameFile, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(at most REST_SAMPLE evenly spaced frames of `faces`, each one's distance to the median
    expression (`expression.expression_descriptor`) of them, that median)."""
    sample = faces[np.linspace(0, len(faces) - 1, min(len(faces), REST_SAMPLE)).astype(int)]
    expressions = np.array([expression_descriptor(points[j]) for j in sample])
    median = np.median(expressions, axis=0)
    return sample, np.linalg.norm(expressions - median, axis=1), median


def resting_bank(points: temporal.FrameFile, status: np.ndarray, rest: int,
                 covered: np.ndarray | None = None) -> list[int]:
    """Source frames to draw lower faces from (`--resting`; see BANK_RESTING), sorted by index:
    the rest frame, then, greedily, the resting frame whose head pose is farthest from all chosen
    so far, while it is at least BANK_SPREAD degrees from them; none a hand covers (`covered`)."""
    sample, gaps, _ = _typical(points, np.flatnonzero(status == temporal.FACE))
    resting = _uncovered(sample[gaps <= np.quantile(gaps, BANK_RESTING)], covered)
    poses = np.array([head_pose(points[j]) for j in resting])
    bank, pose = [rest], [head_pose(points[rest])]
    while len(bank) < BANK_SIZE and len(resting):
        gaps = np.min([np.linalg.norm(poses - p, axis=1) for p in pose], axis=0)
        k = int(np.argmax(gaps))
        if gaps[k] < BANK_SPREAD:
            break
        bank.append(int(resting[k]))
        pose.append(poses[k])
    return sorted(bank)


def head_pose(points: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees."""
    return g.head_pose(points).as_array()


def _fps(path: Path, options: VideoOptions) -> float | None:
    """`--fps` for a folder of frames (None for a video file: it keeps its own rate)."""
    return options.fps if path.is_dir() else None


def _check_options(source: Path, drive_path: Path, options: VideoOptions) -> None:
    if options.motion.mode != "relative":
        raise UsageError("--motion absolute does not apply to a video source",
                         "a video source keeps its own face; the driver's changes are applied to it")
    if options.fps is not None and not (source.is_dir() or drive_path.is_dir()):
        raise UsageError("--fps applies to a folder of frames only",
                         hint="a video keeps its own frame rate; leave --fps out")
    if options.audio == "source" and source.is_dir():
        raise UsageError(f"--audio source: {source} is a folder of frames, it has no audio",
                         "use --audio driver or none")


def render_job(source: Path, photos: list[Reference], drive_path: Path, target: Path, config: InferenceConfig,
               options: VideoOptions, work: resume.WorkDir, timer: StageTimer, progress,
               overwrite: bool) -> "video.VideoSummary":
    """A whole video-to-video render in `work` (the caller owns it, as `video._render_job`):
    both passes, then the segments joined with the chosen audio into `target`. `photos`: more
    views of the person (k-shot), may be empty."""
    _check_options(source, drive_path, options)
    opener = {"source": lambda: Downscaled(source, _fps(source, options), config.max_side),
              "driver": lambda: Downscaled(drive_path, _fps(drive_path, options), video.DRIVER_MAX_SIDE)}
    resting, hands = _uses_bank(options, photos, config), _watches_hands(options)
    watch = occlusion.HandWatch(timer) if hands and work.state.source_track is None else None
    with opener["source"]() as s, opener["driver"]() as d:  # both opened first: a bad one fails at once
        sinfo, dinfo = s.info, d.info
        try:
            video.track_both(s, d, work, options, timer, progress, watch=watch,
                             used=frames_used(sinfo.fps, dinfo.fps, options.length))
        except BaseException:
            if watch is not None:
                watch.close()  # its thread
            raise
    covered = _hands(work, watch, opener["source"], timer) if hands else None
    video.require_face(work.state.track, drive_path, options.driver_face)
    video.require_face(work.state.source_track, source, options.ref_face, what="source")
    dstatus = video.process_pass(work, dinfo.fps, options.motion, timer)
    sstatus = video.process_pass(work, sinfo.fps, options.motion, timer, source=True)
    tl = Timeline.build(len(sstatus), sinfo.fps, len(dstatus), dinfo.fps, options.length)
    rest, anchor, retarget = _motion(work, sstatus, dstatus, options, covered)
    summary = video.summarise(dstatus, work.state.track, dinfo, (0, 0), work.state.source_track["max_faces"],
                              options, anchor, frames=tl.frames)
    summary.source = video.SourceSummary(
        path=str(source), frames=tl.source_frames, fps=sinfo.fps, with_face=int((sstatus == temporal.FACE).sum()),
        passed=sum(not _moves(tl, sstatus, dstatus, i) for i in range(tl.frames)), rest=rest, length=options.length,
        ping_pong="source" if tl.source_backward else "driver" if tl.driver_backward else "",
        unread="source" if work.state.source_track["cut"] else "driver" if work.state.track["cut"] else "")
    summary.audio = _audio_from(source, drive_path, options) is not None
    with temporal.FrameFile(work.file("source-points.f32")) as spts, \
            temporal.FrameFile(work.file("points.f32")) as dpts, \
            IndexedFrames(opener["source"], source, timer=timer,
                          cache=work.file("source-frames.u8") if tl.source_backward else None) as sframes, \
            IndexedFrames(opener["driver"], drive_path, timer=timer,
                          cache=work.file("driver-frames.u8") if tl.driver_backward else None) as dframes:
        job = _Frames(tl, sstatus, dstatus, spts, dpts, sframes, dframes, retarget, source,
                      work.state.source_track["max_faces"])
        first = job.reference(int(np.argmax(sstatus == temporal.FACE)))
        engine = build_engine(config)
        job.covered, job.moves_upper = covered, set(options.motion.regions) != {"mouth"}
        if resting and isinstance(engine, WarpEngine):
            job.bank = resting_bank(spts, sstatus, rest, covered)
            with IndexedFrames(opener["source"], source, cache=None, timer=timer) as frames:
                bank = [Reference(image=frames[j], face=Face(points=spts[j]), n_faces=job.faces, name=str(source))
                        for j in job.bank]
            job.bank_poses = [head_pose(spts[j]) for j in job.bank]
            r = Reenactor([first, *bank], config, engine=engine, timer=timer, multi="select")
        else:
            r = Reenactor([first, *photos], config, engine=engine, timer=timer, multi=options.multi)
        r.paste_limit = moved_region
        job.appearance = _fix_appearance(engine, spts, sstatus, covered, sframes, sinfo.width * sinfo.height * 3)
        summary.size = video.output_size(r, dinfo, config)
        summary.workers = video.render_workers(summary.size, engine.name)
        summary.chunks_resumed = video.write_chunks(work, tl.frames, options.chunk, summary.size, dinfo.fps,
                                                    lambda i: job.plan(r, i), lambda i: job.skip(r, i),
                                                    timer, progress, preset=options.preset,
                                                    workers=summary.workers)
    if job.bank:  # its frames are not references the user chose: no selection to report
        summary.multi, summary.usage = "single", []
        summary.source.resting = (len(job.bank), job.from_bank)
    else:
        summary.multi, summary.usage = r.mode, r.usage() if r.mode == "select" else []
    summary.source.covered = job.by_hand
    summary.source.appearance = job.appearance
    work.hold_signals()  # from here the render completes (see WorkDir.hold_signals)
    with timer("join"):
        media.concat_videos([work.segment(k) for k in range(summary.chunks)], target,
                            duration=tl.frames / dinfo.fps, overwrite=overwrite,
                            audio_from=_audio_from(source, drive_path, options))
    return summary


def _motion(work: resume.WorkDir, sstatus: np.ndarray, dstatus: np.ndarray, options: VideoOptions,
            covered: np.ndarray | None) -> tuple[int, tuple[int, np.ndarray], motion.SourceRetargeter]:
    """(the source's rest frame, the driver's anchor (index, landmarks), the retargeter)."""
    with temporal.FrameFile(work.file("source-points.f32")) as spts:
        rest = rest_frame(spts, sstatus, covered)
        anchor = video.anchor_frame(work, spts[rest], dstatus, options.motion,
                                    pose_weight=POSE_WEIGHT if options.motion.transfer == "expression" else 1.0)
        retarget = motion.SourceRetargeter(spts[rest], anchor[1], transfer=options.motion.transfer,
                                           components=motion.components_for(options.motion.regions),
                                           source_expression=options.source_expression)
    return rest, anchor, retarget


def appearance_frame(points: temporal.FrameFile, status: np.ndarray, covered: np.ndarray | None,
                     window: int) -> int | None:
    """The source frame whose mouth and eyes the region generators encode (APPEARANCE_WINDOW):
    among the `window` frames from the first with a face, the first with a face, no hand over
    it (`covered`) and an expression among the BANK_RESTING share of the source's most typical
    (`resting_bank`'s resting frames), else the most typical of them; None when each of them
    has no face or a hand over it."""
    faces = np.flatnonzero(status == temporal.FACE)
    _, typical_gaps, median = _typical(points, faces)
    resting = np.quantile(typical_gaps, BANK_RESTING)
    early = faces[faces < faces[0] + window]
    if covered is not None:
        early = early[~covered[early]]
    if not len(early):
        return None
    gaps = [float(np.linalg.norm(expression_descriptor(points[j]) - median)) for j in early]
    first = next((j for j, gap in zip(early, gaps) if gap <= resting), None)
    return int(early[int(np.argmin(gaps))] if first is None else first)


def _fix_appearance(engine, spts: temporal.FrameFile, sstatus: np.ndarray, covered: np.ndarray | None,
                    sframes: IndexedFrames, frame_bytes: int) -> int | None:
    """Make every reference's region appearance that of one early source frame
    (`appearance_frame`), for an engine that redraws regions; returns that frame (None: each
    frame keeps its own). `frame_bytes`: the size of a decoded source frame."""
    redrawer = getattr(engine, "redrawer", None)
    if redrawer is None or not redrawer.generates:
        return None
    window = min(APPEARANCE_WINDOW, max(1, APPEARANCE_BYTES // frame_bytes))
    j = appearance_frame(spts, sstatus, covered, window)
    if j is not None:
        state = engine.prepare(sframes.ahead(j), Face(points=spts[j]))
        redrawer.appearance_from = state.extra.regions
    return j


def _hands(work: resume.WorkDir, watch: occlusion.HandWatch | None, open_source: Callable[[], "Downscaled"],
           timer: StageTimer) -> np.ndarray:
    """(source frames,) bool: where a hand covers the lower face (`occlusion.HandWatch`), kept in
    the work folder. From `watch` when it saw pass 1; a render resumed after pass 1 whose
    result was not kept looks at the source again."""
    path, n = work.file("source-hands.npy"), work.state.source_track["frames"]
    if watch is None or watch.frames < n:
        if path.exists():
            return np.load(path)
        watch = occlusion.HandWatch(timer)
        with temporal.FrameFile(work.file("source-track.f32")) as raw, open_source() as frames:
            for k, frame in zip(range(len(raw)), frames):
                watch(frame, None if np.isnan(raw[k]).any() else Face(points=raw[k]))
    covered = np.zeros(n, bool)
    covered[:min(n, watch.frames)] = watch.covered(n)[:n]
    part = path.with_suffix(".part.npy")
    np.save(part, covered)
    part.replace(path)
    return covered


def _watches_hands(options: VideoOptions) -> bool:
    """Whether pass 1 looks for hands over the source's mouth (`occlusion`): the mouth moves and
    the head keeps the source's pose (`--transfer expression`: a covered frame can keep its own
    lower face; a head that turns cannot)."""
    return "mouth" in options.motion.regions and options.motion.transfer == "expression"


def _uses_bank(options: VideoOptions, photos: list[Reference], config: InferenceConfig) -> bool:
    """Whether frames render their lower face from the resting bank: asked for (`resting`), the
    mouth moves and replaces the source's own (`replace`), the head pose stays the source's
    (`--transfer expression`), no photos of the person were given (those are the k-shot views
    instead) and the output is the whole frame (not `--crop`)."""
    return (options.resting and options.source_expression == "replace" and options.motion.transfer == "expression"
            and "mouth" in options.motion.regions and not photos and not config.crop)


def _moves(tl: Timeline, sstatus: np.ndarray, dstatus: np.ndarray, i: int) -> bool:
    """Whether output frame i is rendered: its source frame shows a face and the driver's face
    has appeared (else the source frame passes through unchanged)."""
    return sstatus[tl.source(i)] == temporal.FACE and dstatus[tl.driver(i)] != temporal.STILL


def _audio_from(source: Path, drive_path: Path, options: VideoOptions) -> Path | None:
    path = {"driver": drive_path, "source": source, "none": None}[options.audio]
    return None if path is None or path.is_dir() else path


@dataclass
class _Frames:
    """Pass 2's per-frame work for one render: output frame i → its source and driver frames,
    landmarks and status."""

    tl: Timeline
    sstatus: np.ndarray
    dstatus: np.ndarray
    spts: temporal.FrameFile
    dpts: temporal.FrameFile
    sframes: IndexedFrames
    dframes: IndexedFrames  # read only when the driver's pixels are needed (--compare, --mouth driver)
    retarget: motion.SourceRetargeter
    source: Path
    faces: int
    bank: list[int] = dataclasses.field(default_factory=list)  # resting frames (`resting_bank`)
    bank_poses: list[np.ndarray] = dataclasses.field(default_factory=list)
    chosen: int = 0  # the bank frame in use: its index in `bank` + 1; 0 = the frame itself
    moves_upper: bool = True  # eyes or brows move too (not only the mouth)
    from_bank: int = 0  # output frames rendered from the bank
    covered: np.ndarray | None = None  # source frames whose lower face a hand covers (`occlusion`)
    by_hand: int = 0  # output frames that kept their own lower face for that
    appearance: int | None = None  # the source frame the region appearance comes from (`_fix_appearance`)

    def reference(self, j: int) -> Reference:
        """Source frame j as the reference of its own output frame."""
        return Reference(image=self.sframes[j], face=Face(points=self.spts[j]), n_faces=self.faces,
                         name=str(self.source))

    def _moved(self, i: int) -> tuple[int, int, bool]:
        return self.tl.source(i), self.tl.driver(i), _moves(self.tl, self.sstatus, self.dstatus, i)

    def plan(self, r: Reenactor, i: int) -> Callable[[], np.ndarray]:
        """Output frame i's render as a call (`Reenactor.plan`; `video.write_chunks`)."""
        j, d, moved = self._moved(i)
        drv_img = self.dframes[d] if r.config.compare or r.needs_driver_image else None  # decoded only then
        covered = moved and self._covered(j)
        if covered:  # a hand over the mouth: the lower face stays the frame's own
            self.by_hand += 1
            if self.bank:
                self._choose_bank(j)  # (a new choice once the hand is gone)
        if covered and self.moves_upper:  # only the upper face moves
            r.choose(None)
            self._use(r, j, set_primary=True)
            job = r.plan(Face(points=self.dpts[d]), drv_img, use=0, limit=upper_face, parts=("eyes",))
        elif moved and not covered:
            face = Face(points=self.dpts[d])
            bank = self._choose_bank(j) if self.bank else 0  # 0: the frame itself
            self._use(r, j, set_primary=True, from_rest=bank > 0)
            if bank:  # the lower face from the bank frame's render, the upper from the frame's own
                self.from_bank += 1
                own = (r.plan(face, drv_img, use=0, limit=upper_face, parts=("eyes",))
                       if self.moves_upper else None)  # only the mouth moves: the frame itself above
                job = r.plan(face, drv_img, use=bank, onto=own, limit=lower_face, parts=("mouth",))
            else:  # with a bank never a bank frame; without, the reference choice (k-shot photos)
                job = r.plan(face, drv_img, use=0 if self.bank else None)
        else:  # no face in the source frame (or none yet in the driver; or only the hidden mouth moves)
            r.choose(None)
            out = r.unchanged(self.sframes[j])
            job = lambda: out  # noqa: E731
        return (lambda: side_by_side(drv_img, job())) if r.config.compare else job

    def skip(self, r: Reenactor, i: int) -> None:
        """A frame of a completed chunk: only the reference choice advances (the bank's, k-shot
        selection), as `plan` advances it."""
        j, d, moved = self._moved(i)
        if self.bank:
            if moved:
                self._choose_bank(j)
            return
        if r.mode != "select":
            return
        if moved and not self._covered(j):
            self._use(r, j, set_primary=False)
            r.advance(Face(points=self.dpts[d]))
        else:
            r.advance(None)

    def _covered(self, j: int) -> bool:
        """Whether a hand covers source frame j's lower face (`occlusion`)."""
        return self.covered is not None and bool(self.covered[j])

    def _choose_bank(self, j: int) -> int:
        """The reference source frame j renders from: 1 + the index of the bank frame nearest in
        head pose (hysteresis: BANK_MARGIN), or 0 (the frame itself) beyond BANK_REACH or where
        a hand covers the frame's lower face."""
        if self._covered(j):
            self.chosen = 0
            return 0
        gaps = [float(np.linalg.norm(head_pose(self.spts[j]) - p)) for p in self.bank_poses]
        best = int(np.argmin(gaps))
        if self.chosen and gaps[self.chosen - 1] <= BANK_REACH and gaps[best] >= gaps[self.chosen - 1] - BANK_MARGIN:
            return self.chosen
        self.chosen = best + 1 if gaps[best] <= BANK_REACH else 0
        return self.chosen

    def _use(self, r: Reenactor, j: int, *, set_primary: bool, from_rest: bool = False) -> None:
        points = self.spts[j]
        if set_primary:
            r.set_primary(self.reference(j))
        else:
            r.selector.candidates[0] = refs.candidate(points)
        target = self.retarget.from_rest if from_rest else self.retarget
        r.retarget = lambda drv: target(points, drv)


def lower_face(state: RefState, target: np.ndarray, side: int) -> np.ndarray:
    """(side, side) float32 in [0, 1] over the crop (a `pipeline.PasteLimit`): the part of the
    face that moves as one speaks, for the crop-space `target` — the landmarks of
    `motion.speech_weights` ≥ ½ (from halfway between the nose tip and the upper lip down to the
    chin, cheek to cheek), grown by LOWER_GROW face scales (over the jaw line and the frame's own
    chin, which may hang lower) and feathered."""
    f = LOWER_GRID / state.size  # drawn on a coarse grid (it is smooth at that scale) and resized
    pts = np.asarray(target, np.float64)[motion.speech_weights() >= 0.5, :2] * f
    hull = cv2.convexHull(pts.astype(np.float32))[:, 0]
    scale = g.face_scale(target) * f
    mask = regions.grow(regions.fill_polygon(LOWER_GRID, hull), LOWER_GROW * scale, LOWER_FEATHER * scale)
    return cv2.resize(mask, (side, side), interpolation=cv2.INTER_LINEAR)


def upper_face(state: RefState, target: np.ndarray, side: int) -> np.ndarray:
    """Where a frame rendered from the bank keeps its own render: `moved_region` outside
    `lower_face` (the own render then covers only that rectangle)."""
    return moved_region(state, target, side) * (1.0 - lower_face(state, target, side))


def moved_region(state: RefState, target: np.ndarray, side: int) -> np.ndarray:
    """(side, side) float32 in [0, 1] over the crop (a `pipeline.PasteLimit`): where the warp of
    a source frame's crop (`state`) to the crop-space `target` moves pixels at all — the union of
    its triangles with a corner that moves by MOVED_PX or more, antialiased. Elsewhere the warp
    is the identity, so the paste keeps the source frame's own pixels there (no resampling, no
    blur), and since the displacement is ~0 on the region's edge there is no seam. All ones for
    engines without a warp source (a whole-face generator redraws everything)."""
    src = getattr(state.extra, "source", None)
    if not isinstance(src, warp.WarpSource):
        return np.ones((side, side), np.float32)
    dst = warp.target_controls(src, target)
    moved = np.linalg.norm(dst[:, :2] - src.control, axis=1) >= MOVED_PX
    canvas = np.zeros((side, side), np.uint8)
    f = side / state.size  # crop pixel centres → grid pixel centres
    corners = np.round(((dst[:, :2] + 0.5) * f - 0.5) * 16).astype(np.int32)
    tris = src.triangles[moved[src.triangles].any(1)]
    # One call for all triangles (8× faster than one each); the dilation closes hairline gaps
    # the scan conversion leaves between neighbours. That call fills where an odd number of
    # triangles overlap, so those that fold over (`warp.folded`: turned away, their orientation
    # flipped) and overlap their neighbours are filled once more, one by one.
    cv2.fillPoly(canvas, list(corners[tris]), 255, lineType=cv2.LINE_8, shift=4)
    for tri in corners[tris[warp.folded(src.control, dst[:, :2], tris)]]:
        cv2.fillConvexPoly(canvas, tri, 255, lineType=cv2.LINE_8, shift=4)
    return align.feathered_mask(cv2.dilate(canvas, np.ones((3, 3), np.uint8)).astype(np.float32) / 255.0, feather=1.0)
