"""Live reenactment: a camera (or a video standing in for one) drives the reference in real time.

    capture thread   camera / stream / file → the newest frame only (older unrendered frames are
                     dropped and counted, never queued, so latency stays bounded)
    main thread      newest frame → `stream.Stream` (landmarks, smoothing, relative motion,
                     engine, paste-back) → window [driver | result], recording, virtual camera

A video file is paced at its own frame rate, as a camera would deliver it. Latency is measured
from the moment a frame is captured to the moment its result has been shown (window) or handed
to the outputs (headless). The recording keeps real time: a frame that was dropped is filled by
repeating the previous result, so the file has one frame per captured frame.

This module is the only user of cameras (OpenCV's VideoCapture, BGR converted to RGB here) and
of the optional `pyvirtualcam` package. It prints nothing: `run_live` returns a `LiveSummary`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from reenact import media
from reenact.config import VideoOptions
from reenact.errors import MediaError, ReenactError, UsageError
from reenact.pipeline import side_by_side

WINDOW = "reenact live"
DEFAULT_CAMERA_FPS = 30.0


@dataclass(frozen=True)
class LiveOptions:
    """camera: device index (used when `source` is None); source: a video file, a folder of
    frames or a stream URL standing in for the camera; window: show [driver | result];
    output: record the result (.mp4/.mov/.mkv); virtual_camera: send it to a virtual camera
    (`pyvirtualcam`); max_frames: stop after this many rendered frames (None: until the source
    ends or q/Esc); paced: play a file at its own frame rate, as a camera would (False: as fast
    as it decodes, to measure the sustained rendering rate); inputs: other files read (the
    reference), which the recording must not be."""

    camera: int = 0
    source: str | None = None
    window: bool = True
    output: Path | None = None
    overwrite: bool = False
    virtual_camera: bool = False
    max_frames: int | None = None
    paced: bool = True
    inputs: tuple = ()  # other files the session reads (the reference photos): never the recording


@dataclass
class LiveSummary:
    """What a live session did. `dropped`: captured frames never rendered (rendering fell
    behind); latency: capture → shown, in milliseconds; `fps`: rendered frames per second
    while running; `stop`: why it ended."""

    captured: int = 0
    rendered: int = 0
    dropped: int = 0
    with_face: int = 0
    fps: float = 0.0
    latency_median_ms: float = 0.0
    latency_p95_ms: float = 0.0
    seconds: float = 0.0
    stop: str = ""
    recorded: Path | None = None
    recorded_frames: int = 0
    size: tuple[int, int] = (0, 0)
    latencies_ms: list = field(default_factory=list, repr=False)


# ───────────────────────────── sources ─────────────────────────────

class _Source:
    """Frames from a camera, stream URL or file: `read()` → RGB uint8 | None at the end."""

    def __init__(self, read: Callable[[], np.ndarray | None], close: Callable[[], None], *, fps: float,
                 paced: bool, name: str, end: str) -> None:
        self.read, self.close, self.fps, self.paced, self.name, self.end = read, close, fps, paced, name, end


def open_source(options: LiveOptions) -> _Source:
    """The camera (`options.camera`) or `options.source`. MediaError (exit 4) when it cannot be
    opened or gives no frame."""
    src = options.source
    if src is not None and not _is_url(src):
        reader = media.open_frames(src)
        return _Source(lambda: next(reader, None), reader.close, fps=reader.info.fps, paced=options.paced,
                       name=str(src), end="end of the video")
    cap = cv2.VideoCapture(src if src is not None else options.camera)
    name = src if src is not None else f"camera {options.camera}"
    if not cap.isOpened():
        cap.release()
        raise MediaError(f"cannot open {name}", "check that it is connected and not in use by another "
                         "program; --camera N picks another one, --source FILE uses a video instead")
    fps = cap.get(cv2.CAP_PROP_FPS)
    return _Source(lambda: _read_capture(cap), cap.release, name=name, paced=False,
                   fps=fps if 1 <= fps <= 240 else DEFAULT_CAMERA_FPS, end=f"{name} stopped sending frames")


def _is_url(text: str) -> bool:
    return "://" in text


def _read_capture(cap: cv2.VideoCapture) -> np.ndarray | None:
    ok, bgr = cap.read()
    if not ok or bgr is None or bgr.ndim != 3:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # OpenCV's BGR → the project's RGB, once


@dataclass(frozen=True)
class Grabbed:
    """A captured frame: its index in the source, the time it arrived (perf_counter) and pixels."""

    index: int
    time: float
    frame: np.ndarray


class Capture:
    """Reads `source` on a thread and keeps only the newest frame: a frame not yet taken when
    the next one arrives is dropped (counted in `dropped`). `take()` waits for a new frame and
    returns None once the source has ended (`stop_reason` says why) and nothing is left."""

    def __init__(self, source: _Source, first: np.ndarray) -> None:
        self.source = source
        self.captured, self.dropped = 0, 0
        self.stop_reason = ""
        self._latest: Grabbed | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._first = first
        self._thread = threading.Thread(target=self._run, name="reenact-capture", daemon=True)

    def start(self) -> "Capture":
        self._thread.start()
        return self

    def _run(self) -> None:
        reason, t0, frame = self.source.end, time.perf_counter(), self._first
        try:
            while frame is not None and not self._stop.is_set():
                if self.source.paced:  # a file: deliver frame i at i / fps, like a camera
                    time.sleep(max(0.0, t0 + self.captured / self.source.fps - time.perf_counter()))
                self._put(frame)
                frame = self.source.read()
        except ReenactError as e:  # e.g. a file that breaks off: stop, keep what was rendered
            reason = f"{self.source.name} broke off: {e.message}"
        except Exception as e:  # noqa: BLE001 — a driver error on another thread: report it, stop cleanly
            reason = f"{self.source.name} failed: {type(e).__name__}: {e}"
        with self._cond:
            self.stop_reason = self.stop_reason or reason
            self._stop.set()
            self._cond.notify_all()

    def _put(self, frame: np.ndarray) -> None:
        with self._cond:
            if self._latest is not None:
                self.dropped += 1
            self._latest = Grabbed(self.captured, time.perf_counter(), frame)
            self.captured += 1
            self._cond.notify_all()

    def take(self, timeout: float = 5.0) -> Grabbed | None:
        """The newest frame not taken yet (waits for it); None when the source has ended."""
        with self._cond:
            while self._latest is None and not self._stop.is_set():
                if not self._cond.wait(timeout):
                    self.stop_reason = f"{self.source.name} sent no frame for {timeout:g} s"
                    self._stop.set()
            grabbed, self._latest = self._latest, None
            return grabbed

    def stop(self, reason: str = "") -> None:
        """Stop reading (idempotent); the source is closed once the thread has ended."""
        with self._cond:
            self.stop_reason = self.stop_reason or reason
            self._stop.set()
        self._thread.join(timeout=5.0)
        self.source.close()


def start_capture(source: _Source) -> Capture:
    """Read the source's first frame here (so a camera that gives none fails at once), then
    start the capture thread. The source is closed on failure."""
    try:
        first = source.read()
    except BaseException:
        source.close()
        raise
    if first is None:
        source.close()
        raise MediaError(f"{source.name} gave no frame", "check the camera, or the file with --source")
    return Capture(source, first).start()


# ───────────────────────────── outputs ─────────────────────────────

def _pyvirtualcam():
    """The optional pyvirtualcam module, or a ReenactError saying how to install it."""
    try:
        import pyvirtualcam
    except ImportError:
        raise ReenactError("--virtual-camera needs the optional pyvirtualcam package",
                           'install it with: pip install "reenact-face[live]"') from None
    return pyvirtualcam


def check_display() -> None:
    """UsageError when no display can show a window (OpenCV would abort the process)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UsageError("no display to open the live window on (DISPLAY is not set)",
                         "use --no-window, with -o OUT.mp4 and/or --virtual-camera")


