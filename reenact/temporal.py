"""Time-series side of video: on-disk landmark tracks, gap filling, smoothing, stability metric.

A *track* holds one (478, 3) float32 landmark record per driver frame in a flat binary file
(`FrameFile`), NaN where the frame has no (chosen) face. Records are read and written one at a
time with pread/pwrite rather than memory-mapped, so neither RAM nor the resident-set size grows
with the video's length (about 5.7 KB of disk per frame).

Processing a raw track for rendering (`process_track`):

1. Gaps (`gap_status`): frames without a face between two faces are interpolated when the gap is
   at most `max_gap` frames, otherwise the last face is held; before the first face the first face
   is held for a short lead-in, or the reference is shown unchanged for a long one ("still").
2. Smoothing (`smooth=True`): a zero-phase One-Euro filter (run forward, then backward over the
   forward result, so it adds no lag). Each frame is split into head pose (rotation quaternion,
   translation, log-scale) and the pose-free canonical shape (expression), which get their own
   settings (`SMOOTHING`): the head's jitter is removed strongly while the lips, whose speed
   opens the filter's cut-off, keep their fast motion.

`stability` is the metric used to check the result: mean frame-to-frame displacement and mean
second difference (acceleration, the "jitter") of landmarks in units of the face's eye-corner
distance.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from reenact import geometry as g

FACE, INTERPOLATED, HELD, STILL = 0, 1, 2, 3
STATUS_NAMES = ("face", "interpolated", "held", "still")
POINTS = (g.N_LANDMARKS, 3)


class FrameFile:
    """Fixed-shape records (float32 unless `dtype` says otherwise) in a flat binary file, one per frame.

    `mode`: "r" (read), "w" (create/truncate) or "a" (append to what is there). Index with
    `ff[i]` / `ff[i] = array`; `append(array)`; `len(ff)` counts whole records (a torn last
    record from a killed writer is ignored).
    """

    _fd = -1  # until the file is open: `__del__` of one whose opening failed has nothing to close

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...] = POINTS, mode: str = "r",
                 dtype: type = np.float32) -> None:
        flags = {"r": os.O_RDONLY, "w": os.O_RDWR | os.O_CREAT | os.O_TRUNC, "a": os.O_RDWR | os.O_CREAT}[mode]
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self._nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self._fd = os.open(self.path, flags, 0o644)

    def __len__(self) -> int:
        return os.fstat(self._fd).st_size // self._nbytes

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(i)
        data = os.pread(self._fd, self._nbytes, i * self._nbytes)
        return np.frombuffer(data, self.dtype).reshape(self.shape).copy()

    def __setitem__(self, i: int, value: np.ndarray) -> None:
        arr = np.ascontiguousarray(value, self.dtype).reshape(self.shape)
        os.pwrite(self._fd, arr.tobytes(), i * self._nbytes)

    def append(self, value: np.ndarray) -> None:
        self[len(self)] = value

    def truncate(self, n: int) -> None:
        os.ftruncate(self._fd, n * self._nbytes)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "FrameFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def missing() -> np.ndarray:
    """The record stored for a frame without a face."""
    return np.full(POINTS, np.nan, np.float32)


# ───────────────────────────── gaps ─────────────────────────────

def frames_with_face(track: FrameFile) -> np.ndarray:
    """(N,) bool: which records of `track` hold a face (not `missing()`)."""
    return np.array([not np.isnan(track[i][0, 0]) for i in range(len(track))], bool)


def gap_status(found: np.ndarray, max_gap: int) -> np.ndarray:
    """(N,) int8 status per frame from (N,) bool `found`: FACE, INTERPOLATED (a gap of at most
    `max_gap` frames between two faces), HELD (a longer gap, or after the last face: the last face
    is reused; also a lead-in of at most `max_gap` frames: the first face is reused) or STILL (a
    longer lead-in: the reference is shown unchanged). All STILL when nothing was found."""
    found = np.asarray(found, bool)
    status = np.where(found, FACE, HELD).astype(np.int8)
    idx = np.flatnonzero(found)
    if idx.size == 0:
        status[:] = STILL
        return status
    if idx[0] > max_gap:
        status[: idx[0]] = STILL
    for a, b in zip(idx[:-1], idx[1:]):
        if 1 < b - a <= max_gap + 1:
            status[a + 1: b] = INTERPOLATED
    return status


def filled(raw: FrameFile, status: np.ndarray) -> Iterator[np.ndarray | None]:
    """Per frame, the landmarks to render (None for STILL), gaps filled as `status` says;
    linear interpolation between the faces either side of an INTERPOLATED gap. Streams."""
    found = status == FACE
    last: np.ndarray | None = None
    nxt: tuple[int, np.ndarray] | None = None
    first = int(np.argmax(found)) if found.any() else -1
    for i, s in enumerate(status):
        if s == FACE:
            last = raw[i].astype(np.float64)
            yield last
        elif s == STILL:
            yield None
        elif s == HELD:
            yield last if last is not None else raw[first].astype(np.float64)
        else:
            if nxt is None or nxt[0] < i:
                j = i + int(np.argmax(found[i:]))
                nxt = (j, raw[j].astype(np.float64))
            prev = i - 1 - int(np.argmax(found[i - 1::-1]))
            w = (i - prev) / (nxt[0] - prev)
            yield (1 - w) * last + w * nxt[1]


# ───────────────────────────── smoothing ─────────────────────────────

@dataclass(frozen=True)
class OneEuro:
    """One-Euro filter settings (Casiez et al. 2012). The cut-off frequency rises with speed:
    cutoff = min_cutoff + beta · speed, so slow motion (where noise shows) is smoothed hard and
    fast motion passes. min_cutoff, d_cutoff in Hz; beta in Hz per unit of speed (the unit of the
    speed is given where the filter is used)."""

    min_cutoff: float
    beta: float
    d_cutoff: float = 1.0


# Tuned where the truth is known (benchmarks/tune_smoothing.py: a synthetic talking head with
# fast speech-like mouth motion and blinks, plus detector-like noise measured on the shared clips)
# and checked on the real clips (benchmarks/bench_stability.py). Speeds are in radians per second
# (rotation), face sizes per second (translation), log-scale per second (scale) and eye-corner
# distances per second (shape). The shape's speed estimate reacts fast (d_cutoff 8 Hz), so a
# mouth that starts to open raises the cut-off at once and keeps its motion; its beta (300) is
# the one at which the smoothed mouth opening is no farther from the truth than the noisy one
# (beta 100 removes a little more jitter but flattens the mouth slightly).
SMOOTHING = {
    "rotation": OneEuro(min_cutoff=1.5, beta=3.0),
    "translation": OneEuro(min_cutoff=1.5, beta=2.0),
    "scale": OneEuro(min_cutoff=1.0, beta=1.0),
    "shape": OneEuro(min_cutoff=2.0, beta=300.0, d_cutoff=8.0),
}
# Layout of the pose+shape parameter vector a frame is split into.
_ROT, _TRANS, _SCALE, _SHAPE = slice(0, 4), slice(4, 7), slice(7, 8), slice(8, 8 + 3 * g.N_LANDMARKS)
PARAMS = 8 + 3 * g.N_LANDMARKS
_GROUPS = {"rotation": _ROT, "translation": _TRANS, "scale": _SCALE, "shape": _SHAPE}


def _alpha(cutoff: np.ndarray | float, fps: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau * fps)


class _EuroState:
    """Running state of the One-Euro filter over the parameter vector (all groups)."""

    def __init__(self, fps: float, settings: dict[str, OneEuro]) -> None:
        self.fps, self.settings = fps, settings
        self.d_alpha = np.empty(PARAMS)
        for name, sl in _GROUPS.items():
            self.d_alpha[sl] = _alpha(settings[name].d_cutoff, fps)
        self.reset()

    def reset(self) -> None:
        self.x: np.ndarray | None = None
        self.dx = np.zeros(PARAMS)

    def step(self, x: np.ndarray) -> np.ndarray:
        if self.x is None:
            self.x = x.copy()
            return self.x
        if np.dot(x[_ROT], self.x[_ROT]) < 0:  # q and −q are the same rotation
            x = x.copy()
            x[_ROT] *= -1
        self.dx = self.dx + self.d_alpha * ((x - self.x) * self.fps - self.dx)
        self.x = self.x + _alpha(self._cutoff(), self.fps) * (x - self.x)
        return self.x

    def _cutoff(self) -> np.ndarray:
        """Per-parameter cut-off from each group's speed: angular speed (rad/s, |dq/dt|·2),
        translation speed in face sizes per second, log-scale speed, and per landmark the speed
        of its canonical position (eye-corner distances per second)."""
        dx, st = self.dx, self.settings
        speed = {"rotation": 2 * np.linalg.norm(dx[_ROT]),
                 "translation": np.linalg.norm(dx[_TRANS]) / math.exp(self.x[_SCALE][0]),
                 "scale": abs(dx[_SCALE][0]),
                 "shape": np.repeat(np.linalg.norm(dx[_SHAPE].reshape(-1, 3), axis=1), 3)}
        cutoff = np.empty(PARAMS)
        for name, sl in _GROUPS.items():
            cutoff[sl] = st[name].min_cutoff + st[name].beta * speed[name]
        return cutoff


class OnlineSmoother:
    """Causal One-Euro smoothing for a live stream: one (478, 3) frame in, one out.

    The same filter and settings as the video path's, run forward only: it cannot look ahead
    like `smooth_sequence`'s zero-phase pass, so fast motion lags by a frame or two. `reset()`
    after a long gap, so a face that reappears elsewhere is not slid into place."""

    def __init__(self, fps: float, settings: dict[str, OneEuro] | None = None) -> None:
        self._state = _EuroState(fps, settings or SMOOTHING)

    def reset(self) -> None:
        self._state.reset()

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return from_params(self._state.step(to_params(points)))


def to_params(points: np.ndarray) -> np.ndarray:
    """(478, 3) landmarks → (PARAMS,) [rotation quaternion (w, x, y, z), translation (3),
    log scale, canonical shape (478·3)]."""
    fit = g.fit_head(points)
    out = np.empty(PARAMS)
    out[_ROT] = _quaternion(fit.rotation)
    out[_TRANS] = fit.translation
    out[_SCALE] = math.log(fit.scale)
    out[_SHAPE] = fit.inverse_apply(np.asarray(points, np.float64)).ravel()
    return out


def from_params(p: np.ndarray) -> np.ndarray:
    """Inverse of `to_params` (the quaternion is renormalised)."""
    q = p[_ROT] / np.linalg.norm(p[_ROT])
    sim = g.Similarity(scale=math.exp(p[_SCALE][0]), rotation=_rotation(q), translation=p[_TRANS])
    return sim.apply(p[_SHAPE].reshape(POINTS))


def _quaternion(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix (Shepperd's method)."""
    m = r
    t = np.trace(m)
    if t > 0:
        s = 2 * math.sqrt(t + 1)
        q = [s / 4, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2 * math.sqrt(max(1 + m[i, i] - m[j, j] - m[k, k], 1e-12))
        q = [0.0] * 4
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = s / 4
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    return q / np.linalg.norm(q)


def _rotation(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


PAD = 12  # frames of odd reflection at each end of a run, so the filter starts in steady state


def smooth_sequence(frames: Iterable[np.ndarray | None], fps: float, work: FrameFile,
                    out: FrameFile, settings: dict[str, OneEuro] | None = None) -> None:
    """Zero-phase One-Euro smoothing of a landmark sequence (None = no face: the filter restarts
    after it). Forward results go to `work` (PARAMS records), the backward pass writes (478, 3)
    records to `out` (NaN for None frames). Like filtfilt, each run of faces is extended at both
    ends by PAD frames of odd reflection (2·x₀ − x_k), so that there is no lag or transient at
    its ends either. Memory: a few PAD-frame buffers per run of faces."""
    fwd = _Forward(_EuroState(fps, settings or SMOOTHING), work)
    for i, pts in enumerate(frames):
        fwd.push(i, pts)
    fwd.finish()
    bwd = _EuroState(fps, settings or SMOOTHING)
    for i in range(fwd.n - 1, -1, -1):
        p = work[i].astype(np.float64)
        if np.isnan(p[0]):
            out[i] = missing()
            continue
        if i in fwd.tails:  # the last frame of a run: run in through its reflected tail
            bwd.reset()
            for q in reversed(fwd.tails[i]):
                bwd.step(q)
        out[i] = from_params(bwd.step(p))


class _Forward:
    """The forward pass over runs of faces, with reflected padding at both ends of each run.
    `tails[last index of a run]`: the filter's outputs over the trailing padding."""

    def __init__(self, state: _EuroState, work: FrameFile) -> None:
        self.state, self.work = state, work
        self.n, self.start = 0, -1
        self.head: list[np.ndarray] = []  # the run's first frames, until the filter starts
        self.recent: deque[np.ndarray] = deque(maxlen=PAD + 1)
        self.tails: dict[int, list[np.ndarray]] = {}

    def push(self, i: int, pts: np.ndarray | None) -> None:
        self.n = i + 1
        if pts is None:
            self._end_run(i - 1)
            self.work[i] = np.full(PARAMS, np.nan)
            return
        p = to_params(pts)
        if self.recent and np.dot(p[_ROT], self.recent[-1][_ROT]) < 0:
            p[_ROT] *= -1  # keep quaternions on one side, so reflections and means make sense
        if self.start < 0:
            self.start = i
        self.recent.append(p)
        if self.head is not None and len(self.head) <= PAD:
            self.head.append(p)
            if len(self.head) <= PAD:
                return
            self._begin()
        else:
            self.work[i] = self.state.step(p)

    def _begin(self) -> None:
        """Feed the reflected head, then the buffered frames."""
        head, self.head = self.head, None
        for k in range(len(head) - 1, 0, -1):
            self.state.step(2 * head[0] - head[k])
        for j, p in enumerate(head):
            self.work[self.start + j] = self.state.step(p)

    def _end_run(self, last: int) -> None:
        if self.start < 0:
            return
        if self.head is not None:
            self._begin()
        tail = list(self.recent)
        self.tails[last] = [self.state.step(2 * tail[-1] - tail[-1 - k]).copy() for k in range(1, len(tail))]
        self.state.reset()
        self.start, self.head = -1, []
        self.recent.clear()

    def finish(self) -> None:
        self._end_run(self.n - 1)


def process_track(raw: FrameFile, out: FrameFile, work_path: str | os.PathLike, *, fps: float,
                  max_gap: int, smooth: bool, fill: bool = True) -> np.ndarray:
    """Fill gaps in the raw track (and smooth it) into `out`; returns the (N,) int8 status.
    `work_path`: scratch file for the forward pass (removed afterwards). `fill=False` (a video
    source, whose face-less frames pass through unchanged): no gap is filled, every frame without
    a face is STILL and the smoothing restarts after it."""
    has_face = frames_with_face(raw)
    status = gap_status(has_face, max_gap) if fill else np.where(has_face, FACE, STILL).astype(np.int8)
    out.truncate(0)
    if smooth:
        with FrameFile(work_path, (PARAMS,), "w") as work:
            smooth_sequence(filled(raw, status), fps, work, out)
        os.unlink(work_path)
    else:
        for i, pts in enumerate(filled(raw, status)):
            out[i] = missing() if pts is None else pts
    return status


# ───────────────────────────── stability metric ─────────────────────────────

@dataclass(frozen=True)
class Stability:
    """Landmark motion between consecutive frames, in % of the face's eye-corner distance.
    displacement: mean |p(t) − p(t−1)| (real motion plus jitter); jitter: mean
    |p(t+1) − 2·p(t) + p(t−1)| (acceleration: mostly jitter, since real face motion is smooth
    at video rates). frames: how many frames had a face."""

    displacement: float
    jitter: float
    frames: int


def stability(frames: Iterable[np.ndarray | None],
              scale: Callable[[np.ndarray], float] = g.face_scale) -> Stability:
    """Stability of a landmark sequence ((478, 3) | (478, 2) arrays, None where no face; only runs
    of consecutive faces count). Streams."""
    prev: list[np.ndarray] = []
    disp, acc, n_d, n_a, n = 0.0, 0.0, 0, 0, 0
    for pts in frames:
        if pts is None:
            prev = []
            continue
        n += 1
        p = np.asarray(pts, np.float64)[:, :2]
        unit = scale(pts)  # differences (not positions) are divided by it: its own noise stays out
        if prev:
            disp += float(np.linalg.norm(p - prev[-1], axis=1).mean()) / unit
            n_d += 1
        if len(prev) == 2:
            acc += float(np.linalg.norm(p - 2 * prev[-1] + prev[-2], axis=1).mean()) / unit
            n_a += 1
        prev = (prev + [p])[-2:]
    return Stability(displacement=100 * disp / max(n_d, 1), jitter=100 * acc / max(n_a, 1), frames=n)
