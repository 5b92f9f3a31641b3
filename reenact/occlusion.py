"""Hands in front of the face: which frames of a video source a hand covers the lower face of.

`--resting` (`reenact.v2v`) draws each frame's lower face from a resting frame of the source:
right for a face that is visible, wrong where a hand is in front of the mouth — the bank frame's
mouth would be painted over the hand, and a bank frame with a hand would paste that hand into
frames without one. `HandWatch` runs `landmarks.HandTracker` on the source's frames during
pass 1 and marks the frames whose lower face (from the nose down, `motion.speech_weights`) a hand
covers by COVER_SHARE or more; `v2v` keeps those frames out of the bank and renders them as
without `--resting`.
"""

from __future__ import annotations

import queue
import threading

import cv2
import numpy as np

from reenact import motion, regions, tracking
from reenact.landmarks import Face, HandTracker

HAND_EVERY = 4  # the hand tracker runs on every HAND_EVERY-th frame with a face (it costs ~10 ms)
HAND_REACH = 4  # a covered frame marks this many frames either side too (skipped frames, fast hands)
# A frame counts as covered only when the frame looked at before it was covered too: a hand in
# front of the mouth stays for a while, while the tracker's rare false hand (a collar, a beard)
# is gone the next time it looks.
COVER_SHARE = 0.1  # share of the lower face a hand must cover
GRID = 64  # pixels a side of the grid the lower face is measured on


def lower_face_hull(points: np.ndarray) -> np.ndarray:
    """(N, 2) convex hull, frame pixels, of a face's landmarks from the nose down."""
    pts = np.asarray(points, np.float32)[motion.speech_weights() >= 0.5, :2]
    return cv2.convexHull(pts)[:, 0]


def covered_share(points: np.ndarray, hands: list[np.ndarray]) -> float:
    """Share (0..1) of the face's lower face (`lower_face_hull`) inside the hands' convex hulls."""
    face = lower_face_hull(points)
    if not hands:
        return 0.0
    origin = face.min(0)
    scale = (GRID - 1) / max(float((face.max(0) - origin).max()), 1e-6)
    face_mask = regions.fill_polygon(GRID, (face - origin) * scale) > 0.5
    if not face_mask.any():
        return 0.0
    hand_mask = np.zeros((GRID, GRID), bool)
    for hand in hands:
        hull = cv2.convexHull(np.asarray(hand, np.float32))[:, 0]
        hand_mask |= regions.fill_polygon(GRID, (hull - origin) * scale) > 0.5
    return float((face_mask & hand_mask).sum() / face_mask.sum())


class HandWatch:
    """Per source frame, in order (`__call__(frame, face)`, the face None where none was found):
    whether a hand covers its lower face, in two frames looked at in a row. The tracker runs in a
    thread of its own, a few frames behind (QUEUE at most), so pass 1 does not wait for it.
    `covered()` → (frames,) bool, grown by HAND_REACH, once every frame is seen (it waits for
    the thread; raises what the thread raised). `timer`: an optional `pipeline.StageTimer`
    (stage "hands"). `close()` stops the thread (also after an error elsewhere)."""

    QUEUE = 8

    def __init__(self, timer=None) -> None:
        self._timer = timer
        self.frames = 0  # frames seen so far
        self._hit: list[tuple[int, int]] = []  # covered frames: two looks in a row (the earlier, the later)
        self._last: int | None = None  # the last frame looked at, if the tracker found it covered
        self._todo: queue.Queue = queue.Queue(self.QUEUE)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __call__(self, frame: np.ndarray, face: Face | None) -> None:
        i, self.frames = self.frames, self.frames + 1
        if face is None or i % HAND_EVERY:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._look, name="hands", daemon=True)
            self._thread.start()
        self._offer((i, frame, face.points))

    def _offer(self, item) -> None:
        """Queue `item` for the thread, waiting while the queue is full — unless the thread has
        ended (a thread that failed takes nothing more)."""
        while self._thread.is_alive():
            try:
                self._todo.put(item, timeout=0.2)
                return
            except queue.Full:
                pass

    def _look(self) -> None:
        try:
            with HandTracker() as tracker:
                while (item := self._todo.get()) is not None:
                    i, frame, points = item
                    with tracking.stage(self._timer, "hands"):
                        covered = covered_share(points, tracker.find(frame)) >= COVER_SHARE
                    if covered and self._last == i - HAND_EVERY:
                        self._hit.append((self._last, i))
                    self._last = i if covered else None
        except BaseException as e:  # noqa: BLE001 — raised again by covered()
            self._error = e

    def covered(self, frames: int | None = None) -> np.ndarray:
        """(frames,) bool, as if only the first `frames` frames (default: all seen) had been seen."""
        self.close()
        if self._error is not None:
            raise self._error
        frames = self.frames if frames is None else min(frames, self.frames)
        out = np.zeros(frames, bool)
        for i in {i for pair in self._hit if pair[1] < frames for i in pair}:
            out[max(0, i - HAND_REACH):i + HAND_REACH + 1] = True
        return out

    def close(self) -> None:
        if self._thread is not None:
            self._offer(None)
            self._thread.join()
            self._thread = None
