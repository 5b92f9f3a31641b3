"""Face (and hand) landmarks: the only module that imports mediapipe.

`Landmarker(mode="image")` finds every face in a photo (static-image mode, then a second pass on a
full-resolution crop around each face so that precision does not depend on the photo's size);
`Landmarker(mode="video")` tracks faces across consecutive frames (mediapipe's tracking mode, fast;
frames whose faces are large are halved first, see TRACK_FACE_SIDE; a face too small for the whole
frame is searched for in zoomed windows and tracked in a window that follows it, see WINDOW_FACES).
Both return `Face` objects: (478, 3) landmarks incl. irises (see `reenact.geometry` for the frame).
`HandTracker` finds hands in consecutive frames (what may cover a face: `reenact.occlusion`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
import types
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Literal

import cv2
import numpy as np

from reenact import geometry

# Longest side the detector sees; larger photos are downscaled for detection only.
DETECT_MAX_SIDE = 1024
# Crop side (pixels) for the refinement pass in image mode.
REFINE_SIDE = 512
# Video mode: the next frame is halved (up to TRACK_MAX_SHRINK times a side) while the tracked
# faces keep at least this many pixels a side (landmark box). The mesh sees a face at about 128
# of its 192² input pixels (its crop is 1.5 face sides), so this keeps ≥ 2× the detail it uses,
# and spares mediapipe the pixels it would throw away (a 720p frame costs it 2× a 360p one).
TRACK_FACE_SIDE = 256
TRACK_MAX_SHRINK = 4
TRACK_GROW_BELOW = 0.9  # back to the next larger size when a face falls below this × TRACK_FACE_SIDE
# Video mode, faces small in the frame: mediapipe's detector sees the whole frame at 128² and
# misses a face under about a tenth of the frame's side (a 200-pixel face in a 1440p frame). When
# a frame shows no face, the zoomed windows of image mode are searched (at most once every
# SEARCH_EVERY frames without a face), and a face found there is tracked in a window of
# WINDOW_FACES face sides around it, moved when the face nears its edge or changes size 2×, and
# left when the face grows past WINDOW_LEAVE of the frame's longest side or is lost.
# A face found there must be SEARCH_MIN_FACE pixels a side or more (smaller ones drive nothing
# well, and false finds lie there: a letter of a title card) and be found again by the window's
# own tracker.
SEARCH_EVERY = 25
SEARCH_MIN_FACE = 80
WINDOW_FACES = 4.0
WINDOW_LEAVE = 0.25


@dataclass(frozen=True)
class Face:
    """One detected face. `points`: (478, 3) float32 (x, y pixels; z relative depth, pixel units)."""

    points: np.ndarray
    _fit: list = field(default_factory=list, repr=False, compare=False)

    @property
    def xy(self) -> np.ndarray:
        """(478, 2) float32 image coordinates."""
        return self.points[:, :2]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the mesh."""
        x0, y0 = self.points[:, :2].min(0)
        x1, y1 = self.points[:, :2].max(0)
        return float(x0), float(y0), float(x1), float(y1)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.bbox
        return (x1 - x0) * (y1 - y0)

    @property
    def fit(self) -> geometry.Similarity:
        """Similarity taking the canonical face onto this face (cached)."""
        if not self._fit:
            self._fit.append(geometry.fit_head(self.points))
        return self._fit[0]

    @property
    def pose(self) -> geometry.HeadPose:
        return geometry.rotation_to_pose(self.fit.rotation)

    def transformed(self, matrix: np.ndarray) -> "Face":
        """This face under a 2×3 similarity `matrix` (x, y mapped; z scaled by its scale factor)."""
        pts = self.points.astype(np.float64)
        out = np.empty_like(pts)
        out[:, :2] = pts[:, :2] @ matrix[:, :2].T + matrix[:, 2]
        out[:, 2] = pts[:, 2] * float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
        return Face(points=out.astype(np.float32))


