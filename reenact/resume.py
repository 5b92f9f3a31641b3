"""Resumable video renders: the work folder beside the output and its state file.

A render of `OUT.mp4` works in the hidden folder `.OUT.mp4.reenact-parts/` beside it:

    state.json        the job (hash of options, inputs' sizes and modification times), the
                      driver track's summary and the chunks completed so far
    track.f32         pass 1: the driver's landmarks per frame (`temporal.FrameFile`)
    points.f32, status.npy   the processed track (gaps filled, smoothed) and per-frame status
    source-*.f32, source-status.npy   the same for a video source (video-to-video)
    source-frames.u8  a video source's decoded frames, when the output plays it backward
    part-00000.mp4 …  pass 2: one H.264 segment per chunk of frames, each written atomically

`state.json` is rewritten atomically after each step, so a render killed at any moment (even
with SIGKILL) loses at most the chunk in progress. `--resume` continues only when the job is the
same (same options, same inputs unchanged); when the render completes, the segments are joined
without re-encoding and the folder is deleted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from reenact.errors import OutputError, from_os_error
from reenact.validate import type_problem

FORMAT = 2  # bump when the folder's layout or the meaning of its files changes (2: a track may be cut)
SUFFIX = ".reenact-parts"


def work_dir_for(output: str | os.PathLike) -> Path:
    """The work folder of an output: `.NAME.reenact-parts` in the output's folder."""
    out = Path(output)
    return out.parent / f".{out.name}{SUFFIX}"


def input_signature(path: str | os.PathLike) -> dict:
    """What identifies an input's content cheaply: absolute path, size and mtime (for a folder
    of frames: the number of files, their total size and the latest mtime)."""
    try:
        p = Path(path).expanduser().resolve()
        if p.is_dir():
            stats = [f.stat() for f in p.iterdir() if f.is_file()]
            return {"path": str(p), "files": len(stats), "size": sum(s.st_size for s in stats),
                    "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}
        st = p.stat()
    except OSError as e:  # missing, a name too long, no permission: an input problem (exit 4)
        raise from_os_error(e, "input") from None
    except RuntimeError:  # Path.resolve on a loop of symbolic links
        raise from_os_error(OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path)), "input") from None
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def job_hash(options: dict) -> str:
    """Stable short hash of the options that decide the output's frames."""
    text = json.dumps({"format": FORMAT, **options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class State:
    """Contents of state.json. `track`: pass 1's summary (None until pass 1 is complete);
    `processed`: the processed track is complete; `chunks_done`: indices of finished segments."""

    job: str
    inputs: dict
    chunk: int
    track: dict | None = None
    processed: bool = False
    anchor: int | None = None
    chunks_done: list[int] = field(default_factory=list)
    source_track: dict | None = None  # a video source's pass 1 (video-to-video), like `track`
    source_processed: bool = False
    format: int = FORMAT


class WorkDir:
    """The work folder of one render. Use `WorkDir.open`."""

    def __init__(self, path: Path, state: State, resumed: bool) -> None:
        self.path, self.state, self.resumed = path, state, resumed
        self._lock: int | None = None  # fd holding the folder's flock while this render runs
        self._held: dict = {}  # signal → handler to restore (hold_signals)

    @classmethod
    def open(cls, output: str | os.PathLike, *, job: str, inputs: dict, chunk: int, resume: bool,
             overwrite: bool) -> "WorkDir":
        """Create the folder, or continue the one there when `resume` and the job matches.

        An existing folder without `resume` is an OutputError (with `overwrite` it is deleted
        and the render starts again); a mismatching job is an OutputError saying what changed."""
        path = work_dir_for(output)
        lock = _lock(path) if path.is_dir() else None  # before anything in it is read or deleted
        try:
            if (path.exists() or path.is_symlink()) and not resume:
                if not overwrite:
                    raise OutputError(f"an unfinished render of {Path(output).name} is in {path}",
                                      hint="add --resume to continue it, or --overwrite to start again")
                _delete(path)
            if path.exists():
                if not path.is_dir():
                    raise OutputError(f"cannot resume: {path} is not a work folder",
                                      hint="use --overwrite to start again")
                work = cls(path, _check(path, job, inputs, chunk), resumed=True)
            else:
                work = cls._create(path, State(job=job, inputs=inputs, chunk=chunk))
        except BaseException:
            _unlock(lock)
            raise
        work._lock = lock if lock is not None else work._lock
        return work

    @classmethod
    def _create(cls, path: Path, state: State) -> "WorkDir":
        try:
            path.mkdir()
        except OSError as e:
            raise OutputError(f"cannot create {path}: {e.strerror}", hint="check that folder's permissions") from None
        work = cls(path, state, resumed=False)
        work._lock = _lock(path)
        try:
            work.save()
        except BaseException:
            work.remove()
            raise
        return work

    def file(self, name: str) -> Path:
        return self.path / name

    def segment(self, k: int) -> Path:
        return self.path / f"part-{k:05d}.mp4"

    def save(self) -> None:
        """Write state.json atomically (temp file + rename)."""
        tmp = self.path / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self.state), indent=1))
        os.replace(tmp, self.path / "state.json")

    def mark_chunk(self, k: int) -> None:
        self.state.chunks_done = sorted(set(self.state.chunks_done) | {k})
        self.save()

    def completed_chunks(self) -> set[int]:
        """Chunks recorded as done whose segment file is really there."""
        return {k for k in self.state.chunks_done if self.segment(k).is_file()}

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()

    def hold_signals(self) -> None:
        """Call before joining the segments into the output: until the folder is released (the
        output in place and the folder removed, or a failure handled), Ctrl-C and SIGTERM are
        noted and dropped instead of interrupting. An interrupt between putting the output in
        place and removing the folder reported "interrupted — nothing was written" beside a
        complete output and left the folder behind. The join only copies, so it is short.
        (Main thread only: Python runs signal handlers there.)"""
        if self._held or threading.current_thread() is not threading.main_thread():
            return
        self._held = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in self._held:
            signal.signal(s, lambda signum, frame: None)

    def release(self) -> None:
        """Let another run use the folder (also happens when the process ends, however)."""
        for s, handler in self._held.items():
            signal.signal(s, handler)
        self._held = {}
        _unlock(self._lock)
        self._lock = None

    def finish_failed(self) -> bool:
        """After a failure or interruption: keep the folder when a chunk is complete (it can be
        resumed), else delete it. Returns whether it was kept."""
        if self.completed_chunks():
            for stray in self.path.glob(".*.tmp*"):  # a segment being written when it stopped
                stray.unlink(missing_ok=True)
            self.release()
            return True
        self.remove()
        return False


