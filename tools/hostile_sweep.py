#!/usr/bin/env python3
"""Hostile-input sweep of the whole CLI (issue 12's acceptance evidence).

Generates hostile inputs at run time in a temporary folder (nothing large is committed; the
small real media come from examples/, the training cache from tests/gen_helpers) and runs
`python -m reenact …` as a subprocess per case, with a timeout, for every command. Each case
is checked for:

* an exit code in the set README's exit-code table gives for that situation;
* no "Traceback" and no "internal error" in the output; an `error:` line (not Click's framed
  usage box) when the command fails, short (no multi-line library explanations);
* no file left behind (the case folder holds exactly what it held before, plus the declared
  outputs when the command succeeded, plus what the README says is kept, e.g. a video's work
  folder when it was interrupted or the disk filled);
* every input byte-identical afterwards (sha256 before and after);
* bounded peak memory (the child's ru_maxrss from wait4) where a case declares a limit.

Full disks and read-only file systems are tiny tmpfs mounts (root only; skipped, with the reason,
when mounting is not allowed). Permission bits do not stop root, so unwritable outputs use a path
under a regular file (ENOTDIR) or under /proc.

    python tools/hostile_sweep.py                 # everything (~10-20 min on 2 busy cores)
    python tools/hostile_sweep.py --quick         # without the slow cases
    python tools/hostile_sweep.py --only image,video --json results.json
    python tools/hostile_sweep.py --case bomb --keep   # cases whose name contains "bomb"

Exit status: 0 when every case is clean, 1 otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import os
import pickle
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DOCUMENTED = {0, 1, 2, 3, 4, 5, 6, 130}  # README "Errors and exit codes"
LONG = "n" * 300  # over every file system's 255-byte name limit
BOMB_MB = 1500  # peak memory allowed where a case checks it (a 30000² decode takes > 5 GiB)


class Skip(Exception):
    """The case cannot run here (e.g. no tmpfs mounts); reported as skipped with the reason."""


@dataclasses.dataclass
class Spec:
    """One CLI run and what it must do."""

    args: list
    codes: set
    outputs: list = dataclasses.field(default_factory=list)  # must exist when the exit is 0
    allow: list = dataclasses.field(default_factory=list)  # globs (relative to the case folder) that may appear anyway
    env: dict = dataclasses.field(default_factory=dict)
    mem_mb: int | None = None
    timeout: float = 180
    check: Callable | None = None  # (Run, case folder) -> list of problems
    words: tuple = ()  # words the output must contain (case-insensitive)
    help_exit: bool = False  # exit 2 with the help text (a command group run without its subcommand)


@dataclasses.dataclass
class Run:
    argv: list
    rc: int
    out: str
    err: str
    maxrss_mb: float
    seconds: float
    timed_out: bool


@dataclasses.dataclass
class Case:
    command: str
    name: str
    make: Callable  # (case folder, assets) -> Spec; or, for custom cases, (folder, assets) -> list of problems
    slow: bool = False
    custom: bool = False


@dataclasses.dataclass
class Result:
    command: str
    name: str
    status: str  # clean | failed | skipped
    problems: list
    argv: str = ""
    rc: int | None = None
    stderr_head: str = ""
    seconds: float = 0.0
    maxrss_mb: float = 0.0


# ───────────────────────────── running a command ─────────────────────────────

_mounts: list[Path] = []
_mount_lock = threading.Lock()


def cli_env(extra: dict | None = None) -> dict:
    env = os.environ.copy()
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("REENACT_DEBUG", None)
    env["COLUMNS"] = "200"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return {k: v for k, v in env.items() if v is not None}


def start(args: list, cwd: Path, env: dict | None = None, log: Path | None = None) -> tuple:
    argv = [sys.executable, "-m", "reenact", *[str(a) for a in args]]
    log = log or Path(tempfile.mkdtemp(prefix="hs-log-"))
    log.mkdir(parents=True, exist_ok=True)
    fo, fe = open(log / "stdout", "wb"), open(log / "stderr", "wb")
    p = subprocess.Popen(argv, cwd=cwd, env=cli_env(env), stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    fo.close()
    fe.close()
    return p, argv, log, time.monotonic()


def finish(handle: tuple, timeout: float) -> Run:
    """Wait for the child (wait4: its own peak memory), killing its process group on timeout."""
    p, argv, log, t0 = handle
    timed_out = False
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - t0 > timeout:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.05)
    rc = os.waitstatus_to_exitcode(status)
    p.returncode = rc  # already reaped: keep Popen from waiting again
    read = lambda n: (log / n).read_bytes().decode("utf-8", "replace")  # noqa: E731
    return Run([str(a) for a in argv[2:]], rc, read("stdout"), read("stderr"), ru.ru_maxrss / 1024,
               time.monotonic() - t0, timed_out)


def run_cli(args: list, cwd: Path, env: dict | None = None, timeout: float = 180, log: Path | None = None) -> Run:
    return finish(start(args, cwd, env, log), timeout)


def mount_tmpfs(path: Path, size: str, *, ro: bool = False, fill: int = 0) -> Path:
    """A tiny tmpfs at `path` (root only), `fill` bytes already used; read-only when `ro`."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode:
        path.rmdir()
        raise Skip(f"cannot mount a tmpfs ({r.stderr.decode().strip() or 'mount failed'}): full-disk case not run")
    with _mount_lock:
        _mounts.append(path)
    if fill:
        (path / ".filler").write_bytes(b"\0" * fill)
    if ro:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    return path


def unmount_under(folder: Path) -> None:
    with _mount_lock:
        for m in [m for m in _mounts if m == folder or folder in m.parents]:
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
            _mounts.remove(m)


# ───────────────────────────── checking a run ─────────────────────────────


