"""Streaming reenactment: one driver frame in, one rendered frame out, no look-ahead.

Used by the Python API's `Animator.frames` and by `reenact live`. Unlike `reenact.video`, which
reads the whole driver twice (tracking, then rendering), a stream never sees the future:

* landmarks: mediapipe in video (tracking) mode; the chosen face is followed by position
  (`tracking.FaceFollower`), as in a video render;
* smoothing: the video path's One-Euro filter run forward only (`temporal.OnlineSmoother`),
  so it removes jitter but adds a frame or two of lag on fast motion;
* motion: relative to an anchor (the driver's neutral face) or absolute. The anchor is the
  first frame with a face unless one is given, and `reanchor()` takes the latest face as the
  new one (the live view's space key). A video render instead picks the frame nearest the
  reference from the whole driver;
* frames without the face: the last face is held (never interpolated: that needs the next
  face); before the first face the reference is shown unchanged.

Memory is constant: nothing is kept but the last face and the filter's state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reenact import temporal, tracking
from reenact.config import MotionConfig
from reenact.landmarks import Face, Landmarker
from reenact.pipeline import Reenactor, retargeter, side_by_side


@dataclass
class StreamCounts:
    """Frames seen so far: `with_face` (the followed face found), `held` (not found: the last
    face reused) and `still` (no face yet: the reference unchanged)."""

    frames: int = 0
    with_face: int = 0
    held: int = 0
    still: int = 0


class Stream:
    """Renders driver frames one by one with `reenactor` (built with any retargeter: this class
    sets its own from `motion`). `anchor`: (478, 3) landmarks of the driver's neutral face for
    relative motion (None: the first face found). `fps`: the stream's nominal frame rate (the
    smoothing filter's time step). `search`: how a face too small for the whole frame is searched
    for (`Landmarker`): "inline" (the same results every run), "background" (a live picture,
    which a search would stall) or "off". Not thread-safe; `close()` frees the landmarker."""

    def __init__(self, reenactor: Reenactor, motion: MotionConfig, *, driver_face: str | int = "largest",
                 fps: float = 25.0, anchor: np.ndarray | None = None, search: str = "inline") -> None:
        self.reenactor, self.motion = reenactor, motion
        self.counts = StreamCounts()
        max_faces = max(tracking.MIN_TRACKED_FACES, driver_face + 2 if isinstance(driver_face, int) else 0)
        self._landmarker = Landmarker(mode="video", max_faces=max_faces, search=search)
        self._follower = tracking.FaceFollower(driver_face, reacquire=max(1, round(fps)))
        self._smoother = temporal.OnlineSmoother(fps) if motion.smooth else None
        self._last: np.ndarray | None = None  # the last face rendered (smoothed landmarks)
        self._missed = 0
        self._want_anchor = motion.mode == "relative"
        if motion.mode == "absolute":
            self._set_retargeter(None)
        elif anchor is not None:
            self._set_retargeter(anchor)

    def reanchor(self) -> None:
        """Relative motion: take the latest face as the neutral anchor (the next face when none
        has been seen yet). No effect with absolute motion."""
        if self.motion.mode != "relative":
            return
        if self._last is None:
            self._want_anchor = True
        else:
            self._set_retargeter(self._last)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The output for one driver frame (RGB uint8 H×W×3): the reference's frame (or its
        face crop, or [driver | result] with `compare`), as `Reenactor.render` makes it."""
        points = self._track(frame)
        face = None if points is None else Face(points=points.astype(np.float32))
        out = self.reenactor.render(face, frame)
        if self.reenactor.config.compare:
            out = side_by_side(frame, out)
        return out

    def _track(self, frame: np.ndarray) -> np.ndarray | None:
        """The landmarks to render this frame with (found, smoothed; or held; None = still)."""
        self.counts.frames += 1
        face = self._follower.pick(self._landmarker.detect(frame))
        if face is None:
            self._missed += 1
            if self._last is None:
                self.counts.still += 1
            else:
                self.counts.held += 1
            return self._last
        if self._smoother is not None and self._missed > self.motion.max_gap:
            self._smoother.reset()  # the face was gone a while: do not slide it from the old place
        self._missed = 0
        self.counts.with_face += 1
        points = self._smoother(face.points) if self._smoother is not None else face.points.astype(np.float64)
        if self._want_anchor:
            self._set_retargeter(points)
        self._last = points
        return points

    def _set_retargeter(self, anchor: np.ndarray | None) -> None:
        self.reenactor.retarget = retargeter(self.reenactor.reference, self.motion, anchor)
        self._want_anchor = False

    def output_size(self) -> tuple[int, int]:
        """(width, height) of the frames returned without `compare`."""
        return self.reenactor.output_size()

    def close(self) -> None:
        self._landmarker.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