_quiet_lock = threading.Lock()
_quiet_users = 0  # landmarkers inside `_quiet_stderr` now (in several threads: one redirect)
_quiet_saved: int | None = None  # the real fd 2 while redirected


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence native (C++) log lines that mediapipe/TFLite write straight to fd 2. fd 2 belongs
    to the process: the first of several threads inside redirects it, the last one out restores it."""
    global _quiet_users, _quiet_saved
    with _quiet_lock:
        if _quiet_users == 0:
            try:
                saved = os.dup(2)
            except OSError:  # no real fd 2 (some embedded interpreters)
                saved = None
            if saved is not None:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
                os.close(devnull)
            _quiet_saved = saved
        _quiet_users += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_users -= 1
            if _quiet_users == 0 and _quiet_saved is not None:
                os.dup2(_quiet_saved, 2)
                os.close(_quiet_saved)
                _quiet_saved = None


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM while mediapipe's native code runs and deliver them right after.

    A KeyboardInterrupt raised while native code imports or calls back into Python (protobuf
    loads modules lazily) is printed and swallowed there, and the render would go on."""
    mask = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, mask)
    except (AttributeError, OSError, ValueError):  # no POSIX signal masks here
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


QUIET_CALLS = 2  # a graph's native log lines come at its creation and first calls


class _Graph:
    """A mediapipe solution (`make()` builds it) whose native log lines are kept off the
    terminal: fd 2 is silenced while it is built and for its first QUIET_CALLS `process` calls
    only — fd 2 belongs to the process, and silencing it on every call of several trackers
    running at once would also swallow what the rest writes there meanwhile (progress bars,
    warnings). Ctrl-C / SIGTERM wait for each call (`_signals_deferred`)."""

    def __init__(self, make) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with _quiet_stderr(), _signals_deferred():
            self._graph = make()
        self._calls = 0

    def process(self, rgb: np.ndarray):
        quiet = self._calls < QUIET_CALLS
        self._calls += 1
        with _quiet_stderr() if quiet else contextlib.nullcontext(), _signals_deferred():
            return self._graph.process(rgb)

    def close(self) -> None:
        self._graph.close()


_IMPORTING = threading.Lock()  # landmarkers are made in several threads at once (pass 1)
# What mediapipe's package imports and reenact never uses: its drawing helpers' `import
# matplotlib.pyplot` (≈ 0.3 s, half of the import, for one plotting function). (Its Tasks API,
# ≈ 0.1 s more, is left alone: `mediapipe.tasks` must stay what mediapipe makes it.)
_UNUSED = ("matplotlib", "matplotlib.pyplot")


def _mediapipe():
    with _IMPORTING, _stand_ins(_UNUSED) if "mediapipe" not in sys.modules else contextlib.nullcontext():
        import mediapipe  # the project's only mediapipe import
    return mediapipe


@contextlib.contextmanager
def _stand_ins(names: tuple[str, ...]) -> Iterator[None]:
    """While mediapipe's package is imported, the modules `names` (not loaded yet) are empty
    stand-ins, removed from `sys.modules` afterwards: what mediapipe kept of them loads the real
    module on first use (an attribute), and a later import gets the real one."""
    stand_ins = {name: types.ModuleType(name) for name in names if name not in sys.modules}
    for name, module in stand_ins.items():
        module.__getattr__ = lambda attr, name=name: getattr(importlib.import_module(name), attr)
        parent, _, child = name.rpartition(".")
        if parent in stand_ins:
            setattr(stand_ins[parent], child, module)
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def _mediapipe_face_mesh(static: bool, max_faces: int) -> _Graph:
    return _Graph(lambda: _mediapipe().solutions.face_mesh.FaceMesh(
        static_image_mode=static, max_num_faces=max_faces, refine_landmarks=True,
        min_detection_confidence=0.5, min_tracking_confidence=0.5))