def _track_problem(track: dict) -> str | None:
    from reenact.tracking import TrackSummary  # its fields are what pass 1 stored

    missing = {f.name for f in dataclasses.fields(TrackSummary)} - set(track)
    return f"track lacks {', '.join(sorted(missing))}" if missing else type_problem(TrackSummary, track, "track.")


def _lock(path: Path) -> int:
    """An exclusive OS lock (flock) on the work folder itself, held until released or the
    process ends (even by SIGKILL); OutputError when another run holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise OutputError(f"cannot open the work folder {path}: {e.strerror}",
                          hint="check that folder's permissions") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise OutputError(f"{path} is in use by another run of reenact",
                          hint="wait for it to finish, or give this render another output name") from None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the descriptor releases the flock


def _delete(path: Path) -> None:
    """Remove a work folder, or whatever took its place (a file, a link)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _check(path: Path, job: str, inputs: dict, chunk: int) -> State:
    try:
        raw = json.loads((path / "state.json").read_text())
        problem = type_problem(State, raw) or (raw.get("track") is not None and _track_problem(raw["track"]))
        if problem:
            raise TypeError(problem)
        state = State(**raw)
    except (OSError, ValueError, TypeError) as e:
        raise OutputError(f"cannot resume from {path}: its state file is unreadable ({e})",
                          hint="use --overwrite to start again") from None
    if state.format != FORMAT:
        raise OutputError(f"cannot resume from {path}: it was written by another version of reenact",
                          hint="use --overwrite to start again")
    changed = [k for k in inputs if state.inputs.get(k) != inputs[k]]
    if changed:
        raise OutputError(f"cannot resume: the {' and '.join(changed)} changed since the render started",
                          hint="use --overwrite to start again with the current files")
    if state.job != job or state.chunk != chunk:
        raise OutputError("cannot resume: the render was started with other options",
                          hint="repeat the first command's options with --resume, or use --overwrite to start again")
    for stray in path.glob(".*.tmp*"):  # a segment being written when the render was killed
        stray.unlink(missing_ok=True)
    return state