def sha(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder` → sha256 (files), "dir", "link:TARGET", "fifo"."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root, name)
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_fifo():
                out[rel] = "fifo"
            elif p.is_file():
                out[rel] = sha(p)
    return out


def outside_inputs(args: list, folder: Path) -> dict[str, str]:
    """Hashes of the existing files the arguments name outside the case folder (examples, assets)."""
    out = {}
    for a in args:
        p = Path(str(a))
        try:
            if p.is_absolute() and p.is_file() and folder not in p.parents and not str(p).startswith(("/proc", "/dev")):
                out[str(p)] = sha(p)
        except OSError:
            pass
    return out


def run_problems(r: Run, codes: set, *, words: tuple = (), batch: bool = False, help_exit: bool = False) -> list[str]:
    """What is wrong with a run's exit and output, whatever it wrote."""
    problems = []
    text = r.out + r.err
    if r.timed_out:
        problems.append(f"timed out after {r.seconds:.0f} s")
    if r.rc not in codes:
        problems.append(f"exit {r.rc}, expected {sorted(codes)}")
    if r.rc not in DOCUMENTED:
        problems.append(f"exit {r.rc} is not a documented code")
    if "Traceback" in text:
        problems.append("traceback printed")
    if "internal error" in text:
        problems.append("'internal error' (an unexpected exception)")
    if help_exit and r.rc == 2 and "Usage:" in text:
        pass
    elif r.rc not in (0, 130) and not batch and not r.timed_out:
        lines = r.err.splitlines()
        at = [i for i, line in enumerate(lines) if line.startswith("error:")]
        if not at:
            problems.append("no 'error:' line on stderr")
        else:
            msg = lines[at[0]]
            rest = [line for line in lines[at[0] + 1:] if line.strip() and "━" not in line]
            if len(msg) > 700 or len(rest) > 2:
                problems.append(f"error message too long ({len(msg)} chars, {len(rest)} more lines)")
            if msg.rstrip().endswith((":", "()")) or msg.strip() == "error:":
                problems.append(f"empty reason: {msg!r}")
    if "╭" in r.err and r.rc == 2 and not help_exit:
        problems.append("framed usage box instead of an error: line")
    for w in words:
        if w.lower() not in text.lower():
            problems.append(f"output does not mention {w!r}")
    return problems


def tree_problems(before: dict, after: dict, allowed: list[str]) -> list[str]:
    """Inputs changed or removed, and new entries that are not allowed."""
    problems = []
    for k, v in before.items():
        if k not in after:
            if not any(fnmatch.fnmatch(k, a) for a in allowed):
                problems.append(f"input removed: {k}")
        elif after[k] != v and not any(fnmatch.fnmatch(k, a) for a in allowed):
            problems.append(f"input changed: {k}")
    new = [k for k in after if k not in before and not any(fnmatch.fnmatch(k, a) for a in allowed)]
    # report the top-most new entries only
    new = [k for k in new if not any(k.startswith(o + "/") for o in new if o != k)]
    if new:
        problems.append("left behind: " + ", ".join(sorted(new)[:5]) + (" …" if len(new) > 5 else ""))
    return problems


def rel_globs(paths: list, folder: Path) -> list[str]:
    out = []
    for p in paths:
        p = Path(str(p))
        rel = str(p.relative_to(folder)) if p.is_absolute() and folder in p.parents else str(p)
        out += [rel, rel + "/*"]
    return out


def execute(case: Case, root: Path, assets: "Assets") -> Result:
    folder = root / "cases" / f"{case.command}--{case.name}"
    folder.mkdir(parents=True)
    try:
        if case.custom:
            t0 = time.monotonic()
            problems, argv, rc, err = case.make(folder, assets)
            return Result(case.command, case.name, "failed" if problems else "clean", problems, argv, rc,
                          _head(err), time.monotonic() - t0)
        spec = case.make(folder, assets)
        before, ext = snapshot(folder), outside_inputs(spec.args, folder)
        r = run_cli(spec.args, folder, spec.env, spec.timeout, log=root / "logs" / folder.name)
        problems = run_problems(r, spec.codes, words=spec.words, batch=case.command == "batch",
                                help_exit=spec.help_exit)
        allowed = list(spec.allow) + (rel_globs(spec.outputs, folder) if r.rc == 0 or case.command == "batch" else [])
        problems += tree_problems(before, snapshot(folder), allowed)
        problems += [f"input changed: {k}" for k, v in ext.items() if Path(k).is_file() and sha(Path(k)) != v]
        if r.rc == 0:
            problems += [f"output missing or empty: {o}" for o in spec.outputs
                         if not Path(o).exists() or (Path(o).is_file() and Path(o).stat().st_size == 0)]
        if spec.mem_mb and r.maxrss_mb > spec.mem_mb:
            problems.append(f"peak memory {r.maxrss_mb:.0f} MB > {spec.mem_mb} MB")
        if spec.check and not problems:
            problems += spec.check(r, folder)
        return Result(case.command, case.name, "failed" if problems else "clean", problems, shlex.join(r.argv), r.rc,
                      _head(r.err or r.out), r.seconds, r.maxrss_mb)
    except Skip as e:
        return Result(case.command, case.name, "skipped", [str(e)])
    except Exception as e:  # the sweep's own bug: report it as a failed case, keep going
        import traceback
        return Result(case.command, case.name, "failed", [f"sweep error: {type(e).__name__}: {e}"],
                      stderr_head=traceback.format_exc()[-800:])
    finally:
        unmount_under(folder)


def _head(text: str, n: int = 4) -> str:
    lines = [line for line in text.splitlines() if line.strip() and "━" not in line]
    return "\n".join(lines[:n])[:800]


# ───────────────────────────── generated media ─────────────────────────────


def png_bytes(w: int, h: int, *, idat: bool = True) -> bytes:
    """A greyscale PNG of w×h zeros, compressed as it is built (30000² is < 1 MB); without IDAT
    it is only a header declaring that size."""
    z = zlib.compressobj(9)
    row = bytes(w + 1)
    body = b"".join(z.compress(row) for _ in range(h)) + z.flush() if idat else b""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + (chunk(b"IDAT", body) if idat else b"") + chunk(b"IEND", b""))


def jpeg_with_size(data: bytes, w: int, h: int) -> bytes:
    """The JPEG with its frame header (SOF0/1/2) claiming w×h: a tiny file declaring a huge image."""
    i = 2
    while i < len(data) - 9:
        if data[i] != 0xFF:
            raise ValueError("no SOF marker")
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return data[:i + 5] + struct.pack(">HH", h, w) + data[i + 9:]
        i += 2 + length
    raise ValueError("no SOF marker")


class Assets:
    """Media shared by the cases (read-only for them: their hashes are checked after each run)."""

    def __init__(self, root: Path, quick: bool) -> None:
        import cv2
        import imageio_ffmpeg
        import numpy as np

        self.dir = root / "assets"
        self.dir.mkdir(parents=True)
        self.ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        self.ref, self.pose, self.drive = [self._copy(EXAMPLES / n) for n in ("ref.jpg", "pose.jpg", "drive.mp4")]
        img = cv2.imread(str(self.ref))
        self.ref_bgr = img
        self.short = self._ff("short.mp4", ["-i", self.drive, "-frames:v", "24", "-t", "1.05", "-c:v", "libx264",
                                            "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"])
        self.short_ref = self._ff("short-ref.mp4", ["-i", self.drive, "-ss", "2", "-frames:v", "16", "-an",
                                                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
        self.long = self._ff("long.mp4", ["-stream_loop", "1", "-i", self.drive, "-c:v", "libx264", "-preset",
                                          "ultrafast", "-pix_fmt", "yuv420p", "-an"])
        self.audio_only = self._ff("audio-only.mp4", ["-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                                                      "-c:a", "aac"])
        self.zero_frames = self._ff("zero-frames.mp4", ["-f", "lavfi", "-i", "color=c=gray:s=64x64:d=1",
                                                        "-frames:v", "0", "-c:v", "libx264"], allow_fail=True)
        self.one_frame = self._ff("one-frame.mp4", ["-i", self.drive, "-frames:v", "1", "-an", "-c:v", "libx264",
                                                    "-pix_fmt", "yuv420p"])
        self.no_face = self._ff("no-face.mp4", ["-f", "lavfi", "-i", "color=c=gray:s=128x128:d=0.5:r=24",
                                                "-c:v", "libx264", "-pix_fmt", "yuv420p"])
        self.odd = self._ff("odd.avi", ["-i", self.short, "-vf", "scale=321:181", "-c:v", "mjpeg", "-q:v", "3", "-an"])
        self.mkv = self._ff("clip.mkv", ["-i", self.short, "-c", "copy"])
        self.mov = self._ff("clip.mov", ["-i", self.short, "-c", "copy"])
        self.bomb_video = self._ff("bomb.avi", ["-f", "lavfi", "-i", "color=c=gray:s=8200x8200:d=0.04:r=25",
                                                "-frames:v", "1", "-c:v", "mjpeg", "-q:v", "31"])
        self.thin_video = self._ff("thin.avi", ["-f", "lavfi", "-i", "color=c=gray:s=8000x2:d=0.2:r=25",
                                                "-c:v", "mjpeg"])
        data = bytearray(self.drive.read_bytes())
        mid = len(data) // 2
        data[mid:mid + 3000] = bytes(3000)  # corrupt frames in the middle (cause 15)
        self.corrupt_mid = self._write("corrupt-mid.mp4", bytes(data))
        self.frames_dir = self.dir / "frames"
        self.frames_dir.mkdir()
        cap = cv2.VideoCapture(str(self.short))
        for i in range(12):
            ok, frame = cap.read()
            if ok:
                cv2.imwrite(str(self.frames_dir / f"{i:04d}.png"), frame)
        cap.release()
        self.np = np
        self.cv2 = cv2
        self.cache = self.checkpoint = self.onnx = None
        if not quick:
            self._training()

    def _copy(self, src: Path) -> Path:
        dst = self.dir / src.name
        shutil.copyfile(src, dst)
        return dst

    def _write(self, name: str, data: bytes) -> Path:
        p = self.dir / name
        p.write_bytes(data)
        return p

    def _ff(self, name: str, args: list, allow_fail: bool = False) -> Path | None:
        out = self.dir / name
        r = subprocess.run([self.ffmpeg, "-y", "-v", "error", *[str(a) for a in args], str(out)], capture_output=True)
        if r.returncode or not out.is_file():
            if allow_fail:
                out.unlink(missing_ok=True)
                return None
            raise RuntimeError(f"ffmpeg could not make {name}: {r.stderr.decode()[-300:]}")
        return out

    def _training(self) -> None:
        """A synthetic prepared cache (tests/gen_helpers), a 2-step checkpoint and its export."""
        self.cache = self.dir / "cache"
        pyrun(f"from tests.gen_helpers import synthetic_cache; synthetic_cache({str(self.cache)!r}, n=6, size=64)")
        cfg = self.write_config(self.dir / "tiny.toml", {})
        r = run_cli(["train", "--config", cfg, "--out", self.dir / "run", "--max-steps", "2"], self.dir, timeout=300)
        ck = self.dir / "run" / "checkpoints" / "last.pt"
        if r.rc or not ck.is_file():
            raise RuntimeError(f"training fixture failed: {r.err[-500:]}")
        self.checkpoint = ck
        r = run_cli(["export", ck, "-o", self.dir / "tiny.onnx"], self.dir, timeout=300)
        self.onnx = self.dir / "tiny.onnx" if r.rc == 0 else None

    def config_dict(self) -> dict:
        import tomllib

        cfg = tomllib.loads((REPO / "configs" / "tiny.toml").read_text())
        cfg["data"]["cache"] = str(self.cache or self.dir / "no-cache")
        return cfg

    def write_config(self, path: Path, changes: dict) -> Path:
        """configs/tiny.toml with `changes` ("a.b" keys; value None deletes) written as TOML."""
        cfg = self.config_dict()
        for key, value in changes.items():
            *parents, last = key.split(".")
            t = cfg
            for k in parents:
                t = t.setdefault(k, {})
            if value is None:
                t.pop(last, None)
            else:
                t[last] = value
        path.write_text(to_toml(cfg))
        return path

    # images derived from the reference photo
    def encode(self, suffix: str, img, params=()) -> bytes:
        ok, buf = self.cv2.imencode(suffix, img, list(params))
        assert ok
        return buf.tobytes()


def to_toml(d: dict) -> str:
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return {float("inf"): "inf", float("-inf"): "-inf"}.get(v, "nan" if v != v else repr(v))
        if isinstance(v, (int,)):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, bytes):
            return v.decode("latin-1")  # raw text, for deliberately broken TOML
        raise TypeError(v)

    top = [f"{k} = {val(v)}" for k, v in d.items() if not isinstance(v, dict)]
    tables = [f"\n[{k}]\n" + "\n".join(f"{kk} = {val(vv)}" for kk, vv in v.items()) for k, v in d.items()
              if isinstance(v, dict)]
    return "\n".join(top) + "\n" + "\n".join(tables) + "\n"


def pyrun(code: str) -> None:
    """Python code in a child process: torch is never imported here, so the CLI children (forked
    from this process) do not inherit a large peak RSS into their ru_maxrss."""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"helper failed: {r.stderr[-600:]}")


def write(p: Path, data: bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def count_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def frames_match(driver: Path, output: Path, expected: int | None = None):
    """A check: the output has as many frames as the driver (cause 15)."""
    def check(r: Run, d: Path) -> list[str]:
        want = expected if expected is not None else count_frames(driver)
        got = count_frames(output)
        return [] if got == want else [f"output has {got} frames, the driver {want}"]
    return check


# ───────────────────────────── hostile inputs ─────────────────────────────
# name → (make(folder, assets) -> path, codes as a photo input, codes as a video input, memory-checked)


def image_inputs() -> dict:
    def face(kind):
        def make(d, a):
            np, cv2 = a.np, a.cv2
            img = a.ref_bgr
            if kind == "gray":
                return write(d / "gray.png", a.encode(".png", cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)))
            if kind == "rgba":
                rgba = np.dstack([img, np.full(img.shape[:2], 200, np.uint8)])
                return write(d / "rgba.png", a.encode(".png", rgba))
            if kind == "16bit":
                return write(d / "deep.png", a.encode(".png", img.astype(np.uint16) * 257))
            if kind == "16bit-gray":
                g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
                return write(d / "deepgray.png", a.encode(".png", g))
            if kind in ("palette", "cmyk", "exif-rotated", "tiff", "bmp", "webp"):
                from PIL import Image
                pil = Image.fromarray(img[..., ::-1])
                p = d / {"palette": "pal.png", "cmyk": "cmyk.jpg", "exif-rotated": "rot.jpg", "tiff": "face.tiff",
                         "bmp": "face.bmp", "webp": "face.webp"}[kind]
                if kind == "palette":
                    pil.convert("P", palette=Image.ADAPTIVE).save(p)
                elif kind == "cmyk":
                    pil.convert("CMYK").save(p, quality=90)
                elif kind == "exif-rotated":
                    exif = Image.Exif()
                    exif[0x0112] = 6
                    pil.transpose(Image.ROTATE_90).save(p, exif=exif.tobytes())
                else:
                    pil.save(p)
                return p
            if kind == "trailing-garbage":
                return write(d / "tail.jpg", a.ref.read_bytes() + os.urandom(200_000))
            if kind == "bad-crc":
                data = bytearray(a.encode(".png", img))
                data[29] ^= 0xFF  # the IHDR CRC
                return write(d / "crc.png", bytes(data))
            if kind == "unicode-name":
                return write(d / "ré fé 人 'q\".jpg", a.ref.read_bytes())
            if kind == "newline-name":
                return write(d / "line\nbreak.jpg", a.ref.read_bytes())
            if kind == "big-24mp":
                big = cv2.resize(img, (6000, 4000), interpolation=cv2.INTER_NEAREST)
                return write(d / "big.jpg", a.encode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 60]))
            raise ValueError(kind)
        return make

    def const(name, data_fn):
        return lambda d, a: write(d / name, data_fn(a))

    def grey(w, h, name, ch=3):
        return lambda d, a: write(d / name, a.encode(".png", a.np.full((h, w, ch) if ch > 1 else (h, w), 90, a.np.uint8)))

    def link(d, a):
        (d / "dangling.jpg").symlink_to(d / "nowhere.jpg")
        return d / "dangling.jpg"

    def loop(d, a):
        (d / "loop-a.jpg").symlink_to(d / "loop-b.jpg")
        (d / "loop-b.jpg").symlink_to(d / "loop-a.jpg")
        return d / "loop-a.jpg"

    def fifo(d, a):
        os.mkfifo(d / "pipe.jpg")
        return d / "pipe.jpg"

    def zero_width(d, a):
        return write(d / "zero.png", png_bytes(1, 1).replace(struct.pack(">II", 1, 1), struct.pack(">II", 0, 1), 1))

    return {
        # name: (make, photo codes, video codes, memory-checked)
        "missing": (lambda d, a: d / "missing.jpg", {4}, {4}, False),
        "folder-named-jpg": (lambda d, a: mkdir(d / "folder.jpg"), {2, 3, 4}, {4}, False),
        "empty": (const("empty.jpg", lambda a: b""), {4}, {4}, False),
        "text-as-jpg": (const("notes.jpg", lambda a: b"hello, this is not a photo\n" * 20), {4}, {4}, False),
        "toml-as-png": (const("cfg.png", lambda a: b'[model]\nsize = 64\n'), {4}, {4}, False),
        "truncated-jpeg": (const("cut.jpg", lambda a: a.ref.read_bytes()[:10000]), {3, 4}, {3, 4}, False),
        "header-only-jpeg": (const("head.jpg", lambda a: a.ref.read_bytes()[:300]), {4}, {4}, False),
        "random-bytes": (const("noise.png", lambda a: os.urandom(5000)), {4}, {4}, False),
        "mp4-as-jpg": (const("clip.jpg", lambda a: a.drive.read_bytes()), {4}, {0}, False),
        "gif-header": (const("anim.jpg", lambda a: b"GIF89a" + bytes(100)), {4}, {4}, False),
        "name-300-chars": (lambda d, a: d / f"{LONG}.jpg", {4}, {4}, False),
        "bomb-png-30000sq": (const("bomb.png", lambda a: png_bytes(30000, 30000)), {4}, {4}, True),
        "bomb-png-header-only": (const("hdr.png", lambda a: png_bytes(100000, 100000, idat=False)), {4}, {4}, True),
        "bomb-jpeg-header": (const("big.jpg", lambda a: jpeg_with_size(a.ref.read_bytes(), 60000, 60000)), {4}, {4}, True),
        "over-pixel-limit-8100sq": (const("limit.png", lambda a: png_bytes(8100, 8100)), {4}, {4}, True),
        "20000x1": (grey(20000, 1, "thin.png"), {3}, {4}, True),
        "1x20000": (grey(1, 20000, "tall.png"), {3}, {4}, True),
        "8x8": (grey(8, 8, "tiny.png"), {3}, {4}, False),
        "1x1-gray": (grey(1, 1, "dot.png", ch=1), {3}, {4}, False),
        "zero-width-png": (zero_width, {4}, {4}, False),
        "no-face": (grey(64, 64, "grey.png"), {3}, {4}, False),
        "dangling-link": (link, {4}, {4}, False),
        "link-loop": (loop, {4}, {4}, False),
        "fifo": (fifo, {4}, {4}, False),
        "dev-null": (lambda d, a: Path("/dev/null"), {4}, {4}, False),
        "proc-file": (lambda d, a: Path("/proc/version"), {4}, {4}, False),
        "grayscale-face": (face("gray"), {0}, {4}, False),
        "rgba-face": (face("rgba"), {0}, {4}, False),
        "16bit-face": (face("16bit"), {0}, {4}, False),
        "16bit-gray-face": (face("16bit-gray"), {0}, {4}, False),
        "palette-face": (face("palette"), {0}, {4}, False),
        "cmyk-jpeg-face": (face("cmyk"), {0}, {4}, False),
        "exif-rotated-face": (face("exif-rotated"), {0, 3}, {4}, False),
        "tiff-face": (face("tiff"), {0}, {4}, False),
        "bmp-face": (face("bmp"), {0}, {4}, False),
        "webp-face": (face("webp"), {0}, {4}, False),
        "jpeg-trailing-garbage": (face("trailing-garbage"), {0}, {4}, False),
        "png-bad-crc": (face("bad-crc"), {0, 4}, {4}, False),
        "unicode-quotes-name": (face("unicode-name"), {0}, {4}, False),
        "newline-in-name": (face("newline-name"), {0}, {4}, False),
        "big-24mp-face": (face("big-24mp"), {0, 3}, {4}, True),
    }


def video_inputs() -> dict:
    """name → (make(folder, assets) -> path or None (skip), codes as a driver, expected frames or None)."""
    imgs = image_inputs()

    def asset(attr, reason=""):
        def make(d, a):
            p = getattr(a, attr)
            if p is None:
                raise Skip(reason or f"could not generate {attr}")
            return p
        return make

    def frames_with(kind):
        def make(d, a):
            f = mkdir(d / "frames")
            for p in sorted(a.frames_dir.iterdir()):
                shutil.copy(p, f / p.name)
            if kind == "text":
                write(f / "0005.png", b"not a frame")
            elif kind == "sizes":
                small = a.cv2.resize(a.cv2.imread(str(f / "0003.png")), (100, 60))
                a.cv2.imwrite(str(f / "0003.png"), small)
            elif kind == "subfolder":
                mkdir(f / "0004b.png")
            return f
        return make

    out = {name: (make, vcodes, None) for name, (make, pcodes, vcodes, mem) in imgs.items()
           if name in ("missing", "empty", "text-as-jpg", "name-300-chars", "bomb-png-30000sq", "20000x1",
                       "dangling-link", "link-loop", "fifo", "dev-null", "random-bytes", "mp4-as-jpg")}
    out["mp4-as-jpg"] = (out["mp4-as-jpg"][0], {0}, 120)
    out.update({
        "toml-as-mp4": (lambda d, a: write(d / "cfg.mp4", b"[model]\nsize = 64\n"), {4}, None),
        "truncated-mp4": (lambda d, a: write(d / "cut.mp4", a.drive.read_bytes()[:60000]), {0, 4}, None),
        "mp4-header-only": (lambda d, a: write(d / "head.mp4", a.drive.read_bytes()[:64]), {4}, None),
        "empty-frame-folder": (lambda d, a: mkdir(d / "frames"), {4}, None),
        "frames-with-a-text-file": (frames_with("text"), {0, 4}, None),
        "frames-of-two-sizes": (frames_with("sizes"), {0, 4}, None),
        "frames-with-a-subfolder": (frames_with("subfolder"), {0, 4}, None),
        "photo-as-driver": (lambda d, a: a.pose, {2, 3, 4}, None),
        "audio-only": (asset("audio_only"), {4}, None),
        "zero-frames": (asset("zero_frames", "ffmpeg would not write a zero-frame mp4"), {4}, None),
        "one-frame": (asset("one_frame"), {0}, 1),
        "no-face-video": (asset("no_face"), {3}, None),
        "odd-size-mjpeg-avi": (asset("odd"), {0}, None),
        "mkv": (asset("mkv"), {0}, None),
        "mov": (asset("mov"), {0}, None),
        "bomb-video-8200sq": (asset("bomb_video"), {4}, None),
        "8000x2-video": (asset("thin_video"), {3, 4}, None),
        "corrupt-middle-frames": (asset("corrupt_mid"), {0}, 120),
    })
    return out


# ───────────────────────────── cases per command ─────────────────────────────


def _out_cases(cmd: str, suffix: str, build: Callable, *, input_attr: str | None, yes: str | None = "-y",
               allow_fail: list | None = None, extra_codes: set | None = None) -> list[Case]:
    """Hostile output locations for one command. build(d, a, out_path, flags) -> (args, outputs)."""
    cases = []
    ok_codes = {5} | (extra_codes or set())

    def mk(name, where, codes=None, flags=(), allow=None):
        def make(d, a):
            out = where(d, a)
            args, outputs = build(d, a, out, list(flags))
            return Spec(args, codes or ok_codes, outputs=outputs, allow=(allow_fail or []) + (allow or []),
                        words=())
        cases.append(Case(cmd, "output-" + name, make))

    mk("name-300-chars", lambda d, a: d / (LONG + suffix))
    mk("under-a-regular-file", lambda d, a: write(d / "afile", b"x") / ("out" + suffix))
    mk("in-proc", lambda d, a: Path("/proc") / ("hs-out" + suffix))
    mk("missing-folder", lambda d, a: d / "nope" / ("out" + suffix))
    mk("is-a-folder", lambda d, a: mkdir(d / ("outdir" + suffix)), flags=[yes] if yes else [])
    mk("exists-without-overwrite", lambda d, a: write(d / ("out" + suffix), b"precious"))
    if input_attr:
        def same(d, a):
            p = d / ("in" + suffix)
            shutil.copyfile(getattr(a, input_attr), p)
            return p
        # the input is given as this very path (build sees out == its input)
        mk("equals-an-input", same, flags=[yes, "@same"] if yes else ["@same"])
        mk("hard-link-to-an-input", same, flags=[yes, "@hardlink"] if yes else ["@hardlink"])
        mk("symlink-to-an-input", same, flags=[yes, "@symlink"] if yes else ["@symlink"])

    def full(d, a):
        return mount_tmpfs(d / "full", "64k", fill=60 * 1024) / ("out" + suffix)

    def ro(d, a):
        return mount_tmpfs(d / "ro", "1m", ro=True) / ("out" + suffix)

    mk("disk-full-tmpfs", full, allow=["full/.*.reenact-parts", "full/.*.reenact-parts/*"])
    mk("read-only-tmpfs", ro)
    return cases


def _io(flags: list, out: Path, default_input: Path, d: Path) -> tuple[Path, Path, list]:
    """(input to pass, output to pass, flags) for the "@same/@hardlink/@symlink" markers."""
    inp = default_input
    rest = [f for f in flags if not f.startswith("@")]
    if "@same" in flags:
        inp = out
    elif "@hardlink" in flags:
        inp = d / ("orig" + out.suffix)
        os.link(out, inp)
    elif "@symlink" in flags:
        inp = d / ("orig" + out.suffix)
        out.rename(inp)
        out.symlink_to(inp)
    return inp, out, rest


def image_cases() -> list[Case]:
    cases = []
    for name, (make, pcodes, vcodes, mem) in image_inputs().items():
        for role in ("reference", "pose"):
            def mk(d, a, make=make, role=role, pcodes=pcodes, mem=mem):
                p = make(d, a)
                out = d / "out.png"
                args = ["image", p, a.pose, "-o", out] if role == "reference" else ["image", a.ref, p, "-o", out]
                return Spec(args, pcodes, outputs=[out], mem_mb=BOMB_MB if mem else None, timeout=90)
            cases.append(Case("image", f"{role}-{name}", mk, slow=name == "big-24mp-face"))

    def build(d, a, out, flags):
        inp, out, rest = _io(flags, out, a.pose, d)
        return ["image", a.ref, inp, "-o", out, *rest], [out]
    cases += _out_cases("image", ".png", build, input_attr="pose")

    def opt(name, extra, codes, env=None, words=()):
        def mk(d, a):
            return Spec(["image", a.ref, a.pose, "-o", d / "out.png", *extra], codes, outputs=[d / "out.png"],
                        env=env or {}, words=words)
        cases.append(Case("image", "option-" + name, mk))

    for name, extra, codes in [
        ("size-0", ["--size", "0"], {2}), ("size-negative", ["--size", "-16"], {2}), ("size-17", ["--size", "17"], {2}),
        ("size-absurd", ["--size", "1000000"], {2}), ("size-word", ["--size", "big"], {2}),
        ("engine-unknown", ["--engine", "magic"], {2}), ("transfer-unknown", ["--transfer", "nose"], {2}),
        ("regions-unknown", ["--regions", "nose"], {2}), ("regions-empty", ["--regions", ""], {0, 2}),
        ("face-99", ["--face", "99"], {2, 3}), ("face-negative", ["--face", "-1"], {2}), ("face-word", ["--face", "x"], {2}),
        ("driver-face-99", ["--driver-face", "99"], {2, 3}), ("multi-unknown", ["--multi", "many"], {2}),
        ("mouth-unknown", ["--mouth", "teeth"], {2}), ("eyes-unknown", ["--eyes", "closed"], {2}),
        ("unknown-option", ["--frobnicate"], {2}), ("crop-and-compare", ["--crop", "--compare"], {0, 2}),
        ("ref-missing", ["--ref", "/nonexistent/x.jpg"], {4}), ("ref-empty-glob", ["--ref", "/tmp/hs-none-*.jpg"], {2, 4}),
        ("weights-missing", ["--engine", "gan", "--weights", "/nonexistent/w.onnx"], {6}),
        ("gan-without-weights", ["--engine", "gan"], {0, 6}),
        ("max-pixels-env-word", [], {2}), ("max-pixels-env-tiny", [], {4}), ("max-pixels-env-negative", [], {2, 4}),
        ("ffmpeg-env-false", [], {0}),
    ]:
        env = {"max-pixels-env-word": {"REENACT_MAX_PIXELS": "lots"}, "max-pixels-env-tiny": {"REENACT_MAX_PIXELS": "100"},
               "max-pixels-env-negative": {"REENACT_MAX_PIXELS": "-5"},
               "ffmpeg-env-false": {"IMAGEIO_FFMPEG_EXE": "/bin/false"}}.get(name)
        opt(name, extra, codes, env)

    def default_out(d, a):
        shutil.copyfile(a.ref, d / "r.jpg")
        shutil.copyfile(a.pose, d / "p.jpg")
        return Spec(["image", "r.jpg", "p.jpg"], {0}, outputs=[d / "r-as-p.png"])
    cases.append(Case("image", "default-output-in-cwd", default_out))

    def default_out_exists(d, a):
        shutil.copyfile(a.ref, d / "r.jpg")
        shutil.copyfile(a.pose, d / "p.jpg")
        write(d / "r-as-p.png", b"precious")
        return Spec(["image", "r.jpg", "p.jpg"], {5})
    cases.append(Case("image", "default-output-exists", default_out_exists))

    def dash_name(d, a):
        shutil.copyfile(a.ref, d / "-r.jpg")
        return Spec(["image", "-r.jpg", a.pose, "-o", d / "o.png"], {2})
    cases.append(Case("image", "reference-named-like-an-option", dash_name))

    def ref_folder_hostile(d, a):
        f = mkdir(d / "refs")
        shutil.copyfile(a.ref, f / "a.jpg")
        write(f / "b.jpg", b"broken")
        write(f / "c.jpg", b"")
        return Spec(["image", f, a.pose, "-o", d / "o.png"], {0, 4}, outputs=[d / "o.png"])
    cases.append(Case("image", "reference-folder-with-broken-photos", ref_folder_hostile))

    for name, codes in _crafted_onnx_names():
        def mk(d, a, name=name, codes=codes):
            w = crafted_onnx(d, name)
            return Spec(["image", a.ref, a.pose, "--engine", "gan", "--weights", w, "-o", d / "o.png"], codes,
                        outputs=[d / "o.png"])
        cases.append(Case("image", "weights-" + name, mk))
    for name in ("garbage", "no-metadata", "empty"):
        def mk(d, a, name=name):
            w = crafted_onnx(d, name)
            return Spec(["image", a.ref, a.pose, "--mouth-weights", w, "-o", d / "o.png"], {6})
        cases.append(Case("image", "mouth-weights-" + name, mk))
    return cases


def _crafted_onnx_names() -> list[tuple[str, set]]:
    return [(n, {6}) for n in ("garbage", "empty", "text", "no-metadata", "config-not-json", "config-a-list",
                               "size-a-string", "size-negative", "size-huge", "variant-unknown", "size-lies",
                               "companion-missing", "companion-escapes", "companion-is-a-folder", "companion-garbage",
                               "wrong-input-names", "kind-appearance", "config-nan")]


def crafted_onnx(d: Path, case: str) -> Path:
    """A NAME.onnx (+ NAME.appearance.onnx) pair of Identity graphs with crafted reenact metadata."""
    import onnx
    from onnx import TensorProto, helper

    w = d / "w" / "m.onnx"
    mkdir(w.parent)
    if case == "garbage":
        return write(w, b"\x08\x07garbage" * 40)
    if case == "empty":
        return write(w, b"")
    if case == "text":
        return write(w, b"model = 'fake'\n")
    cfg = {"size": 64, "feature_warp": False, "variant": "thesis"}
    meta = {"reenact.kind": "generator", "reenact.appearance": "m.appearance.onnx"}
    side, app_input = 64, "reference"
    mc = json.dumps(cfg)
    if case == "config-not-json":
        mc = "{size: 64"
    elif case == "config-a-list":
        mc = "[64]"
    elif case == "size-a-string":
        mc = json.dumps({**cfg, "size": "64"})
    elif case == "size-negative":
        mc = json.dumps({**cfg, "size": -64})
    elif case == "size-huge":
        mc = json.dumps({**cfg, "size": 10 ** 9})
    elif case == "variant-unknown":
        mc = json.dumps({**cfg, "variant": "mystery"})
    elif case == "config-nan":
        mc = '{"size": NaN, "feature_warp": false}'
    elif case == "size-lies":
        side = 128
    elif case == "companion-escapes":
        meta["reenact.appearance"] = "../../../../etc/passwd"
    elif case == "wrong-input-names":
        app_input = "photo"
    elif case == "kind-appearance":
        meta["reenact.kind"] = "appearance"
    meta["reenact.model_config"] = mc
    if case == "no-metadata":
        meta = {}

    def graph(inputs, outputs, path, metadata):
        ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
        nodes = [helper.make_node("Identity", [inputs[0][0]], [o]) for o in outputs]
        model = helper.make_model(helper.make_graph(nodes, "g", ins, outs), opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        for k, v in metadata.items():
            model.metadata_props.add(key=k, value=v)
        onnx.save(model, str(path))

    app = w.parent / "m.appearance.onnx"
    if case == "companion-is-a-folder":
        mkdir(app)
    elif case == "companion-garbage":
        write(app, b"not onnx")
    elif case != "companion-missing":
        graph([(app_input, [1, 3, side, side])], ["appearance_4"], app, {})
    graph([("pose_parsing", [1, 12, 64, 64]), ("appearance_4", None)], ["image"], w, meta)
    return w


def landmarks_cases() -> list[Case]:
    cases = []
    for name, (make, pcodes, vcodes, mem) in image_inputs().items():
        def mk(d, a, make=make, pcodes=pcodes, mem=mem):
            p = make(d, a)
            codes = set(pcodes) | ({0} if pcodes == {3} else set())  # "no face" may be a picture saying so
            return Spec(["landmarks", p, "-o", d / "l.png"], codes, outputs=[d / "l.png"],
                        mem_mb=BOMB_MB if mem else None, timeout=90)
        cases.append(Case("landmarks", name, mk, slow=name == "big-24mp-face"))

    def build(d, a, out, flags):
        inp, out, rest = _io(flags, out, a.ref, d)
        return ["landmarks", inp, "-o", out, *rest], [out]
    cases += _out_cases("landmarks", ".png", build, input_attr="ref")

    def default_out(d, a):
        shutil.copyfile(a.ref, d / "r.jpg")
        return Spec(["landmarks", "r.jpg"], {0}, outputs=[d / "r-landmarks.png"])
    cases.append(Case("landmarks", "default-output", default_out))
    return cases


def _video(a, d, *extra, ref=None, drv=None, out=None):
    out = out or d / "o.mp4"
    return ["video", ref or a.ref, drv or a.short, "-o", out, "--engine", "warp", *extra], out


def video_cases() -> list[Case]:
    cases = []
    for name, (make, codes, frames) in video_inputs().items():
        def mk(d, a, make=make, codes=codes, frames=frames):
            p = make(d, a)
            args, out = _video(a, d, drv=p)
            chk = frames_match(p, out, frames) if codes == {0} else None
            return Spec(args, codes, outputs=[out], mem_mb=BOMB_MB if "bomb" in name or "000" in name else None,
                        check=chk, timeout=150)
        cases.append(Case("video", "driver-" + name, mk, slow=name == "corrupt-middle-frames"))
    imgs = image_inputs()
    for name in ("missing", "empty", "text-as-jpg", "name-300-chars", "bomb-png-30000sq", "20000x1", "no-face",
                 "dangling-link", "fifo", "grayscale-face", "rgba-face", "16bit-face"):
        make, pcodes, _, mem = imgs[name]

        def mk(d, a, make=make, pcodes=pcodes, mem=mem):
            args, out = _video(a, d, ref=make(d, a))
            return Spec(args, pcodes, outputs=[out], mem_mb=BOMB_MB if mem else None, timeout=150)
        cases.append(Case("video", "reference-" + name, mk))
    vids = video_inputs()
    for name in ("truncated-mp4", "audio-only", "zero-frames", "no-face-video", "bomb-video-8200sq", "mkv", "one-frame"):
        make, codes, _ = vids[name]

        def mk(d, a, make=make, codes=codes, name=name):
            args, out = _video(a, d, ref=make(d, a))
            if name == "truncated-mp4":
                codes = {0, 3, 4}
            return Spec(args, codes, outputs=[out], mem_mb=BOMB_MB if "bomb" in name else None, timeout=150)
        cases.append(Case("video", "video-source-" + name, mk))

    def v2v_ok(d, a):
        args, out = _video(a, d, ref=a.short_ref)
        return Spec(args, {0}, outputs=[out], check=frames_match(a.short, out))
    cases.append(Case("video", "video-source-ok", v2v_ok))

    def v2v_same_file(d, a):
        args, out = _video(a, d, ref=a.short, drv=a.short)
        return Spec(args, {0}, outputs=[out])
    cases.append(Case("video", "video-source-is-the-driver", v2v_same_file))

    def build(d, a, out, flags):
        inp, out, rest = _io(flags, out, a.short, d)
        args, _ = _video(a, d, drv=inp, out=out)
        return args + rest, [out]
    cases += _out_cases("video", ".mp4", build, input_attr="short")

    def opt(name, extra, codes, env=None, ref=None, words=()):
        def mk(d, a):
            args, out = _video(a, d, *extra, ref=getattr(a, ref) if ref else None)
            return Spec(args, codes, outputs=[out], env=env or {}, words=words)
        cases.append(Case("video", "option-" + name, mk))

    for name, extra, codes in [
        ("anchor-negative", ["--anchor", "-1"], {2}), ("anchor-past-the-end", ["--anchor", "99999"], {2}),
        ("anchor-word", ["--anchor", "x"], {2}), ("chunk-frames-0", ["--chunk-frames", "0"], {2}),
        ("chunk-frames-negative", ["--chunk-frames", "-5"], {2}), ("chunk-frames-1", ["--chunk-frames", "1"], {0}),
        ("max-side-negative", ["--max-side", "-5"], {2}), ("max-side-1", ["--max-side", "1"], {2}),
        ("max-side-absurd", ["--max-side", "100000"], {0, 2}),
        ("fps-0", ["--fps", "0"], {2}), ("fps-negative", ["--fps", "-25"], {2}), ("fps-nan", ["--fps", "nan"], {2}),
        ("fps-inf", ["--fps", "inf"], {2}), ("preset-unknown", ["--preset", "warpspeed"], {2}),
        ("length-unknown", ["--length", "forever"], {2}), ("audio-unknown", ["--audio", "loud"], {2}),
        ("source-expression-unknown", ["--source-expression", "x"], {2}), ("motion-unknown", ["--motion", "sideways"], {2}),
        ("transfer-unknown", ["--transfer", "nose"], {2}), ("regions-unknown", ["--regions", "ears"], {2}),
        ("size-0", ["--size", "0"], {2}), ("size-17", ["--size", "17"], {2}), ("size-negative", ["--size", "-256"], {2}),
        ("engine-unknown", ["--engine", "magic"], {2}), ("face-99", ["--face", "99"], {2, 3}),
        ("driver-face-99", ["--driver-face", "99"], {2, 3}), ("face-negative", ["--face", "-3"], {2}),
        ("resume-and-overwrite", ["--resume", "--overwrite"], {0, 2}), ("resume-nothing-to-resume", ["--resume"], {0}),
        ("reference-frames-with-a-photo", ["--reference-frames"], {2, 4}), ("weights-text", [], {6}),
        ("multi-unknown", ["--multi", "x"], {2}), ("mouth-unknown", ["--mouth", "x"], {2}),
        ("eyes-unknown", ["--eyes", "x"], {2}),
    ]:
        if name == "weights-text":
            def mk(d, a):
                w = write(d / "w.onnx", b"not a model")
                args, out = _video(a, d, ref=None)
                args[args.index("warp")] = "gan"
                return Spec(args + ["--weights", w], {6})
            cases.append(Case("video", "option-weights-text", mk))
            continue
        opt(name, extra, codes)
    for name, extra, codes in [
        ("audio-source-from-a-silent-source", ["--audio", "source"], {0, 2}),
        ("length-source", ["--length", "source"], {0}), ("length-shortest", ["--length", "shortest"], {0}),
        ("source-expression-keep", ["--source-expression", "keep"], {0, 2}),
    ]:
        opt(name, extra, codes, ref="short_ref")

    def ffmpeg_false(d, a):
        args, out = _video(a, d)
        return Spec(args, {1}, env={"IMAGEIO_FFMPEG_EXE": "/bin/false"}, words=("ffmpeg",),
                    check=lambda r, d: [] if "short.mp4" not in r.err.split("hint")[0] else ["blames the input"])
    cases.append(Case("video", "env-ffmpeg-is-bin-false", ffmpeg_false))

    def ffmpeg_missing(d, a):
        args, out = _video(a, d)
        return Spec(args, {1}, env={"IMAGEIO_FFMPEG_EXE": "/nonexistent/ffmpeg"}, words=("ffmpeg",))
    cases.append(Case("video", "env-ffmpeg-missing", ffmpeg_missing))

    # damaged work folders (cause 14)
    def damaged(kind, flag, codes):
        def mk(d, a):
            args, out = _video(a, d, flag)
            work = d / ".o.mp4.reenact-parts"
            if kind == "file-in-its-place":
                write(work, b"not a folder")
            elif kind == "state-not-json":
                write(work / "state.json", b"\x00\xff{")
            elif kind == "state-wrong-types":
                write(work / "state.json", json.dumps({"job": 5, "inputs": [], "chunk": "forty",
                                                       "chunks_done": "all"}).encode())
            elif kind == "state-is-a-folder":
                mkdir(work / "state.json")
            elif kind == "parts-garbage":
                write(work / "part-00000.mp4", b"garbage")
            allow = [".o.mp4.reenact-parts", ".o.mp4.reenact-parts/*"]  # kept (--resume) or deleted (--overwrite)
            return Spec(args, codes, outputs=[out], allow=allow)
        return mk
    for kind in ("file-in-its-place", "state-not-json", "state-wrong-types", "state-is-a-folder", "parts-garbage"):
        cases.append(Case("video", f"work-folder-{kind}-resume", damaged(kind, "--resume", {5})))
        cases.append(Case("video", f"work-folder-{kind}-overwrite", damaged(kind, "--overwrite", {0})))

    cases += [Case("video", "sigint-mid-render-then-resume", lambda d, a: signal_then_resume(d, a, signal.SIGINT),
                   slow=True, custom=True),
              Case("video", "sigterm-mid-render-then-resume", lambda d, a: signal_then_resume(d, a, signal.SIGTERM),
                   slow=True, custom=True),
              Case("video", "sigkill-mid-render-then-resume", lambda d, a: signal_then_resume(d, a, signal.SIGKILL),
                   slow=True, custom=True),
              Case("video", "sigint-during-tracking", sigint_tracking, custom=True),
              Case("video", "two-runs-overwrite-one-output", lambda d, a: concurrent_video(d, a, "--overwrite"),
                   slow=True, custom=True),
              Case("video", "second-run-resume-while-first-runs", lambda d, a: concurrent_video(d, a, "--resume"),
                   slow=True, custom=True),
              Case("video", "disk-full-mid-render-then-resume", disk_full_then_resume, slow=True, custom=True),
              Case("video", "looped-240-frame-driver-frame-count", looped_count, slow=True, custom=True)]
    return cases


# ───────────────────────────── custom (multi-run) cases ─────────────────────────────


def _wait_for(pred, timeout: float, proc) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _parts(work: Path) -> list:
    try:
        return sorted(work.glob("part-*.mp4"))
    except OSError:
        return []


def signal_then_resume(d: Path, a: Assets, sig) -> tuple:
    out = d / "o.mp4"
    work = d / ".o.mp4.reenact-parts"
    args, _ = _video(a, d, "--chunk-frames", "40", drv=a.long, out=out)
    inputs = {str(a.long): sha(a.long), str(a.ref): sha(a.ref)}
    h = start(args, d, log=d.parent.parent / "logs" / (d.name + "-1"))
    if not _wait_for(lambda: len(_parts(work)) >= 1, 120, h[0]):
        r = finish(h, 240)
        return [f"no chunk was written before the signal (exit {r.rc})"], shlex.join(r.argv), r.rc, r.err
    with contextlib.suppress(ProcessLookupError):
        os.kill(h[0].pid, sig)
    r1 = finish(h, 240)
    problems = []
    if sig != signal.SIGKILL:
        problems += ["first run: " + p for p in run_problems(r1, {130})]
    if out.exists():
        problems.append("an output exists after the interruption")
    if not work.is_dir():
        problems.append("the work folder was not kept")
    r2 = run_cli(args + ["--resume"], d, timeout=240, log=d.parent.parent / "logs" / (d.name + "-2"))
    problems += ["resume: " + p for p in run_problems(r2, {0})]
    if r2.rc == 0:
        if work.exists():
            problems.append("work folder left after the resumed render")
        n_out, n_in = count_frames(out), count_frames(a.long)
        if n_out != n_in:
            problems.append(f"resumed output has {n_out} frames, the driver {n_in}")
        if "resum" not in (r2.out + r2.err).lower() and "already rendered" not in (r2.out + r2.err).lower():
            problems.append("the resumed run does not say it continued")
    problems += [f"input changed: {k}" for k, v in inputs.items() if sha(Path(k)) != v]
    left = set(snapshot(d)) - {"o.mp4"}
    if left:
        problems.append(f"left behind: {sorted(left)[:4]}")
    return problems, shlex.join(r1.argv) + " ; … --resume", r2.rc, r1.err + r2.err


def sigint_tracking(d: Path, a: Assets) -> tuple:
    out = d / "o.mp4"
    args, _ = _video(a, d, drv=a.long, out=out)
    h = start(args, d, log=d.parent.parent / "logs" / d.name)
    _wait_for(lambda: (d / ".o.mp4.reenact-parts" / "state.json").is_file(), 60, h[0])  # pass 1 started
    time.sleep(0.3)
    with contextlib.suppress(ProcessLookupError):
        os.kill(h[0].pid, signal.SIGINT)
    r = finish(h, 240)
    problems = run_problems(r, {130})
    if r.seconds > 30:
        problems.append(f"took {r.seconds:.0f} s to stop")
    left = set(snapshot(d)) - {".o.mp4.reenact-parts"} - {k for k in snapshot(d) if k.startswith(".o.mp4.reenact-parts/")}
    if left:
        problems.append(f"left behind: {sorted(left)[:4]}")
    return problems, shlex.join(r.argv), r.rc, r.err


def concurrent_video(d: Path, a: Assets, flag: str) -> tuple:
    out = d / "o.mp4"
    work = d / ".o.mp4.reenact-parts"
    args, _ = _video(a, d, "--chunk-frames", "40", drv=a.long, out=out)
    h1 = start(args, d, log=d.parent.parent / "logs" / (d.name + "-1"))
    started = _wait_for(lambda: len(_parts(work)) >= 1, 120, h1[0])
    r2 = run_cli(args + [flag], d, timeout=240, log=d.parent.parent / "logs" / (d.name + "-2"))
    r1 = finish(h1, 240)
    problems = ["first: " + p for p in run_problems(r1, {0})]
    problems += ["second: " + p for p in run_problems(r2, {5} if started else {0, 5})]
    if started and r2.rc == 5 and "in use" not in r2.err:
        problems.append("second run does not say the work folder is in use")
    if r1.rc == 0:
        n_out, n_in = count_frames(out), count_frames(a.long)
        if n_out != n_in:
            problems.append(f"output has {n_out} frames, the driver {n_in}")
    left = set(snapshot(d)) - {"o.mp4"}
    if left:
        problems.append(f"left behind: {sorted(left)[:4]}")
    return problems, shlex.join(r2.argv), r2.rc, r1.err + r2.err


def disk_full_then_resume(d: Path, a: Assets) -> tuple:
    m = mount_tmpfs(d / "disk", "400k")
    out = m / "o.mp4"
    args, _ = _video(a, d, "--chunk-frames", "40", drv=a.long, out=out)
    r1 = run_cli(args, d, timeout=240, log=d.parent.parent / "logs" / (d.name + "-1"))
    problems = ["full: " + p for p in run_problems(r1, {5}, words=("space",))]
    if out.exists():
        problems.append("an output exists on the full disk")
    subprocess.run(["mount", "-o", "remount,size=64m", str(m)], check=True)
    r2 = run_cli(args + ["--resume"], d, timeout=240, log=d.parent.parent / "logs" / (d.name + "-2"))
    problems += ["resume: " + p for p in run_problems(r2, {0})]
    if r2.rc == 0:
        n_out, n_in = count_frames(out), count_frames(a.long)
        if n_out != n_in:
            problems.append(f"output has {n_out} frames, the driver {n_in}")
    left = set(snapshot(d)) - {"disk", "disk/o.mp4"}
    if left:
        problems.append(f"left behind: {sorted(left)[:4]}")
    return problems, shlex.join(r1.argv) + " ; … --resume", r2.rc, r1.err + r2.err


def looped_count(d: Path, a: Assets) -> tuple:
    out = d / "o.mp4"
    args, _ = _video(a, d, "--chunk-frames", "50", drv=a.long, out=out)
    r = run_cli(args, d, timeout=240, log=d.parent.parent / "logs" / d.name)
    problems = run_problems(r, {0})
    if r.rc == 0 and count_frames(out) != count_frames(a.long):
        problems.append(f"output has {count_frames(out)} frames, the driver {count_frames(a.long)}")
    return problems, shlex.join(r.argv), r.rc, r.err


def concurrent_image(d: Path, a: Assets) -> tuple:
    out = d / "o.png"
    args = ["image", a.ref, a.pose, "-o", out, "-y"]
    hs = [start(args, d, log=d.parent.parent / "logs" / f"{d.name}-{i}") for i in range(3)]
    rs = [finish(h, 120) for h in hs]
    problems = [f"run {i}: {p}" for i, r in enumerate(rs) for p in run_problems(r, {0, 5})]
    if not any(r.rc == 0 for r in rs):
        problems.append("no run succeeded")
    import cv2
    if cv2.imread(str(out)) is None:
        problems.append("the output is not a readable image")
    left = set(snapshot(d)) - {"o.png"}
    if left:
        problems.append(f"left behind: {sorted(left)[:4]}")
    return problems, shlex.join(rs[0].argv) + " (×3 at once)", rs[0].rc, "\n".join(r.err for r in rs)


def live_sigint(d: Path, a: Assets) -> tuple:
    out = d / "rec.mp4"
    args = ["live", a.ref, "--source", a.long, "--no-window", "-o", out, "--engine", "warp"]
    h = start(args, d, log=d.parent.parent / "logs" / d.name)
    time.sleep(6)
    with contextlib.suppress(ProcessLookupError):
        os.kill(h[0].pid, signal.SIGINT)
    r = finish(h, 240)
    problems = run_problems(r, {0, 130})
    if not out.is_file() or count_frames(out) == 0:
        problems.append("the recording was not finished")
    left = set(snapshot(d)) - {"rec.mp4"}
    if left:
        problems.append(f"left behind: {sorted(left)[:4]}")
    return problems, shlex.join(r.argv) + " ; SIGINT after 6 s", r.rc, r.err


# ───────────────────────────── batch ─────────────────────────────


def batch_cases() -> list[Case]:
    cases = []

    def prep(d, a):
        b = mkdir(d / "in")
        shutil.copyfile(a.ref, b / "ref.jpg")
        shutil.copyfile(a.pose, b / "pose.jpg")
        shutil.copyfile(a.short, b / "drv.mp4")
        return b

    def csv_case(name, text, codes, extra=(), outputs=(), allow_fail=True):
        def mk(d, a):
            b = prep(d, a)
            jobs = write(b / "jobs.csv", text if isinstance(text, bytes) else text.encode())
            out = d / "out"
            return Spec(["batch", jobs, "-o", out, *extra], codes, outputs=[out] + [out / o for o in outputs],
                        allow=["out", "out/summary.csv", "out/summary.json"] if allow_fail else [])
        cases.append(Case("batch", name, mk))

    csv_case("ok-two-image-jobs", "ref.jpg,pose.jpg,a.png\nref.jpg,pose.jpg,b.png\n", {0}, outputs=["a.png", "b.png"])
    csv_case("ok-video-job", "ref.jpg,drv.mp4,v.mp4,--engine warp\n", {0}, outputs=["v.mp4"])
    csv_case("unbalanced-quote-in-options", 'ref.jpg,pose.jpg,a.png,"--face \'0"\n', {2}, allow_fail=False)
    csv_case("unbalanced-csv-quote", 'ref.jpg,"pose.jpg,a.png\n', {2, 4}, allow_fail=False)
    csv_case("duplicate-outputs", "ref.jpg,pose.jpg,a.png\nref.jpg,pose.jpg,a.png\n", {2}, allow_fail=False)
    csv_case("duplicate-outputs-overwrite", "ref.jpg,pose.jpg,a.png\nref.jpg,pose.jpg,a.png\n", {2}, extra=["-y"],
             allow_fail=False)
    csv_case("duplicate-outputs-other-spelling", "ref.jpg,pose.jpg,a.png\nref.jpg,pose.jpg,./sub/../a.png\n", {2},
             allow_fail=False)
    csv_case("duplicate-default-outputs", "ref.jpg,pose.jpg\nref.jpg,pose.jpg\n", {2}, allow_fail=False)
    csv_case("empty-csv", "", {2}, allow_fail=False)
    csv_case("header-only", "reference,driver,output,options\n", {2}, allow_fail=False)
    csv_case("binary-csv", b"\xff\xfe\x00\x81" * 200, {2, 4}, allow_fail=False)
    csv_case("nul-bytes", b"ref.jpg,pose.jpg,a\x00.png\n", {2, 4}, allow_fail=False)
    csv_case("too-many-columns", "ref.jpg,pose.jpg,a.png,--face 0,extra,more\n", {2}, allow_fail=False)
    csv_case("one-column", "ref.jpg\n", {2}, allow_fail=False)
    # a bad option in one row fails that job (exit 2 in summary.csv), the batch goes on (exit 1)
    csv_case("unknown-job-option", "ref.jpg,pose.jpg,a.png,--frobnicate\n", {1})
    csv_case("bad-job-option-value", "ref.jpg,pose.jpg,a.png,--size big\n", {1})
    csv_case("job-option-out-of-range", "ref.jpg,drv.mp4,a.mp4,--chunk-frames -3\n", {1})
    csv_case("job-option-output", "ref.jpg,pose.jpg,a.png,-o /tmp/elsewhere.png\n", {1})
    csv_case("a-job-with-a-missing-input", "ref.jpg,pose.jpg,a.png\nnope.jpg,pose.jpg,b.png\n", {1}, outputs=["a.png"])
    csv_case("a-job-with-a-broken-input", "ref.jpg,pose.jpg,a.png\njobs.csv,pose.jpg,b.png\n", {1}, outputs=["a.png"])
    csv_case("output-cell-name-300-chars", f"ref.jpg,pose.jpg,{LONG}.png\n", {1, 2, 5})
    csv_case("output-cell-is-an-input", "ref.jpg,pose.jpg,../in/ref.jpg\n", {1, 2, 5}, extra=["-y"])
    csv_case("output-cell-bad-suffix", "ref.jpg,pose.jpg,a.txt\n", {1, 2, 5})
    csv_case("output-cell-under-a-file", "ref.jpg,pose.jpg,../in/ref.jpg/a.png\n", {1, 2, 5})
    csv_case("bom-and-header", "\ufeffreference,driver,output\nref.jpg,pose.jpg,a.png\n", {0}, outputs=["a.png"])
    csv_case("comments-and-blank-rows", "# jobs\n\nref.jpg,pose.jpg,a.png\n\n", {0}, outputs=["a.png"])
    csv_case("crlf-line-ends", "ref.jpg,pose.jpg,a.png\r\nref.jpg,pose.jpg,b.png\r\n", {0}, outputs=["a.png", "b.png"])

    def mk_opts(name, opts, codes):
        def mk(d, a):
            b = prep(d, a)
            jobs = write(b / "jobs.csv", b"ref.jpg,pose.jpg,a.png\n")
            return Spec(["batch", jobs, "-o", d / "out", "--job-options", opts], codes, outputs=[d / "out"])
        cases.append(Case("batch", "job-options-" + name, mk))
    mk_opts("unbalanced-quote", '--face "0', {2})
    mk_opts("unknown", "--nope", {2})
    mk_opts("bad-value", "--size -16", {2})
    mk_opts("output", "-o /tmp/elsewhere.png", {2})
    mk_opts("empty", "", {0})

    def missing_csv(d, a):
        return Spec(["batch", d / "nope.csv", "-o", d / "out"], {4})
    cases.append(Case("batch", "missing-csv", missing_csv))

    def csv_dir(d, a):
        return Spec(["batch", mkdir(d / "jobs.csv"), "-o", d / "out"], {4})
    cases.append(Case("batch", "csv-is-a-folder", csv_dir))

    def csv_long(d, a):
        return Spec(["batch", d / (LONG + ".csv"), "-o", d / "out"], {4})
    cases.append(Case("batch", "csv-name-300-chars", csv_long))

    def out_case(name, where, codes):
        def mk(d, a):
            b = prep(d, a)
            jobs = write(b / "jobs.csv", b"ref.jpg,pose.jpg,a.png\n")
            return Spec(["batch", jobs, "-o", where(d)], codes)
        cases.append(Case("batch", "output-folder-" + name, mk))
    out_case("is-a-file", lambda d: write(d / "out", b"x"), {5})
    out_case("under-a-file", lambda d: write(d / "f", b"x") / "out", {5})
    out_case("name-300-chars", lambda d: d / LONG, {5})
    out_case("in-proc", lambda d: Path("/proc/hs-batch-out"), {5})
    out_case("read-only-tmpfs", lambda d: mount_tmpfs(d / "ro", "1m", ro=True) / "out", {5})
    out_case("disk-full-tmpfs", lambda d: mount_tmpfs(d / "full", "64k", fill=62 * 1024) / "out", {1, 5})
    cases[-1].make = _allow(cases[-1].make, ["full/out", "full/out/*"])

    def folders(name, setup, codes, outputs=()):
        def mk(d, a):
            refs, drvs = mkdir(d / "refs"), mkdir(d / "drivers")
            extra = setup(d, a, refs, drvs)
            return Spec(["batch", *extra, "-o", d / "out"], codes, outputs=[d / "out"] + [d / "out" / o for o in outputs],
                        allow=["out", "out/*"])
        cases.append(Case("batch", "folders-" + name, mk))

    def ok_pair(d, a, refs, drvs):
        shutil.copyfile(a.ref, refs / "r.jpg")
        shutil.copyfile(a.pose, drvs / "p.jpg")
        return ["--refs", refs, "--drivers", drvs]
    folders("ok", ok_pair, {0}, ["r-as-p.png"])

    def with_broken(d, a, refs, drvs):
        ok_pair(d, a, refs, drvs)
        write(drvs / "broken.jpg", b"broken")
        write(drvs / "broken.mp4", b"broken")
        return ["--refs", refs, "--drivers", drvs]
    folders("with-broken-drivers", with_broken, {1})
    folders("empty", lambda d, a, r, dr: ["--refs", r, "--drivers", dr], {2, 4})
    folders("refs-without-drivers", lambda d, a, r, dr: ["--refs", r], {2})
    folders("refs-missing", lambda d, a, r, dr: ["--refs", d / "nope", "--drivers", dr], {4})
    folders("refs-is-a-file", lambda d, a, r, dr: ["--refs", a.ref, "--drivers", dr], {2, 4})

    def both(d, a, refs, drvs):
        ok_pair(d, a, refs, drvs)
        return [write(d / "jobs.csv", b"x,y\n"), "--refs", refs, "--drivers", drvs]
    folders("and-a-csv", both, {2})
    folders("nothing", lambda d, a, r, dr: [], {2})
    folders("job-cpus-0", lambda d, a, r, dr: ok_pair(d, a, r, dr) + ["--job-cpus", "0"], {2})
    folders("output-is-the-refs-folder", lambda d, a, r, dr: ok_pair(d, a, r, dr), {0})  # replaced below

    def out_is_refs(d, a):
        refs, drvs = mkdir(d / "refs"), mkdir(d / "drivers")
        ok_pair(d, a, refs, drvs)
        return Spec(["batch", "--refs", refs, "--drivers", drvs, "-o", refs, "-y"], {0, 2, 5},
                    outputs=[refs / "r-as-p.png"], allow=["refs/summary.*", "refs/r-as-p.png"])
    cases[-1] = Case("batch", "folders-output-is-the-refs-folder", out_is_refs)

    def resume_after_ok(d, a):
        b = prep(d, a)
        jobs = write(b / "jobs.csv", b"ref.jpg,pose.jpg,a.png\n")
        r = run_cli(["batch", jobs, "-o", d / "out"], d)
        if r.rc:
            raise Skip("the first batch failed")
        return Spec(["batch", jobs, "-o", d / "out", "--resume"], {0}, outputs=[d / "out"],
                    allow=["out/summary.csv", "out/summary.json"])
    cases.append(Case("batch", "resume-after-a-complete-batch", resume_after_ok))

    def exists_no_overwrite(d, a):
        b = prep(d, a)
        jobs = write(b / "jobs.csv", b"ref.jpg,pose.jpg,a.png\n")
        write(d / "out" / "a.png", b"precious")
        return Spec(["batch", jobs, "-o", d / "out"], {1, 5}, allow=["out/summary.csv", "out/summary.json"])
    cases.append(Case("batch", "job-output-exists", exists_no_overwrite))

    def sigint_batch(d, a):
        b = prep(d, a)
        shutil.copyfile(a.long, b / "long.mp4")
        jobs = write(b / "jobs.csv", b"ref.jpg,long.mp4,a.mp4,--engine warp --chunk-frames 40\n"
                     b"ref.jpg,drv.mp4,b.mp4,--engine warp\n"
                     b"ref.jpg,pose.jpg,c.png\n")
        args = ["batch", jobs, "-o", d / "out"]
        h = start(args, d, log=d.parent.parent / "logs" / d.name)
        if not _wait_for(lambda: len(_parts(d / "out" / ".a.mp4.reenact-parts")) >= 1, 120, h[0]):
            r = finish(h, 240)
            return [f"the first job wrote no chunk (exit {r.rc})"], shlex.join(r.argv), r.rc, r.err
        with contextlib.suppress(ProcessLookupError):
            os.kill(h[0].pid, signal.SIGINT)
        r1 = finish(h, 240)
        problems = ["interrupted: " + p for p in run_problems(r1, {130}, batch=True)]
        if not (d / "out" / "summary.csv").is_file():
            problems.append("no summary.csv after the interruption")
        r2 = run_cli(args + ["--resume"], d, timeout=240)
        problems += ["resume: " + p for p in run_problems(r2, {0}, batch=True)]
        for o in ("a.mp4", "b.mp4", "c.png"):
            if not (d / "out" / o).is_file():
                problems.append(f"{o} missing after --resume")
        left = [k for k in snapshot(d) if "reenact-parts" in k or ".tmp" in k]
        if left:
            problems.append(f"left behind: {left[:4]}")
        return problems, shlex.join(r1.argv) + " ; … --resume", r2.rc, r1.err + r2.err
    cases.append(Case("batch", "sigint-then-resume", sigint_batch, slow=True, custom=True))
    return cases


# ───────────────────────────── train, export ─────────────────────────────


def train_cases() -> list[Case]:
    cases = []

    def need_cache(a):
        if a.cache is None:
            raise Skip("needs the training fixture (not built with --quick)")

    def cfg_case(name, changes, codes, raw: bytes | None = None, extra=(), words=()):
        def mk(d, a):
            if raw is None:
                need_cache(a)
                cfg = a.write_config(d / "c.toml", changes)
            else:
                cfg = write(d / "c.toml", raw)
            return Spec(["train", "--config", cfg, "--out", d / "run", "--max-steps", "1", *extra], codes,
                        outputs=[d / "run"], words=words, timeout=120)
        cases.append(Case("train", "config-" + name, mk))

    for name, changes in [
        ("batch-size-word", {"batch_size": "eight"}), ("batch-size-0", {"batch_size": 0}),
        ("batch-size-negative", {"batch_size": -2}), ("batch-size-absurd", {"batch_size": 10 ** 9}),
        ("batch-size-float", {"batch_size": 2.5}), ("lr-word", {"lr_g": "fast"}), ("lr-negative", {"lr_g": -1.0}),
        ("lr-nan", {"lr_g": float("nan")}), ("lr-inf", {"lr_d": float("inf")}), ("threads-word", {"threads": "many"}),
        ("threads-negative", {"threads": -3}), ("seed-list", {"seed": [1, 2]}), ("device-unknown", {"device": "tpu"}),
        ("max-steps-negative", {"max_steps": -5}), ("ema-decay-2", {"ema_decay": 2.0}), ("unknown-key", {"colour": "red"}),
        ("unknown-nested-key", {"model.wings": 2}), ("model-size-17", {"model.size": 17}),
        ("model-size-0", {"model.size": 0}), ("model-a-string", {"model": None, "model_": None}),
        ("log-every-0", {"log_every": 0}), ("losses-negative", {"losses.l1": -10.0}),
        ("losses-word", {"losses.gan": "lots"}), ("discriminator-scales-0", {"discriminator.scales": 0}),
        ("pairing-unknown", {"data.pairing": "random-ish"}), ("data-workers-negative", {"data.workers": -1}),
        ("checkpoint-every-negative", {"checkpoint_every": -1}), ("bool-as-string", {"model.feature_warp": "yes"}),
    ]:
        if name == "model-a-string":
            def mk(d, a):
                need_cache(a)
                cfg = a.config_dict()
                del cfg["model"]
                text = 'model = "big"\n' + to_toml(cfg)
                return Spec(["train", "--config", write(d / "c.toml", text.encode()), "--out", d / "run", "--max-steps",
                             "1"], {2})
            cases.append(Case("train", "config-model-a-string", mk))
            continue
        cfg_case(name, changes, {2}, words=("c.toml",))

    def cache_case(name, where, codes):
        def mk(d, a):
            need_cache(a)
            cfg = a.write_config(d / "c.toml", {"data.cache": str(where(d, a))})
            return Spec(["train", "--config", cfg, "--out", d / "run", "--max-steps", "1"], codes, timeout=120)
        cases.append(Case("train", "cache-" + name, mk))
    cache_case("missing-no-source", lambda d, a: d / "nocache", {2, 4})
    cache_case("is-a-file", lambda d, a: write(d / "cachefile", b"x"), {2, 4})
    cache_case("empty-folder", lambda d, a: mkdir(d / "emptycache"), {2, 4})
    cache_case("broken-meta", lambda d, a: write(d / "bc" / "meta.json", b"{not json"), {2, 4})

    cfg_case("file-binary", {}, {2, 4}, raw=b"\x00\xff\xfe" * 100)
    cfg_case("file-empty", {}, {2, 4}, raw=b"")
    cfg_case("file-unbalanced-quote", {}, {2}, raw=b'seed = "0\nbatch_size = 2\n')
    cfg_case("file-json", {}, {2}, raw=b'{"seed": 0}')

    def file_case(name, where, codes):
        def mk(d, a):
            return Spec(["train", "--config", where(d, a), "--out", d / "run"], codes)
        cases.append(Case("train", "config-" + name, mk))
    file_case("missing", lambda d, a: d / "nope.toml", {4})
    file_case("a-folder", lambda d, a: mkdir(d / "c.toml"), {4})
    file_case("name-300-chars", lambda d, a: d / (LONG + ".toml"), {4})
    file_case("jpeg-as-toml", lambda d, a: write(d / "c.toml", a.ref.read_bytes()), {2, 4})

    def opt_case(name, extra, codes, pre=None):
        def mk(d, a):
            need_cache(a)
            cfg = a.write_config(d / "c.toml", {})
            if pre:
                extra2 = pre(d, a)
            else:
                extra2 = []
            return Spec(["train", "--config", cfg, "--out", d / "run", *extra, *extra2], codes, outputs=[d / "run"],
                        timeout=180)
        cases.append(Case("train", name, mk))
    opt_case("max-steps-negative", ["--max-steps", "-1"], {2})
    opt_case("max-minutes-negative", ["--max-minutes", "-1"], {2})
    opt_case("max-minutes-nan", ["--max-minutes", "nan"], {2})
    opt_case("resume-missing", ["--resume", "/nonexistent/last.pt"], {4, 6})
    opt_case("resume-text", [], {6}, pre=lambda d, a: ["--resume", write(d / "t.pt", b"not a checkpoint")])
    opt_case("resume-empty", [], {6}, pre=lambda d, a: ["--resume", write(d / "e.pt", b"")])
    opt_case("resume-a-folder", [], {4, 6}, pre=lambda d, a: ["--resume", mkdir(d / "ck.pt")])
    opt_case("resume-auto-without-run", ["--resume", "auto"], {0, 4, 6})
    opt_case("resume-foreign-pickle", [], {6}, pre=lambda d, a: ["--resume", write(d / "p.pt", pickle.dumps({"x": 1}))])
    opt_case("ok-two-steps", ["--max-steps", "2"], {0})

    def out_case(name, where, codes):
        def mk(d, a):
            need_cache(a)
            cfg = a.write_config(d / "c.toml", {})
            return Spec(["train", "--config", cfg, "--out", where(d), "--max-steps", "1"], codes, timeout=120)
        cases.append(Case("train", "out-" + name, mk))
    out_case("under-a-file", lambda d: write(d / "f", b"x") / "run", {5})
    out_case("name-300-chars", lambda d: d / LONG, {5})
    out_case("in-proc", lambda d: Path("/proc/hs-run"), {5})
    out_case("read-only-tmpfs", lambda d: mount_tmpfs(d / "ro", "1m", ro=True) / "run", {5})
    out_case("disk-full-tmpfs", lambda d: mount_tmpfs(d / "full", "64k", fill=62 * 1024) / "run", {5})

    def sigint_train(d, a):
        need_cache(a)
        cfg = a.write_config(d / "c.toml", {"checkpoint_every": 1000})
        args = ["train", "--config", cfg, "--out", d / "run", "--max-steps", "100000"]
        h = start(args, d, log=d.parent.parent / "logs" / d.name)
        _wait_for(lambda: (d / "run" / "config.json").is_file(), 120, h[0])
        time.sleep(4)
        with contextlib.suppress(ProcessLookupError):
            os.kill(h[0].pid, signal.SIGINT)
        r1 = finish(h, 240)
        problems = ["interrupted: " + p for p in run_problems(r1, {0, 130})]
        ck = d / "run" / "checkpoints" / "last.pt"
        if not ck.is_file():
            problems.append("no checkpoint after Ctrl-C")
        r2 = run_cli(["train", "--config", cfg, "--out", d / "run", "--resume", "auto", "--max-steps", "1"], d, timeout=180)
        problems += ["resume: " + p for p in run_problems(r2, {0})]
        return problems, shlex.join(r1.argv) + " ; SIGINT ; --resume auto", r2.rc, r1.err + r2.err
    cases.append(Case("train", "sigint-then-resume-auto", sigint_train, slow=True, custom=True))
    return cases


def export_cases() -> list[Case]:
    cases = []

    def ck_case(name, make, codes):
        def mk(d, a):
            return Spec(["export", make(d, a), "-o", d / "m.onnx"], codes, outputs=[d / "m.onnx"],
                        allow=["m.appearance.onnx"] if 0 in codes else [], timeout=240)
        cases.append(Case("export", "checkpoint-" + name, mk))

    def needs(a):
        if a.checkpoint is None:
            raise Skip("needs the training fixture (not built with --quick)")
        return a.checkpoint

    def torch_save(expr):
        """A file torch.save wrote of `expr` (Python; `ck` is the fixture checkpoint, loaded)."""
        def make(d, a):
            p = d / "x.pt"
            pyrun("import torch\n"
                  f"ck = torch.load({str(a.checkpoint)!r}, map_location='cpu', weights_only=False) "
                  f"if {a.checkpoint is not None} else None\n"
                  f"obj = {expr}\n"
                  f"torch.save(obj, {str(p)!r})")
            return p
        return make

    bad_config = "dict(ck, config='not a config')"
    bad_config_types = ("dict(ck, config=dict(ck['config'], model=dict(ck['config'].get('model', {}), size='huge'))) "
                        "if isinstance(ck.get('config'), dict) else dict(ck, config={'model': {'size': 'huge'}})")
    no_weights = "{'config': ck.get('config')}"

    ck_case("missing", lambda d, a: d / "nope.pt", {4, 6})
    ck_case("empty", lambda d, a: write(d / "e.pt", b""), {6})
    ck_case("text", lambda d, a: write(d / "t.pt", b"hello\n"), {6})
    ck_case("toml", lambda d, a: write(d / "c.pt", (REPO / "configs" / "tiny.toml").read_bytes()), {6})
    ck_case("random-bytes", lambda d, a: write(d / "r.pt", os.urandom(4096)), {6})
    ck_case("zip-not-torch", lambda d, a: _zip(d / "z.pt"), {6})
    ck_case("foreign-pickle", lambda d, a: write(d / "p.pt", pickle.dumps({"x": 1})), {6})
    ck_case("a-folder", lambda d, a: mkdir(d / "ck.pt"), {4, 6})
    ck_case("name-300-chars", lambda d, a: d / (LONG + ".pt"), {4, 6})
    ck_case("onnx-file", lambda d, a: a.onnx or (_ for _ in ()).throw(Skip("no exported onnx")), {6})
    ck_case("truncated", lambda d, a: write(d / "cut.pt", needs(a).read_bytes()[: needs(a).stat().st_size // 2]), {6})
    ck_case("torch-list", torch_save("[1, 2, 3]"), {6})
    ck_case("torch-dict-of-junk", torch_save("{'model': 'x', 'config': {'size': 'big'}}"), {6})
    ck_case("config-not-a-config", lambda d, a: (needs(a), torch_save(bad_config)(d, a))[1], {0, 6})
    ck_case("config-wrong-types", lambda d, a: (needs(a), torch_save(bad_config_types)(d, a))[1], {0, 6})
    ck_case("config-without-weights", lambda d, a: (needs(a), torch_save(no_weights)(d, a))[1], {6})
    ck_case("bundled-region-checkpoint", lambda d, a: REPO / "weights" / "mouth-64.pt", {0, 6})

    def build(d, a, out, flags):
        ck = needs(a)
        rest = [f for f in flags if not f.startswith("@")]
        if "@same" in flags or "@hardlink" in flags or "@symlink" in flags:
            inp = d / "ck.pt"
            shutil.copyfile(ck, inp)
            out.unlink()
            if "@same" in flags:
                out = inp
            elif "@hardlink" in flags:
                os.link(inp, out)
            else:
                out.symlink_to(inp)
            return ["export", inp, "-o", out, *rest], [out]
        return ["export", ck, "-o", out, *rest], [out, out.with_name(out.stem + ".appearance.onnx")]
    cases += _out_cases("export", ".onnx", build, input_attr="ref", extra_codes=set())

    def opt(name, extra, codes):
        def mk(d, a):
            return Spec(["export", needs(a), "-o", d / "m.onnx", *extra], codes, outputs=[d / "m.onnx"],
                        allow=["m.appearance.onnx"] if 0 in codes else [], timeout=240)
        cases.append(Case("export", "option-" + name, mk, slow=codes == {0}))
    opt("tolerance-negative", ["--tolerance", "-1"], {2})
    opt("tolerance-nan", ["--tolerance", "nan"], {2})
    opt("tolerance-word", ["--tolerance", "x"], {2})
    opt("bad-suffix", [], {2, 5})
    cases[-1] = Case("export", "option-bad-suffix",
                     lambda d, a: Spec(["export", needs(a), "-o", d / "m.txt"], {2, 5}))
    opt("ok-fp16", ["--fp16"], {0})
    return cases


def _allow(make, globs):
    def wrapped(d, a):
        spec = make(d, a)
        spec.allow = list(spec.allow) + globs
        return spec
    return wrapped


def _zip(p: Path) -> Path:
    import zipfile
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", b"not a pickle")
    return p


# ───────────────────────────── eval, bench, info, data, live ─────────────────────────────


def eval_cases() -> list[Case]:
    cases = []

    def base(d, a):
        refs, drvs = mkdir(d / "refs"), mkdir(d / "drivers")
        shutil.copyfile(a.ref, refs / "a.jpg")
        shutil.copyfile(a.pose, drvs / "b.jpg")
        return refs, drvs, ["eval", "--refs", refs, "--drivers", drvs, "--no-fid", "--no-lpips", "--no-identity",
                            "--engines", "reference,warp"]

    def case(name, extra, codes, slow=False):
        def mk(d, a):
            refs, drvs, args = base(d, a)
            ex = extra(d, a, refs, drvs) if callable(extra) else extra
            out = d / "report"
            if "-o" not in ex:
                ex = ex + ["-o", out]
            return Spec(args + ex, codes, outputs=[out], timeout=240)
        cases.append(Case("eval", name, mk, slow=slow))

    case("ok-minimal", [], {0}, slow=False)
    case("limit-negative", ["--limit", "-5"], {2})
    case("size-17", ["--size", "17"], {2})
    case("size-0", ["--size", "0"], {2})
    case("engines-unknown", ["--engines", "magic"], {2})
    case("engines-empty", ["--engines", ""], {2})
    case("protocol-unknown", ["--protocol", "imagenet"], {2})
    case("protocol-with-missing-data", ["--protocol", "celeba-id", "--data", "/nonexistent/data"], {2, 4})
    case("protocol-data-is-a-file", lambda d, a, r, dr: ["--protocol", "clips", "--data", a.ref], {2, 4})
    case("pairs-missing", lambda d, a, r, dr: ["--pairs", d / "nope.csv"], {4})
    case("pairs-binary", lambda d, a, r, dr: ["--pairs", write(d / "p.csv", b"\xff\xfe\x00\x81" * 100)], {2, 4})
    case("pairs-empty", lambda d, a, r, dr: ["--pairs", write(d / "p.csv", b"")], {2, 4})
    case("pairs-a-folder", lambda d, a, r, dr: ["--pairs", r], {4})
    case("pairs-unbalanced-quote", lambda d, a, r, dr: ["--pairs", write(d / "p.csv", b'"a.jpg,b.jpg\n')], {2, 4})
    case("pairs-wrong-columns", lambda d, a, r, dr: ["--pairs", write(d / "p.csv", b"x,y,z,w\n1,2,3,4\n")], {2, 4})
    case("pairs-name-missing-files", lambda d, a, r, dr: ["--pairs", write(d / "p.csv", b"nope1.jpg,nope2.jpg\n")],
         {2, 4})
    case("refs-missing", lambda d, a, r, dr: ["--refs", d / "nope"], {4})
    case("refs-empty-folder", lambda d, a, r, dr: ["--refs", mkdir(d / "emptyrefs")], {0, 2, 4})  # beside refs/
    case("refs-broken-photo", lambda d, a, r, dr: ["--refs", write(d / "bad.jpg", b"x")], {0, 3, 4})
    case("weights-corrupt", lambda d, a, r, dr: ["--engines", "reference,gan", "--weights",
                                                 write(d / "w.onnx", b"garbage" * 10)], {6})
    case("weights-missing", lambda d, a, r, dr: ["--engines", "reference,gan", "--weights", d / "none.onnx"], {6})
    case("weights-crafted", lambda d, a, r, dr: ["--engines", "reference,gan", "--weights",
                                                 crafted_onnx(d, "config-not-json")], {6})
    case("mouth-weights-text", lambda d, a, r, dr: ["--engines", "reference,fusion", "--mouth-weights",
                                                    write(d / "m.onnx", b"text")], {6})
    case("k-0", ["--k", "0"], {2})
    case("k-word", ["--k", "a"], {2})
    case("k-negative", ["--k", "-1"], {2})
    case("k-empty", ["--k", ""], {0, 2})
    case("seed-word", ["--seed", "x"], {2})
    case("output-under-a-file", lambda d, a, r, dr: ["-o", write(d / "f", b"x") / "rep"], {5})
    case("output-name-300-chars", lambda d, a, r, dr: ["-o", d / LONG], {5})
    case("output-in-proc", lambda d, a, r, dr: ["-o", Path("/proc/hs-report")], {5})
    case("output-exists", lambda d, a, r, dr: ["-o", write(d / "report" / "metrics.json", b"{}").parent], {5})
    case("output-is-a-file", lambda d, a, r, dr: ["-o", write(d / "reportfile", b"precious")], {5})
    case("output-is-the-refs-folder", lambda d, a, r, dr: ["-o", r, "-y"], {5})
    case("output-is-above-the-refs", lambda d, a, r, dr: ["-o", d, "-y"], {5})
    case("output-read-only-tmpfs", lambda d, a, r, dr: ["-o", mount_tmpfs(d / "ro", "1m", ro=True) / "rep"], {5})
    case("output-disk-full-tmpfs", lambda d, a, r, dr: ["-o", mount_tmpfs(d / "full", "64k", fill=62 * 1024) / "rep"],
         {5})
    return cases


def bench_cases() -> list[Case]:
    cases = []

    def case(name, extra, codes, mem=False, slow=False, outputs=()):
        def mk(d, a):
            ex = extra(d, a) if callable(extra) else list(extra)
            args = ["bench", "--engines", "warp", "--scenarios", "256", "--frames", "4", "--repeats", "1"]
            for flag in ("--ref", "--driver"):
                if flag not in ex:
                    args += [flag, a.ref if flag == "--ref" else a.short]
            return Spec(args + ex, codes, mem_mb=BOMB_MB if mem else None, timeout=300,
                        outputs=[d / o for o in outputs])
        cases.append(Case("bench", name, mk, slow=slow))

    case("repeats-negative", ["--repeats", "-1"], {2})
    case("repeats-0", ["--repeats", "0"], {2})
    case("frames-0", ["--frames", "0"], {2})
    case("frames-negative", ["--frames", "-3"], {2})
    case("frames-absurd", ["--frames", "10000000000000000000000"], {0, 2})  # all the driver has
    case("scenarios-unknown", ["--scenarios", "8k"], {2})
    case("scenarios-empty", ["--scenarios", ""], {2})
    case("engines-unknown", ["--engines", "magic"], {2})
    imgs, vids = image_inputs(), video_inputs()
    for name in ("missing", "empty", "text-as-jpg", "bomb-png-30000sq", "20000x1", "no-face", "name-300-chars",
                 "fifo"):
        make, pcodes, _, mem = imgs[name]
        case("ref-" + name, lambda d, a, make=make: ["--ref", make(d, a)], pcodes - {0} or {3}, mem=mem)
    for name in ("missing", "empty", "audio-only", "zero-frames", "bomb-video-8200sq", "truncated-mp4", "no-face-video",
                 "photo-as-driver"):
        make, codes, _ = vids[name]
        case("driver-" + name, lambda d, a, make=make: ["--driver", make(d, a)],
             ({0, 3, 4} if name in ("truncated-mp4", "photo-as-driver", "no-face-video") else codes),
             mem="bomb" in name)
    case("json-under-a-file", lambda d, a: ["--json", write(d / "f", b"x") / "b.json"], {5})
    case("json-name-300-chars", lambda d, a: ["--json", d / (LONG + ".json")], {5})
    case("json-in-proc", lambda d, a: ["--json", "/proc/hs-bench.json"], {5})
    case("json-missing-folder", lambda d, a: ["--json", d / "nope" / "b.json"], {5})
    case("json-is-a-folder", lambda d, a: ["--json", mkdir(d / "b.json")], {5})
    case("json-is-the-ref", lambda d, a: ["--ref", shutil.copyfile(a.ref, d / "r.jpg"), "--json", d / "r.jpg"], {5})
    case("ok-quick", lambda d, a: ["--json", d / "b.json"], {0}, slow=True, outputs=["b.json"])
    return cases


def info_cases() -> list[Case]:
    def c(name, args, codes, env=None):
        return Case("info", name, lambda d, a: Spec(args, codes, env=env or {}, help_exit=args in ([], ["data"])))
    return [
        c("plain", ["info"], {0}), c("unexpected-argument", ["info", "extra"], {2}), c("unknown-option", ["info", "--x"], {2}),
        c("ffmpeg-env-false", ["info"], {0, 1}, {"IMAGEIO_FFMPEG_EXE": "/bin/false"}),
        c("home-missing", ["info"], {0}, {"HOME": "/nonexistent", "XDG_CACHE_HOME": "/nonexistent/cache"}),
        c("max-pixels-env-word", ["info"], {0, 2}, {"REENACT_MAX_PIXELS": "lots"}),
        c("unknown-command", ["frobnicate"], {2}), c("no-command", [], {0, 2}), c("version", ["--version"], {0}),
        c("debug-flag-ok", ["--debug", "info"], {0}), c("help", ["--help"], {0}),
        c("image-no-arguments", ["image"], {2}), c("video-one-argument", ["video", "a.jpg"], {2}),
        c("data-no-subcommand", ["data"], {0, 2}), c("data-unknown-subcommand", ["data", "frob"], {2}),
    ]


def data_cases() -> list[Case]:
    cases = []

    def src(d, a, extra_files=()):
        s = mkdir(d / "photos")
        shutil.copyfile(a.ref, s / "a.jpg")
        shutil.copyfile(a.pose, s / "b.jpg")
        for n, data in extra_files:
            write(s / n, data)
        return s

    def case(name, make, codes, slow=False):
        def mk(d, a):
            args = make(d, a)
            if "-o" not in args:
                args += ["-o", d / "cache"]
            out = Path(str(args[args.index("-o") + 1]))
            return Spec(["data", "prepare", *args, "--split", "all"] if "--split" not in args else
                        ["data", "prepare", *args], codes, outputs=[out], timeout=180)
        cases.append(Case("data", name, mk, slow=slow))

    case("ok", lambda d, a: [src(d, a)], {0})
    case("ok-with-broken-photos", lambda d, a: [src(d, a, [("x.jpg", b"broken"), ("e.jpg", b""),
                                                              ("g.png", png_bytes(30000, 30000))])], {0})
    case("source-missing", lambda d, a: [d / "nope"], {4})
    case("source-is-a-file", lambda d, a: [a.ref], {4})
    case("source-empty", lambda d, a: [mkdir(d / "photos")], {2, 3, 4})
    case("source-only-broken", lambda d, a: [write(d / "photos" / "x.jpg", b"broken").parent], {3, 4})
    case("source-only-no-face", lambda d, a: [write(d / "photos" / "g.png", a.encode(
        ".png", a.np.full((64, 64, 3), 120, a.np.uint8))).parent], {3, 4})
    case("identities-missing", lambda d, a: [src(d, a), "--identities", d / "nope.csv"], {4})
    case("identities-binary", lambda d, a: [src(d, a), "--identities", write(d / "i.csv", b"\xff\x00" * 50)], {2, 4})
    case("identities-unbalanced-quote", lambda d, a: [src(d, a), "--identities", write(d / "i.csv", b'file,identity\n"a.jpg,1\n')], {2, 4})
    case("identities-wrong-columns", lambda d, a: [src(d, a), "--identities", write(d / "i.csv", b"x,y\n1,2\n")], {2, 4})
    case("identities-word-id", lambda d, a: [src(d, a), "--identities",
                                             write(d / "i.csv", b"file,identity,split\na.jpg,bob,train\n")], {0, 2, 4})
    case("split-unknown", lambda d, a: [src(d, a), "--identities",
                                        write(d / "i.csv", b"file,identity,split\na.jpg,1,train\n"), "--split", "nope"],
         {2, 4})
    case("size-0", lambda d, a: [src(d, a), "--size", "0"], {2})
    case("size-17", lambda d, a: [src(d, a), "--size", "17"], {2})
    case("size-absurd", lambda d, a: [src(d, a), "--size", "100000"], {2})
    case("quality-10", lambda d, a: [src(d, a), "--quality", "10"], {2})
    case("limit-0", lambda d, a: [src(d, a), "--limit", "0"], {2})
    case("output-exists-not-empty", lambda d, a: [src(d, a), "-o", write(d / "cache" / "keep.txt", b"x").parent], {5})
    case("output-exists-empty", lambda d, a: [src(d, a), "-o", mkdir(d / "cache")], {0})
    case("output-under-a-file", lambda d, a: [src(d, a), "-o", write(d / "f", b"x") / "c"], {5})
    case("output-name-300-chars", lambda d, a: [src(d, a), "-o", d / LONG], {5})
    case("output-in-proc", lambda d, a: [src(d, a), "-o", "/proc/hs-cache"], {5})
    case("output-is-the-source", lambda d, a: [src(d, a), "-o", d / "photos"], {5})
    case("output-inside-the-source", lambda d, a: [src(d, a), "-o", d / "photos" / "cache"], {0, 5})
    case("output-read-only-tmpfs", lambda d, a: [src(d, a), "-o", mount_tmpfs(d / "ro", "1m", ro=True) / "c"], {5})
    case("output-disk-full-tmpfs", lambda d, a: [src(d, a), "-o", mount_tmpfs(d / "full", "64k", fill=62 * 1024) / "c"],
         {5})
    return cases


def live_cases() -> list[Case]:
    cases = []

    def case(name, make, codes, timeout=90, slow=False):
        def mk(d, a):
            args, outputs = make(d, a)
            return Spec(["live", *args], codes, outputs=outputs, timeout=timeout,
                        mem_mb=BOMB_MB if "bomb" in name else None)
        cases.append(Case("live", name, mk, slow=slow))

    def src(p, *extra, ref=None, out=True):
        def make(d, a):
            o = d / "rec.mp4"
            s = p(d, a) if callable(p) else p
            args = [ref(d, a) if ref else a.ref, "--no-window", "--max-frames", "5", "--engine", "warp", *extra]
            if s is not None:
                args += ["--source", s]
            return (args + (["-o", o] if out else [])), [o] if out else []
        return make

    case("ok-recording", src(lambda d, a: a.short), {0})
    case("ok-frame-folder", src(lambda d, a: a.frames_dir), {0})
    case("ok-no-output", src(lambda d, a: a.short, out=False), {0})
    vids = video_inputs()
    for name in ("missing", "empty", "text-as-jpg", "truncated-mp4", "mp4-header-only", "audio-only", "zero-frames",
                 "empty-frame-folder", "bomb-video-8200sq", "no-face-video", "fifo", "name-300-chars", "photo-as-driver",
                 "dangling-link", "8000x2-video"):
        make, codes, _ = vids[name]
        if name in ("truncated-mp4", "photo-as-driver"):
            codes = {0, 3, 4}
        if name in ("no-face-video", "8000x2-video"):
            codes = {0, 3, 4}  # live passes frames without a face through
        case("source-" + name, src(make), codes)
    case("source-unreachable-stream", src("rtsp://127.0.0.1:9/none"), {1, 4}, timeout=60)
    case("source-bogus-url", src("http://[::1"), {1, 2, 4}, timeout=60)
    case("no-camera", src(None), {1, 4}, timeout=60)
    case("camera-negative", src(None, "--camera", "-1"), {1, 2, 4}, timeout=60)
    case("max-frames-0", src(lambda d, a: a.short, "--max-frames", "0"), {2})
    case("size-17", src(lambda d, a: a.short, "--size", "17"), {2})
    case("motion-unknown", src(lambda d, a: a.short, "--motion", "x"), {2})
    case("engine-unknown", src(lambda d, a: a.short, "--engine", "x"), {2})
    case("virtual-camera-without-extra", src(lambda d, a: a.short, "--virtual-camera"), {0, 1, 2})
    case("window-without-display", lambda d, a: ([a.ref, "--source", a.short, "--max-frames", "3", "--engine", "warp"],
                                                 []), {0, 1, 2}, timeout=60)
    imgs = image_inputs()
    for name in ("missing", "empty", "text-as-jpg", "bomb-png-30000sq", "20000x1", "no-face", "name-300-chars", "fifo"):
        make, pcodes, _, mem = imgs[name]
        case("reference-" + name, src(lambda d, a: a.short, ref=make), pcodes)

    def out(name, where, codes, pre=None):
        def make(d, a):
            o = where(d, a)
            args = [a.ref, "--no-window", "--max-frames", "5", "--engine", "warp", "--source", a.short, "-o", o]
            if pre:
                args = pre(d, a, args, o)
            return args, [o]
        case("output-" + name, make, codes)
    out("bad-suffix", lambda d, a: d / "rec.txt", {2, 5})
    out("exists", lambda d, a: write(d / "rec.mp4", b"precious"), {5})
    out("under-a-file", lambda d, a: write(d / "f", b"x") / "rec.mp4", {5})
    out("name-300-chars", lambda d, a: d / (LONG + ".mp4"), {5})
    out("in-proc", lambda d, a: Path("/proc/hs-rec.mp4"), {5})
    out("missing-folder", lambda d, a: d / "nope" / "rec.mp4", {5})

    def same_as_source(d, a, args, o):
        shutil.copyfile(a.short, o)
        args[args.index("--source") + 1] = o
        return args + ["-y"]
    out("is-the-source", lambda d, a: d / "src.mp4", {5}, pre=same_as_source)
    out("read-only-tmpfs", lambda d, a: mount_tmpfs(d / "ro", "1m", ro=True) / "rec.mp4", {5})
    out("disk-full-tmpfs", lambda d, a: mount_tmpfs(d / "full", "64k", fill=62 * 1024) / "rec.mp4", {5})
    cases.append(Case("live", "sigint-while-recording", live_sigint, slow=True, custom=True))
    return cases


def all_cases() -> list[Case]:
    cases = (image_cases() + landmarks_cases() + video_cases() + batch_cases() + train_cases() + export_cases()
             + eval_cases() + bench_cases() + info_cases() + data_cases() + live_cases())
    cases.append(Case("image", "three-runs-on-one-output", concurrent_image, custom=True))
    names = [(c.command, c.name) for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"duplicate case names: {dup}"
    return cases


# ───────────────────────────── main ─────────────────────────────


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated commands (image, video, batch, train, export, eval, bench, info, "
                                   "landmarks, live, data)")
    ap.add_argument("--case", help="run only cases whose name contains this text (comma-separated: any of them)")
    ap.add_argument("--quick", action="store_true", help="skip the slow cases (signals, long renders, training)")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    ap.add_argument("--json", type=Path, help="write every result to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    args = ap.parse_args(argv)

    cases = all_cases()
    if args.only:
        keep = {c.strip() for c in args.only.split(",")}
        unknown = keep - {c.command for c in cases}
        if unknown:
            ap.error(f"no such command: {', '.join(sorted(unknown))}")
        cases = [c for c in cases if c.command in keep]
    if args.case:
        cases = [c for c in cases if any(t and t in c.name for t in args.case.split(","))]
    if args.quick:
        cases = [c for c in cases if not c.slow]
    if args.list:
        for c in cases:
            print(f"{c.command:10} {c.name}{'  (slow)' if c.slow else ''}")
        print(f"{len(cases)} cases")
        return 0

    root = Path(tempfile.mkdtemp(prefix="reenact-hostile-"))
    t0 = time.monotonic()
    print(f"{len(cases)} cases, work folder {root}", flush=True)
    needs_training = not args.quick and any(c.command in ("train", "export") for c in cases)
    assets = Assets(root, quick=not needs_training)
    print(f"assets ready in {time.monotonic() - t0:.0f} s", flush=True)
    results: list[Result] = []
    try:
        # the timing-sensitive cases (signals, concurrent runs) run alone, after the others
        plain = [c for c in cases if not c.custom]
        custom = [c for c in cases if c.custom]
        with cf.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = {pool.submit(execute, c, root, assets): c for c in plain}
            for f in cf.as_completed(futures):
                results.append(_report(f.result(), len(results) + 1, len(cases)))
        for c in custom:
            results.append(_report(execute(c, root, assets), len(results) + 1, len(cases)))
    except KeyboardInterrupt:
        print("interrupted: partial results", flush=True)
    finally:
        with _mount_lock:
            for m in list(_mounts):
                subprocess.run(["umount", "-l", str(m)], capture_output=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    wall = time.monotonic() - t0
    return summarise(results, wall, args.json, root if args.keep else None)


def _report(r: Result, i: int, n: int) -> Result:
    mark = {"clean": "ok  ", "failed": "FAIL", "skipped": "skip"}[r.status]
    print(f"[{i:3}/{n}] {mark} {r.command:9} {r.name:45} exit {r.rc!s:4} {r.seconds:5.1f} s {r.maxrss_mb:6.0f} MB",
          flush=True)
    return r


def summarise(results: list[Result], wall: float, json_path: Path | None, kept: Path | None) -> int:
    order = sorted({r.command for r in results})
    print("\n{:<10} {:>6} {:>6} {:>7} {:>8}".format("command", "cases", "clean", "failed", "skipped"))
    tot = [0, 0, 0, 0]
    for c in order:
        rs = [r for r in results if r.command == c]
        row = [len(rs), sum(r.status == "clean" for r in rs), sum(r.status == "failed" for r in rs),
               sum(r.status == "skipped" for r in rs)]
        tot = [x + y for x, y in zip(tot, row)]
        print("{:<10} {:>6} {:>6} {:>7} {:>8}".format(c, *row))
    print("{:<10} {:>6} {:>6} {:>7} {:>8}".format("total", *tot))
    print(f"wall time {wall / 60:.1f} min")
    for r in sorted(results, key=lambda r: (r.command, r.name)):
        if r.status == "skipped":
            print(f"skipped {r.command} {r.name}: {r.problems[0]}")
    failed = [r for r in results if r.status == "failed"]
    for r in sorted(failed, key=lambda r: (r.command, r.name)):
        print(f"\nFAILED {r.command} / {r.name}: " + "; ".join(r.problems))
        if r.argv:
            print(f"  $ python -m {r.argv[:500]}")
        if r.stderr_head:
            print("  | " + r.stderr_head.replace("\n", "\n  | "))
    if json_path:
        json_path.write_text(json.dumps({"wall_seconds": round(wall, 1), "totals": dict(zip(
            ("cases", "clean", "failed", "skipped"), tot)), "results": [dataclasses.asdict(r) for r in results]},
            indent=1))
        print(f"\nresults: {json_path}")
    if kept:
        print(f"kept: {kept}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