class Landmarker:
    """Face-mesh landmarks for photos (`mode="image"`) or consecutive video frames (`mode="video"`).

    `detect(rgb)` takes an RGB uint8 H×W×3 array and returns the faces found, largest first
    (an empty list when there is none). Not thread-safe; use one per stream.
    """

    def __init__(self, *, mode: Literal["image", "video"] = "image", max_faces: int = 6,
                 search: Literal["inline", "background", "off"] = "inline") -> None:
        if mode not in ("image", "video"):
            raise ValueError(f"mode must be 'image' or 'video', not {mode!r}")
        if search not in ("inline", "background", "off"):
            raise ValueError(f"search must be 'inline', 'background' or 'off', not {search!r}")
        self.mode = mode
        self.max_faces = max_faces
        self._mesh = _mediapipe_face_mesh(mode == "image", max_faces)
        self._refiner = _mediapipe_face_mesh(True, 2) if mode == "image" else None
        self._shrink = 1
        # Video mode's search for small faces: "inline" (in `detect`), "background" (in a thread
        # of its own, for live pictures that a search's ≈ 0.1 s would stall: the window opens a
        # few frames later) or "off". Its graphs are built when first needed.
        self._search = search if mode == "video" else "off"
        self._searcher: _Graph | None = None  # static: the zoomed windows
        self._searching: ThreadPoolExecutor | None = None  # "background": its one thread
        self._pending: Future | None = None  # "background": the search under way
        self._window_mesh: _Graph | None = None  # tracking inside the window
        self._window: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1
        self._search_in = 0  # faceless frames until the next search

    @property
    def shrink(self) -> int:
        """Video mode: how many times smaller (a side) the next frame is seen (`track_shrink`)."""
        return self._shrink

    def close(self) -> None:
        if self._searching is not None:  # let a search under way end before its graph closes
            self._searching.shutdown(wait=True)
        for m in (self._mesh, self._refiner, self._searcher, self._window_mesh):
            if m is not None:
                m.close()

    def __enter__(self) -> "Landmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in `rgb` (RGB uint8 H×W×3), largest first (at most `max_faces`).

        Image mode also looks in overlapping zoomed windows: the detector is built for faces
        that fill a good part of the picture, so small faces in a group or a large photo are
        only found when zoomed in on. Video mode does so when a frame shows no face (`_track`)."""
        rgb = _as_rgb(rgb)
        if self.mode == "video":
            return sorted(self._track(rgb), key=lambda f: -f.area)
        faces = self._detect_view(rgb, 0, 0, rgb.shape[1], rgb.shape[0])
        if len(faces) < self.max_faces:
            faces = _merge(faces, self._detect_tiles(rgb, deep=not faces))[: self.max_faces]
        faces = [self._refine(rgb, f) for f in faces]
        return sorted(faces, key=lambda f: -f.area)

    def _track(self, rgb: np.ndarray) -> list[Face]:
        """Video mode: the faces of the next frame — in the window while one is open, else in
        the whole frame, then (no face, a search due) in the zoomed windows."""
        h, w = rgb.shape[:2]
        if self._window is not None:
            faces = self._in_window(rgb)
            if faces:
                return faces
        faces = self._detect_view(rgb, 0, 0, w, h, shrink=self._shrink)
        self._shrink = track_shrink(faces, self._shrink)
        if faces or self._search == "off":
            return faces
        if self._pending is not None:  # "background": a search under way, or its result
            if not self._pending.done():
                return []
            found, self._pending = self._pending.result(), None
            if found:
                return self._open_window(rgb, found)
        if self._search_in > 0:
            self._search_in -= 1
            return []
        self._search_in = SEARCH_EVERY - 1
        if self._search == "background":
            if self._searching is None:
                self._searching = ThreadPoolExecutor(1, thread_name_prefix="face-search")
            self._pending = self._searching.submit(self._search_windows, rgb.copy())
            return []
        return self._open_window(rgb, self._search_windows(rgb))

    def _search_windows(self, rgb: np.ndarray) -> list[Face]:
        """The faces of SEARCH_MIN_FACE pixels or more the zoomed windows find in `rgb`."""
        if self._searcher is None:
            self._searcher = _mediapipe_face_mesh(True, self.max_faces)
        found = self._detect_tiles(rgb, deep=True, mesh=self._searcher)
        return [f for f in found if _side(f) >= SEARCH_MIN_FACE]

    def _open_window(self, rgb: np.ndarray, found: list[Face]) -> list[Face]:
        """The window around the largest face `found` (by a search, in this frame or a few
        before), if its own tracker finds a face there in `rgb`: those faces (else none, and no
        window)."""
        if not found:
            return []
        h, w = rgb.shape[:2]
        self._window = _window_around(max(found, key=lambda f: f.area), w, h)
        faces = self._window_view(rgb, moved=True)
        if not faces:  # not confirmed
            self._window = None
        return faces

    def _in_window(self, rgb: np.ndarray) -> list[Face]:
        """The faces tracked in the window, which follows the largest (moved when it nears an
        edge or changes size, closed when it is lost or large enough for the whole frame)."""
        faces = self._window_view(rgb)
        h, w = rgb.shape[:2]
        largest = max(faces, key=lambda f: f.area, default=None)
        if largest is None or _side(largest) >= WINDOW_LEAVE * max(w, h):
            self._window = None
            return faces
        want = _window_around(largest, w, h)
        if not _well_inside(largest, self._window, want, w, h):
            self._window = want
            faces = self._window_view(rgb, moved=True) or faces
        return faces

    def _window_view(self, rgb: np.ndarray, *, moved: bool = False) -> list[Face]:
        """The faces in the window, tracked by a graph of its own. `moved`: the window has just
        been placed, and the graph's tracking state (in the old window's coordinates) is stale,
        so the frame is seen twice: the first call re-places it."""
        if self._window_mesh is None:
            self._window_mesh = _mediapipe_face_mesh(False, self.max_faces)
        if moved:
            self._detect_view(rgb, *self._window, mesh=self._window_mesh)
        return self._detect_view(rgb, *self._window, mesh=self._window_mesh)

    def _detect_view(self, rgb: np.ndarray, x0: int, y0: int, x1: int, y1: int, *, shrink: int = 1,
                     mesh: _Graph | None = None) -> list[Face]:
        view = rgb[y0:y1, x0:x1]
        h, w = view.shape[:2]
        factor = min(1.0, DETECT_MAX_SIDE / max(h, w), 1.0 / shrink)
        if min(h, w) * factor < 2:  # a sliver (e.g. 20000×1) shrinks to nothing and holds no face
            return []
        small = view if factor == 1.0 else cv2.resize(
            view, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
        offset = np.array([x0, y0, 0], np.float32)
        return [Face(points=p / factor + offset) for p in self._run(mesh or self._mesh, small)]

    def _detect_tiles(self, rgb: np.ndarray, *, deep: bool, mesh: _Graph | None = None) -> list[Face]:
        """Windows of 1/2 (and, when `deep`, then 1/4) of the photo's longest side, overlapping
        by half; stops at the first level that finds a face. `mesh`: a static-mode graph
        (default: image mode's own)."""
        mesh = mesh or self._mesh
        h, w = rgb.shape[:2]
        for frac in (2, 4) if deep else (2,):
            side = max(h, w) // frac
            if side < 192:
                break
            # Each window is seen at most DETECT_MAX_SIDE a side: the photo is shrunk once for all
            # of them (a 12 MP photo: 130 → 70 ms), and the windows cut from that.
            f = min(1.0, DETECT_MAX_SIDE / side)
            small = rgb if f == 1.0 else cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))),
                                                    interpolation=cv2.INTER_AREA)
            fx, fy = small.shape[1] / w, small.shape[0] / h
            back = np.array([1 / fx, 1 / fy, 1 / fx], np.float32)  # (z is in units of the width)
            found: list[Face] = []
            for y0 in np.linspace(0, max(h - side, 0), 2 * frac - 1).astype(int):
                for x0 in np.linspace(0, max(w - side, 0), 2 * frac - 1).astype(int):
                    sx, sy = round(x0 * fx), round(y0 * fy)
                    view = small[sy:sy + round(side * fy), sx:sx + round(side * fx)]
                    more = [Face(points=(p + np.float32([sx, sy, 0])) * back) for p in self._run(mesh, view)]
                    found = _merge(found, more)
            if found:
                return found
        return []

    @staticmethod
    def _run(mesh, rgb: np.ndarray) -> list[np.ndarray]:
        h, w = rgb.shape[:2]
        if min(h, w) < 16:  # mediapipe aborts its graph on empty regions
            return []
        result = mesh.process(rgb)
        out = []
        for lm in result.multi_face_landmarks or ():
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in lm.landmark], dtype=np.float32)
            if pts.shape == (geometry.N_LANDMARKS, 3):
                out.append(pts)
        return out

    def _refine(self, rgb: np.ndarray, face: Face) -> Face:
        """Re-run the mesh on a full-resolution square crop around `face` (keeps the coarse
        result when the refinement pass loses the face)."""
        x0, y0, x1, y1 = face.bbox
        side = 2.0 * max(x1 - x0, y1 - y0)
        scale = REFINE_SIDE / side
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        m = np.array([[scale, 0, REFINE_SIDE / 2 - scale * cx],
                      [0, scale, REFINE_SIDE / 2 - scale * cy]], dtype=np.float64)
        crop = cv2.warpAffine(rgb, m, (REFINE_SIDE, REFINE_SIDE), flags=cv2.INTER_AREA
                              if scale < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        found = self._run(self._refiner, crop)
        if not found:
            return face
        # Another face may share the crop: keep the one centred where we looked.
        best = min(found, key=lambda p: float(np.linalg.norm(p[:, :2].mean(0) - REFINE_SIDE / 2)))
        return Face(points=best).transformed(cv2.invertAffineTransform(m))


def _side(face: Face) -> float:
    x0, y0, x1, y1 = face.bbox
    return max(x1 - x0, y1 - y0)


def _window_around(face: Face, w: int, h: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the square of WINDOW_FACES face sides centred on `face`, inside the
    w×h frame (shifted in, or cut to the frame where it is larger)."""
    side = WINDOW_FACES * _side(face)
    x0, y0, x1, y1 = face.bbox

    def span(centre: float, n: int) -> tuple[int, int]:
        s = min(side, n)
        start = int(round(min(max(centre - s / 2, 0.0), n - s)))
        return start, min(n, start + int(round(s)))

    (a, c), (b, d) = span((x0 + x1) / 2, w), span((y0 + y1) / 2, h)
    return a, b, c, d


def _well_inside(face: Face, window: tuple[int, int, int, int], want: tuple[int, int, int, int],
                 w: int, h: int) -> bool:
    """Whether `window` may stay: its size within 2× of the one `face` would get (`want`), and
    the face at least half a face side from each of its edges that is not the frame's."""
    have_side, want_side = max(window[2] - window[0], window[3] - window[1]), max(want[2] - want[0], want[3] - want[1])
    if not 0.5 <= have_side / max(want_side, 1) <= 2.0:
        return False
    margin = 0.5 * _side(face)
    fx0, fy0, fx1, fy1 = face.bbox
    x0, y0, x1, y1 = window
    return ((x0 == 0 or fx0 - x0 >= margin) and (y0 == 0 or fy0 - y0 >= margin)
            and (x1 == w or x1 - fx1 >= margin) and (y1 == h or y1 - fy1 >= margin))


def track_shrink(faces: list[Face], shrink: int) -> int:
    """How many times smaller the video landmarker sees the frame after one with `faces`, seen
    `shrink` times smaller: halved while the smallest face stays ≥ TRACK_FACE_SIDE pixels a
    side, doubled back below TRACK_GROW_BELOW of that (hysteresis: no toggling frame to frame);
    full size when no face was found (the next face may be small). Mediapipe tracks in
    coordinates relative to the frame, so a change of size does not disturb its tracking."""
    if not faces:
        return 1
    x0, y0, x1, y1 = np.array([f.bbox for f in faces]).T
    side = float(np.min(np.maximum(x1 - x0, y1 - y0)))  # the smallest face, frame pixels
    while shrink > 1 and side / shrink < TRACK_GROW_BELOW * TRACK_FACE_SIDE:
        shrink //= 2
    while shrink < TRACK_MAX_SHRINK and side / (2 * shrink) >= TRACK_FACE_SIDE:
        shrink *= 2
    return shrink


HAND_MAX_SIDE = 640  # the hand tracker sees frames at most this large (its palm detector works at 192²)


class HandTracker:
    """Hands in consecutive frames (mediapipe's hand tracker, video mode, its light model):
    `find(rgb)` → a (21, 2) float32 array of pixel coordinates per hand found (at most two).
    Frames may be skipped between calls. Not thread-safe; use one per stream."""

    def __init__(self) -> None:
        self._hands = _Graph(lambda: _mediapipe().solutions.hands.Hands(
            static_image_mode=False, max_num_hands=2, model_complexity=0, min_detection_confidence=0.5,
            min_tracking_confidence=0.5))

    def find(self, rgb: np.ndarray) -> list[np.ndarray]:
        rgb = _as_rgb(rgb)
        h, w = rgb.shape[:2]
        factor = min(1.0, HAND_MAX_SIDE / max(h, w))
        small = rgb if factor == 1.0 else cv2.resize(rgb, (round(w * factor), round(h * factor)),
                                                     interpolation=cv2.INTER_AREA)
        result = self._hands.process(small)
        return [np.array([(p.x * w, p.y * h) for p in hand.landmark], np.float32)
                for hand in result.multi_hand_landmarks or ()]

    def close(self) -> None:
        self._hands.close()

    def __enter__(self) -> "HandTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _merge(faces: list[Face], more: list[Face]) -> list[Face]:
    """`faces` plus those of `more` whose centre is not within 0.3 face sizes of one already in."""
    out = list(faces)
    for f in more:
        c, scale = f.xy.mean(0), np.sqrt(f.area)
        if all(np.linalg.norm(c - o.xy.mean(0)) > 0.3 * scale for o in out):
            out.append(f)
    return out


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected RGB uint8 H×W×3, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)