class Outputs:
    """Where results go: the window, the recording and the virtual camera (each optional).
    `close(finalise)`: True finishes the recording, False discards it."""

    def __init__(self, options: LiveOptions, size: tuple[int, int], fps: float) -> None:
        self.size, self.fps = size, fps
        self.window = options.window
        # encoded in a writer thread, with `reenact video`'s default preset: the render loop only
        # hands the frame over (results are new arrays each frame, never changed afterwards)
        self.recorder = media.VideoWriter(options.output, fps=fps, size=size, overwrite=options.overwrite,
                                          preset=VideoOptions.preset, background=True) \
            if options.output is not None else None
        self.vcam = None
        if options.virtual_camera:
            module = _pyvirtualcam()
            try:
                self.vcam = module.Camera(width=size[0], height=size[1], fps=fps, fmt=module.PixelFormat.RGB)
            except Exception as e:  # noqa: BLE001 — pyvirtualcam raises RuntimeError & co. per platform
                raise ReenactError(f"cannot start the virtual camera: {e}",
                                   "Linux: load v4l2loopback (modprobe v4l2loopback); Windows/macOS: "
                                   "install OBS Studio (its virtual camera)") from None
        if self.window:
            cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE)
        self._last: np.ndarray | None = None

    def send(self, result: np.ndarray, repeat: int) -> None:
        """Record `result`, first filling `repeat` dropped frames with the previous result (so
        the recording keeps real time); send it to the virtual camera."""
        if self.recorder is not None:
            for _ in range(repeat):  # before the first result: that result fills the lead-in
                self.recorder.write(self._last if self._last is not None else result)
            self.recorder.write(result)
            self._last = result
        if self.vcam is not None:
            self.vcam.send(result)

    def show(self, driver: np.ndarray, result: np.ndarray, lines: list[str]) -> int | None:
        """Show [driver | result] with `lines` of text; the key pressed (None: none; -2: the
        window was closed)."""
        if not self.window:
            return None
        view = cv2.cvtColor(side_by_side(driver, result), cv2.COLOR_RGB2BGR)  # imshow wants BGR
        for i, text in enumerate(lines):
            y = 22 + 22 * i
            cv2.putText(view, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(view, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.imshow(WINDOW, view)
        key = cv2.waitKey(1)
        if cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
            return -2
        return None if key < 0 else key & 0xFF

    def close(self, finalise: bool) -> Path | None:
        """Finish (or discard) the recording, close the camera and window; the recording's path."""
        path = None
        try:
            if self.recorder is not None:
                if finalise and self.recorder.frames_written:
                    path = self.recorder.close()
                else:
                    self.recorder.abort()
        finally:
            if self.vcam is not None:
                with contextlib.suppress(Exception):
                    self.vcam.close()
            if self.window:
                with contextlib.suppress(cv2.error):
                    cv2.destroyWindow(WINDOW)
                    cv2.waitKey(1)
        return path


# ───────────────────────────── the session ─────────────────────────────

KEY_QUIT = {ord("q"), ord("Q"), 27}  # q, Esc
KEY_ANCHOR = ord(" ")


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event):
    """Ctrl-C / SIGTERM set `stop` (the session then ends like q: the recording is finished)
    instead of raising in the middle of writing a frame. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = lambda signum, frame: stop.set()  # noqa: E731
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_live(anim, options: LiveOptions, *, motion: str = "relative", smooth: bool = True,
             status: Callable[[LiveSummary], None] | None = None) -> LiveSummary:
    """Drive `anim` (`reenact.api.Animator`) live until the source ends, q/Esc, Ctrl-C or
    `options.max_frames`. `status` is called about once a second with the running numbers.
    Raises MediaError (exit 4: no camera, unreadable source), UsageError (a window without a
    display), OutputError (the recording's path), ReenactError (virtual camera unavailable)."""
    if options.window:
        check_display()
    if options.virtual_camera:
        _pyvirtualcam()  # fail before the camera is opened
    if options.output is not None:
        media.check_output_path(options.output, overwrite=options.overwrite, kinds=media.WRITABLE_VIDEO_SUFFIXES,
                                inputs=(options.source, *options.inputs))
    source = open_source(options)
    summary = LiveSummary()
    try:
        # everything slow is ready before the first frame is taken: none is dropped waiting
        with anim.stream(motion=motion, smooth=smooth, fps=source.fps, search="background") as stream:
            summary.size = stream.output_size()
            outputs = Outputs(options, summary.size, source.fps)
            summary.recorded = _session(stream, source, outputs, options, summary, status)
    finally:
        source.close()  # idempotent: also when the capture never started
    if summary.recorded is not None:
        summary.recorded_frames = outputs.recorder.frames_written
    return summary


def _session(stream, source: _Source, outputs: Outputs, options: LiveOptions, summary: LiveSummary,
             status: Callable[[LiveSummary], None] | None) -> Path | None:
    """Capture and render until stopped; finish the outputs. The recording's path."""
    finalise, capture = False, None
    try:
        capture = start_capture(source)
        _loop(stream, capture, outputs, options, summary, status)
        _update(summary, capture)  # before the capture thread reads on
        summary.with_face = stream.counts.with_face
        finalise = True
    finally:
        recorded = outputs.close(finalise)
        if capture is not None:
            capture.stop(summary.stop)
    return recorded


def _loop(stream, capture: Capture, outputs: Outputs, options: LiveOptions, summary: LiveSummary,
          status: Callable[[LiveSummary], None] | None) -> None:
    """Render the newest frame until something stops the session (sets `summary.stop`)."""
    stop = threading.Event()
    last_index, t_start, t_status = -1, time.perf_counter(), time.perf_counter()
    with _stop_on_signals(stop):
        while not stop.is_set():
            grabbed = capture.take()
            if grabbed is None:
                summary.stop = capture.stop_reason
                return
            result = stream(grabbed.frame)
            outputs.send(result, repeat=grabbed.index - last_index - 1)
            key = outputs.show(grabbed.frame, result, _overlay(summary, capture))
            summary.latencies_ms.append(1000 * (time.perf_counter() - grabbed.time))
            summary.rendered += 1
            last_index = grabbed.index
            summary.seconds = time.perf_counter() - t_start
            if key == KEY_ANCHOR:
                stream.reanchor()
            elif key in KEY_QUIT or key == -2:
                summary.stop = "quit"
                return
            if options.max_frames is not None and summary.rendered >= options.max_frames:
                summary.stop = f"{options.max_frames} frames rendered"
                return
            if status is not None and time.perf_counter() - t_status >= 1.0:
                t_status = time.perf_counter()
                _update(summary, capture)
                status(summary)
    summary.stop = "interrupted (Ctrl-C)"


def _overlay(summary: LiveSummary, capture: Capture) -> list[str]:
    recent = summary.latencies_ms[-30:]
    fps = summary.rendered / summary.seconds if summary.seconds else 0.0
    return [f"{fps:4.1f} fps  latency {np.median(recent) if recent else 0:3.0f} ms  dropped {capture.dropped}",
            "space: neutral anchor   q/Esc: quit"]


def _update(summary: LiveSummary, capture: Capture) -> None:
    """Running numbers from the capture and the latencies so far."""
    summary.captured = capture.captured
    summary.dropped = max(0, capture.captured - summary.rendered)
    summary.fps = summary.rendered / summary.seconds if summary.seconds else 0.0
    if summary.latencies_ms:
        lat = np.asarray(summary.latencies_ms)
        summary.latency_median_ms = float(np.median(lat))
        summary.latency_p95_ms = float(np.percentile(lat, 95))

