"""Face choice and pass 1 of a video render: follow one driver face through every frame.

Faces are chosen with "largest" or a 0-based index in left-to-right order (by the centre of each
face's box in the image). In a video the choice is made once, where the face first appears, and
then *followed by position*: each frame takes the face nearest to where the chosen face was last
seen (not the largest face of each frame, which would jump between people). A face that is not
found for `reacquire` frames is chosen afresh.

`track_driver` writes one (478, 3) record per frame (NaN when the followed face is absent) to a
`temporal.FrameFile`, so the track costs disk, not memory.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from reenact import runtime, temporal
from reenact.errors import MediaError
from reenact.landmarks import Face, Landmarker

# A face in the next frame is the same one when its centre moved less than this many face widths.
FOLLOW_DISTANCE = 0.5
MIN_TRACKED_FACES = 4  # the video landmarker looks for this many faces, to count and choose
TRACK_WORKERS_MAX = 2  # landmarkers pass 1 runs at once on one video (`tracking_workers`)
DETECT_AHEAD = 2  # frames waiting per landmarker (`detect_in_order`): memory stays bounded


def left_to_right(faces: list[Face]) -> list[Face]:
    """Faces ordered by the horizontal centre of their box, image left first."""
    return sorted(faces, key=lambda f: (f.bbox[0] + f.bbox[2]) / 2)


def select_face(faces: list[Face], choice: str | int) -> Face | None:
    """The chosen face of `faces` (largest first, as Landmarker returns them), None when there
    are too few faces for an index."""
    if not faces:
        return None
    if choice == "largest":
        return max(faces, key=lambda f: f.area)
    ordered = left_to_right(faces)
    return ordered[choice] if choice < len(ordered) else None


def describe_choice(choice: str | int) -> str:
    return "the largest" if choice == "largest" else f"face {choice} (0-based, from the left)"


def _centre_and_width(face: Face) -> tuple[np.ndarray, float]:
    x0, y0, x1, y1 = face.bbox
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), max(x1 - x0, 1.0)


class FaceFollower:
    """Picks the chosen face in consecutive frames by position continuity."""

    def __init__(self, choice: str | int, *, reacquire: int = 25) -> None:
        self.choice, self.reacquire = choice, reacquire
        self._last: tuple[np.ndarray, float] | None = None
        self._missed = 0

    def pick(self, faces: list[Face]) -> Face | None:
        if self._last is None or self._missed > self.reacquire:
            face = select_face(faces, self.choice)
        else:
            face = self._nearest(faces)
        if face is None:
            self._missed += 1
        else:
            self._last, self._missed = _centre_and_width(face), 0
        return face

    def _nearest(self, faces: list[Face]) -> Face | None:
        centre, width = self._last
        best = min(faces, default=None,
                   key=lambda f: float(np.linalg.norm(_centre_and_width(f)[0] - centre)))
        if best is None or np.linalg.norm(_centre_and_width(best)[0] - centre) > FOLLOW_DISTANCE * width:
            return None
        return best


@dataclass
class TrackSummary:
    """Pass 1's findings: `frames` decoded, `with_face` frames where the followed face was found,
    `max_faces` the most faces seen in one frame, `first_face` the first frame with it (−1: none);
    `more_faces`: [frame, faces] wherever `max_faces` grew (so a track cut short can tell its
    own); `cut`: the track ends before the video does (`until`, `video._cut_unused`)."""

    frames: int = 0
    with_face: int = 0
    max_faces: int = 0
    first_face: int = -1
    more_faces: list[list[int]] = field(default_factory=list)
    cut: bool = False


class Stopped(Exception):
    """`track_driver` was asked to stop (another track running beside it failed)."""


def track_driver(frames: Iterable[np.ndarray], track: temporal.FrameFile, *, choice: str | int,
                 fps: float, progress: Callable[[int], None] | None = None,
                 timer=None, stop: threading.Event | None = None,
                 watch: Callable[[np.ndarray, Face | None], None] | None = None,
                 workers: int = 1, until: Callable[[], int | None] | None = None) -> TrackSummary:
    """Landmarks of the chosen driver face in every frame → `track` (appended, NaN = absent).
    `timer`: optional `pipeline.StageTimer` (stages "decode", "landmarks"); `stop`: raises
    Stopped before the next frame once set; `watch`: called with each frame and its face (None:
    none), e.g. `occlusion.HandWatch`; `workers`: landmarkers detecting at once (`detect_in_order`);
    `until`: asked before each frame is decoded; once it returns a number of frames already
    decoded, the track ends there (`summary.cut`; the frames on their way are still tracked, so
    it may hold a few more: `video._cut_unused` makes it exact)."""
    max_faces = max(MIN_TRACKED_FACES, choice + 2 if isinstance(choice, int) else 0)
    follower = FaceFollower(choice, reacquire=max(1, round(fps)))
    summary = TrackSummary()

    def decoded() -> Iterator[np.ndarray]:
        it = iter(frames)
        for count in itertools.count():
            if stop is not None and stop.is_set():
                raise Stopped
            limit = until() if until is not None else None
            if limit is not None and count >= limit:
                # cut short only if the video goes on (past `limit` already, or one more frame)
                summary.cut = count > limit or _has_more(it)
                return
            with stage(timer, "decode"):
                frame = next(it, None)
            if frame is None:
                return
            yield frame

    for frame, faces in detect_in_order(decoded(), max_faces=max_faces, workers=workers, timer=timer):
        face = follower.pick(faces)
        if watch is not None:
            watch(frame, face)
        track.append(temporal.missing() if face is None else face.points)
        if len(faces) > summary.max_faces:
            summary.max_faces = len(faces)
            summary.more_faces.append([summary.frames, len(faces)])
        if face is not None:
            summary.with_face += 1
            if summary.first_face < 0:
                summary.first_face = summary.frames
        summary.frames += 1
        if progress:
            progress(summary.frames)
    return summary


def _has_more(frames: Iterator[np.ndarray]) -> bool:
    """Whether `frames` yields another frame (one that cannot be decoded counts: it is there)."""
    try:
        return next(frames, None) is not None
    except MediaError:
        return True


def tracking_workers() -> int:
    """Landmarkers pass 1 runs at once on a single video: one per core this process may use, at
    most TRACK_WORKERS_MAX."""
    return max(1, min(runtime.usable_cores(), TRACK_WORKERS_MAX))


def detect_in_order(frames: Iterable[np.ndarray], *, max_faces: int, workers: int = 1,
                    timer=None) -> Iterator[tuple[np.ndarray, list[Face]]]:
    """(frame, faces) for each frame, in order, from video-mode landmarkers. With `workers` > 1,
    frame i goes to landmarker i mod `workers`, each in a thread of its own (mediapipe runs
    outside the GIL): each landmarker tracks every `workers`-th frame, its own frames in order, at
    most DETECT_AHEAD of them waiting — on two cores pass 1 takes 3.4–3.8 instead of 6.5 ms per
    frame, landmarks within ≈ 0.2–1 px of one landmarker's and as steady (README, Performance)."""
    with contextlib.ExitStack() as stack:
        marks = [stack.enter_context(Landmarker(mode="video", max_faces=max_faces)) for _ in range(workers)]

        def detect(lm: Landmarker, frame: np.ndarray) -> list[Face]:
            with stage(timer, "landmarks"):
                return lm.detect(frame)

        if workers == 1:
            for frame in frames:
                yield frame, detect(marks[0], frame)
            return
        # one single-thread pool per landmarker: its frames run in the order they were given
        pools = [stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="landmarks")) for _ in marks]
        pending: collections.deque[tuple[np.ndarray, Future]] = collections.deque()
        stack.callback(lambda: [job.cancel() for _, job in pending])  # leaving early: start no more
        for i, frame in enumerate(frames):
            pending.append((frame, pools[i % workers].submit(detect, marks[i % workers], frame)))
            if len(pending) >= workers * DETECT_AHEAD:
                frame, job = pending.popleft()
                yield frame, job.result()
        while pending:
            frame, job = pending.popleft()
            yield frame, job.result()


def stage(timer, name: str):
    """`timer(name)` (a `pipeline.StageTimer` stage), or nothing when there is no timer."""
    if timer is None:
        return contextlib.nullcontext()
    return timer(name)
