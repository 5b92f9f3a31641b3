"""Hostile inputs for every command: the exit code is a documented one, no traceback is printed,
no file is left behind and no input is changed (issue 12).

Every hostile file is generated here, in tmp_path (nothing large is committed). Commands run
in-process through Typer's CliRunner, so the suite stays fast; full disks, read-only folders
and a second concurrent run are simulated by monkeypatching or by holding the lock ourselves.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import functools
import hashlib
import json
import os
import signal
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from reenact import media, resume
from reenact.cli import app
from tests.conftest import REPO

EXAMPLES = REPO / "examples"
DOCUMENTED = {1, 2, 3, 4, 5, 6, 130}
LONG = "n" * 300  # over every file system's 255-byte name limit


# ───────────────────────────── running and checking ─────────────────────────────


def invoke(*args, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=True)


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under `folders` (hidden ones included) → sha256 of its bytes."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif p.is_symlink() or p.is_dir():
                out[str(p)] = "link" if p.is_symlink() else "dir"
    return out


def assert_clean(r, codes: set[int] | int, *words: str) -> str:
    """A documented exit code from `codes`, one `error:` line, no traceback; returns the text."""
    codes = {codes} if isinstance(codes, int) else codes
    text = r.output + (r.stderr if r.stderr_bytes is not None and r.stderr not in r.output else "")
    assert r.exception is None or isinstance(r.exception, SystemExit), (r.exception, text)
    assert r.exit_code in codes and r.exit_code in DOCUMENTED, (r.exit_code, text)
    assert "Traceback" not in text and "error:" in text, text
    for w in words:
        assert w.lower() in text.lower(), (w, text)
    return text


def run_hostile(tmp_path: Path, args: list, codes: set[int] | int, *words: str) -> str:
    """Run, check the exit, and that tmp_path holds exactly the files it held before."""
    before = snapshot(tmp_path)
    text = assert_clean(invoke(*args), codes, *words)
    assert snapshot(tmp_path) == before, "a file was left behind or an input changed"
    return text


# ───────────────────────────── hostile files ─────────────────────────────


@functools.lru_cache(maxsize=4)
def png_bytes(w: int, h: int) -> bytes:
    """A valid greyscale PNG of w×h zeros, compressed as it is built (a 30000² one is 0.9 MB)."""
    z = zlib.compressobj(9)
    row = bytes(w + 1)
    body = b"".join(z.compress(row) for _ in range(h)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _encode(suffix: str, img: np.ndarray) -> bytes:
    return cv2.imencode(suffix, img)[1].tobytes()


# name → (how to make it in a folder, exit codes an image input may give)
def _hostile_images() -> dict:
    jpg = (EXAMPLES / "ref.jpg").read_bytes()
    mp4 = (EXAMPLES / "drive.mp4").read_bytes()
    return {
        "missing": (lambda d: d / "missing.jpg", {4}),
        "folder-named-jpg": (lambda d: _mkdir(d / "folder.jpg"), {2, 3, 4}),
        "empty": (lambda d: _write(d / "empty.jpg", b""), {4}),
        "text": (lambda d: _write(d / "notes.jpg", b"hello, this is not a photo\n" * 20), {4}),
        "truncated-jpeg": (lambda d: _write(d / "cut.jpg", jpg[: len(jpg) // 3]), {3, 4}),
        "header-only-jpeg": (lambda d: _write(d / "head.jpg", jpg[:300]), {4}),
        "random-bytes": (lambda d: _write(d / "noise.png", np.random.default_rng(1).bytes(5000)), {4}),
        "video-named-jpg": (lambda d: _write(d / "clip.jpg", mp4[:200_000]), {4}),
        "gif": (lambda d: _write(d / "anim.jpg", b"GIF89a" + bytes(100)), {4}),
        "name-too-long": (lambda d: d / f"{LONG}.jpg", {4}),
        "decompression-bomb": (lambda d: _write(d / "bomb.png", png_bytes(30000, 30000)), {4}),
        "20000x1": (lambda d: _write(d / "thin.png", _encode(".png", np.full((1, 20000, 3), 90, np.uint8))), {3}),
        "16x90000": (lambda d: _write(d / "strip.png", _encode(".png", np.full((16, 90000, 3), 90, np.uint8))), {3}),
        "8x8": (lambda d: _write(d / "tiny.png", _encode(".png", np.zeros((8, 8, 3), np.uint8))), {3}),
        "zero-width-png": (lambda d: _write(d / "zero.png", png_bytes(1, 1).replace(
            struct.pack(">II", 1, 1), struct.pack(">II", 0, 1), 1)), {4}),
        "no-face": (lambda d: _write(d / "grey.png", _encode(".png", np.full((64, 64, 3), 128, np.uint8))), {3}),
        "dangling-link": (lambda d: _link(d / "dangling.jpg", d / "nowhere.jpg"), {4}),
        "link-loop": (lambda d: _loop(d), {4}),
    }


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def _link(p: Path, target: Path) -> Path:
    p.symlink_to(target)
    return p


def _loop(d: Path) -> Path:
    (d / "loop-a.jpg").symlink_to(d / "loop-b.jpg")
    (d / "loop-b.jpg").symlink_to(d / "loop-a.jpg")
    return d / "loop-a.jpg"


HOSTILE_IMAGES = _hostile_images()


def _hostile_videos() -> dict:
    mp4 = (EXAMPLES / "drive.mp4").read_bytes()
    # (a video named .jpg is a valid driver: the content decides)
    cases = {k: v for k, v in HOSTILE_IMAGES.items() if k not in ("no-face", "folder-named-jpg", "video-named-jpg")}
    cases.update({k: (HOSTILE_IMAGES[k][0], {4}) for k in ("20000x1", "16x90000", "8x8")})  # photos, not videos
    cases.update({
        "truncated-mp4": (lambda d: _write(d / "cut.mp4", mp4[: len(mp4) // 2]), {4}),
        "mp4-header-only": (lambda d: _write(d / "head.mp4", mp4[:64]), {4}),
        "empty-frame-folder": (lambda d: _mkdir(d / "frames"), {4}),
        "missing-mp4": (lambda d: d / "typo.mp4", {4}),
        "photo-as-driver": (lambda d: _write(d / "still.png", _encode(".png", np.full((64, 64, 3), 128, np.uint8))),
                            {2, 3, 4}),
    })
    return cases


HOSTILE_VIDEOS = _hostile_videos()


# ───────────────────────────── inputs: image, landmarks, video ─────────────────────────────


@pytest.mark.parametrize("case", sorted(HOSTILE_IMAGES))
def test_image_with_a_hostile_pose(tmp_path, case):
    make, codes = HOSTILE_IMAGES[case]
    run_hostile(tmp_path, ["image", EXAMPLES / "ref.jpg", make(tmp_path), "-o", tmp_path / "out.png"], codes)


@pytest.mark.parametrize("case", sorted(HOSTILE_IMAGES))
def test_image_with_a_hostile_reference(tmp_path, case):
    make, codes = HOSTILE_IMAGES[case]
    run_hostile(tmp_path, ["image", make(tmp_path), EXAMPLES / "pose.jpg", "-o", tmp_path / "out.png"], codes)


@pytest.mark.parametrize("case", sorted(HOSTILE_IMAGES))
def test_landmarks_of_a_hostile_photo(tmp_path, case):
    make, codes = HOSTILE_IMAGES[case]
    run_hostile(tmp_path, ["landmarks", make(tmp_path), "-o", tmp_path / "l.png"], codes)


@pytest.mark.parametrize("case", sorted(HOSTILE_VIDEOS))
def test_video_with_a_hostile_driver(tmp_path, case):
    make, codes = HOSTILE_VIDEOS[case]
    run_hostile(tmp_path, ["video", EXAMPLES / "ref.jpg", make(tmp_path), "-o", tmp_path / "out.mp4"], codes)


@pytest.mark.parametrize("case", ["missing", "empty", "text", "name-too-long", "decompression-bomb", "20000x1",
                                  "no-face", "dangling-link"])
def test_video_with_a_hostile_reference(tmp_path, case):
    make, codes = HOSTILE_IMAGES[case]
    run_hostile(tmp_path, ["video", make(tmp_path), EXAMPLES / "drive.mp4", "-o", tmp_path / "out.mp4"], codes)


def test_missing_driver_says_no_such_file(tmp_path):
    """Cause 1: `reenact video ref.jpg typo.mp4` printed a traceback."""
    text = run_hostile(tmp_path, ["video", EXAMPLES / "ref.jpg", tmp_path / "typo.mp4", "-o", tmp_path / "o.mp4"],
                       4, "typo.mp4")
    assert "no such file" in text.lower()


def test_decompression_bomb_is_refused_from_the_header_with_the_limit(tmp_path, monkeypatch):
    """Cause 11: refused before decoding (the limit is in the message, REENACT_MAX_PIXELS moves it)."""
    bomb = _write(tmp_path / "bomb.png", png_bytes(30000, 30000))
    decoded = []
    monkeypatch.setattr(media, "_decode", lambda *a: decoded.append(a))
    text = run_hostile(tmp_path, ["landmarks", bomb, "-o", tmp_path / "l.png"], 4, "64 MP", "REENACT_MAX_PIXELS")
    assert not decoded and "30000×30000" in text
    small = _write(tmp_path / "small.png", _encode(".png", np.zeros((100, 100, 3), np.uint8)))
    monkeypatch.setenv("REENACT_MAX_PIXELS", "5000")
    run_hostile(tmp_path, ["landmarks", small, "-o", tmp_path / "l.png"], 4, "above the limit")


@pytest.mark.parametrize("suffix,params", [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                                           (".webp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
                                           (".bmp", []), (".tiff", [])])
def test_header_size_matches_the_decoder(suffix, params):
    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
    data = cv2.imencode(suffix, img, params)[1].tobytes()
    assert media.image_size(data, media._sniff(data[:64])) == (53, 37)


# ───────────────────────────── outputs ─────────────────────────────


@pytest.mark.parametrize("command", ["image", "video", "landmarks"])
@pytest.mark.parametrize("case", ["name-too-long", "missing-folder", "is-a-folder", "bad-suffix", "exists"])
def test_hostile_outputs(tmp_path, command, case):
    suffix = ".mp4" if command == "video" else ".png"
    out = {"name-too-long": tmp_path / f"{LONG}{suffix}", "missing-folder": tmp_path / "no" / f"o{suffix}",
           "is-a-folder": _mkdir(tmp_path / f"dir{suffix}"), "bad-suffix": tmp_path / "o.txt",
           "exists": _write(tmp_path / f"old{suffix}", b"precious")}[case]
    inputs = {"image": [EXAMPLES / "ref.jpg", EXAMPLES / "pose.jpg"], "video": [EXAMPLES / "ref.jpg", EXAMPLES / "drive.mp4"],
              "landmarks": [EXAMPLES / "ref.jpg"]}[command]
    run_hostile(tmp_path, [command, *inputs, "-o", out], 5)


def test_default_output_from_a_too_long_input_name_blames_the_input(tmp_path):
    """Cause 2: a 300-character reference name (so the default output name is too long too)."""
    long_ref = tmp_path / f"{LONG}.jpg"
    run_hostile(tmp_path, ["image", long_ref, EXAMPLES / "pose.jpg"], 4, "too long")


@pytest.mark.parametrize("command", ["image", "video", "landmarks"])
@pytest.mark.parametrize("how", ["same-path", "other-spelling", "hard-link", "symlink"])
def test_output_is_never_an_input(tmp_path, command, how):
    """Cause 12: `-o` naming an input with --overwrite replaced the input with the result."""
    ref = _write(tmp_path / "ref.jpg", (EXAMPLES / "ref.jpg").read_bytes())
    drv = _write(tmp_path / "drv.mp4", (EXAMPLES / "drive.mp4").read_bytes())
    victim = drv if command == "video" else ref
    out = {"same-path": victim, "other-spelling": tmp_path / "." / "sub" / ".." / victim.name,
           "hard-link": tmp_path / f"linked{victim.suffix}", "symlink": tmp_path / f"soft{victim.suffix}"}[how]
    if how == "other-spelling":
        (tmp_path / "sub").mkdir()
    elif how == "hard-link":
        os.link(victim, out)
    elif how == "symlink":
        out.symlink_to(victim)
    args = {"image": [ref, EXAMPLES / "pose.jpg"], "video": [ref, drv], "landmarks": [ref]}[command]
    run_hostile(tmp_path, [command, *args, "-o", out, "--overwrite"], 5, "input")


# ───────────────────────────── full disks, locks, work folders ─────────────────────────────


def _video_args(tmp_path: Path, *extra) -> list:
    return ["video", EXAMPLES / "ref.jpg", EXAMPLES / "drive.mp4", "-o", tmp_path / "o.mp4", "--size", "128",
            "--max-side", "256", "--chunk-frames", "40", *extra]


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/somewhere/on/the/disk")


@pytest.mark.parametrize("where", ["state", "join"])
def test_disk_full_keeps_the_work_folder_for_resume(tmp_path, monkeypatch, where):
    """Cause 3: ENOSPC while saving the state after a chunk, or right before the final join."""
    from reenact import video

    if where == "state":
        real = resume.WorkDir.mark_chunk
        monkeypatch.setattr(resume.WorkDir, "mark_chunk",
                            lambda self, k: real(self, k) if k == 0 else _enospc())
    else:
        monkeypatch.setattr(video.media, "concat_videos", _enospc)
    text = assert_clean(invoke(*_video_args(tmp_path)), 5, "no space left", "--resume")
    assert "Traceback" not in text
    work = resume.work_dir_for(tmp_path / "o.mp4")
    assert work.is_dir() and not (tmp_path / "o.mp4").exists()
    monkeypatch.undo()
    r = invoke(*_video_args(tmp_path, "--resume"))
    assert r.exit_code == 0, r.output
    assert "already rendered" in r.output and not work.exists() and (tmp_path / "o.mp4").is_file()


def test_second_run_on_a_locked_work_folder_exits_5_and_deletes_nothing(tmp_path):
    """Cause 13: a second run (--resume or --overwrite) deleted the first one's segments."""
    out = tmp_path / "o.mp4"
    first = resume.WorkDir.open(out, job="x", inputs={}, chunk=40, resume=False, overwrite=False)
    (first.path / "part-00000.mp4").write_bytes(b"segment of the first run")
    try:
        for flag in ("--resume", "--overwrite"):
            before = snapshot(tmp_path)
            assert_clean(invoke(*_video_args(tmp_path, flag)), 5, "in use by another run")
            assert snapshot(tmp_path) == before
    finally:
        first.release()
    again = resume.WorkDir.open(out, job="x", inputs={}, chunk=40, resume=True, overwrite=False)
    again.remove()  # the lock went with the first holder


@pytest.mark.parametrize("damage", ["file-in-its-place", "state-wrong-types", "state-not-json", "state-track-bad"])
def test_damaged_work_folder(tmp_path, damage):
    """Cause 14: --resume exits 5 with a hint; --overwrite starts clean."""
    work = resume.work_dir_for(tmp_path / "o.mp4")
    if damage == "file-in-its-place":
        _write(work, b"not a folder")
    else:
        work.mkdir()
        state = {"job": "j", "inputs": {}, "chunk": "forty", "chunks_done": "all"}
        if damage == "state-track-bad":
            state = {"job": "j", "inputs": {}, "chunk": 40, "track": {"frames": "many"}}
        _write(work / "state.json", b"\x00\xff" if damage == "state-not-json" else json.dumps(state).encode())
    before = snapshot(tmp_path)
    assert_clean(invoke(*_video_args(tmp_path, "--resume")), 5, "--overwrite")
    assert snapshot(tmp_path) == before
    r = invoke(*_video_args(tmp_path, "--overwrite"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o.mp4").is_file() and not work.exists()


# ───────────────────────────── batch ─────────────────────────────


def _csv(tmp_path: Path, text: str) -> Path:
    return _write(tmp_path / "jobs.csv", text.encode())


@pytest.mark.parametrize("case,codes", [
    ("unbalanced-quote-in-csv", 2), ("unbalanced-quote-in-job-options", 2), ("duplicate-outputs", 2),
    ("duplicate-outputs-other-spelling", 2), ("binary-csv", 4), ("missing-csv", 4), ("empty-csv", 2),
    ("bad-job-option", 2), ("unwritable-output-folder", 5), ("output-is-a-file", 5),
])
def test_batch_refuses_before_any_work(tmp_path, monkeypatch, case, codes):
    """Cause 6: tracebacks on quotes and unwritable folders; duplicate outputs lost a result."""
    ref, pose = EXAMPLES / "ref.jpg", EXAMPLES / "pose.jpg"
    out = tmp_path / "out"
    args = ["batch", tmp_path / "jobs.csv", "-o", out, "--overwrite"]
    rows = {"unbalanced-quote-in-csv": f'{ref},{pose},a.png,"--face ""0"\n',
            "duplicate-outputs": f"{ref},{pose},same.png\n{ref},{ref},same.png\n",
            "duplicate-outputs-other-spelling": f"{ref},{pose},same.png\n{ref},{ref},./x/../same.png\n",
            "empty-csv": "# nothing\n"}
    if case in rows:
        _csv(tmp_path, rows[case])
    elif case == "binary-csv":
        _write(tmp_path / "jobs.csv", b"\x89PNG\xff\xfe\x00\x00" * 50)
    elif case == "missing-csv":
        args[1] = tmp_path / "nope.csv"
    else:
        _csv(tmp_path, f"{ref},{pose},a.png\n")
        if case == "unbalanced-quote-in-job-options":
            args += ["--job-options", "--face 'largest"]
        elif case == "bad-job-option":
            args += ["--job-options", "--no-such-option"]
        elif case == "output-is-a-file":
            _write(out, b"a file")
        else:
            import tempfile
            monkeypatch.setattr(tempfile, "mkstemp", lambda **kw: (_ for _ in ()).throw(
                OSError(errno.EROFS, os.strerror(errno.EROFS), kw.get("dir"))))
    run_hostile(tmp_path, args, codes)


# ───────────────────────────── train configs ─────────────────────────────


@pytest.mark.parametrize("toml,key", [
    ('batch_size = "eight"', "batch_size"), ('lr_g = "fast"', "lr_g"), ('threads = "many"', "threads"),
    ("mask_losses = 1", "mask_losses"), ('seed = 1.5', "seed"), ("[data]\nworkers = \"two\"", "data.workers"),
    ("[data]\nsource = 5", "data.source"), ("[model]\nsize = \"big\"", "model.size"),
    ("[losses]\nl1 = \"heavy\"", "losses.l1"), ("[discriminator]\nscales = [1, 2]", "discriminator.scales"),
    ("model = 3", "model"), ("nonsense_key = 1", "nonsense_key"), ("[model]\nsize = 100", "size"),
])
def test_train_config_values_of_the_wrong_type(tmp_path, monkeypatch, toml, key):
    """Cause 5: exit 2 before any work, naming the key and the file."""
    from reenact.train import cache

    monkeypatch.setattr(cache, "ensure_cache", lambda *a, **k: pytest.fail("work started"))
    cfg = _write(tmp_path / "bad.toml", toml.encode())
    run_hostile(tmp_path, ["train", "--config", cfg, "--out", tmp_path / "run"], 2, key, "bad.toml")


@pytest.mark.parametrize("case,code", [("binary", 2), ("not-toml", 2), ("missing", 4), ("folder", 4),
                                       ("name-too-long", 4)])
def test_train_config_file_unreadable(tmp_path, case, code):
    """A file that is not TOML is a usage error (2); one that cannot be read is a missing input (4,
    as for every command: README's table)."""
    path = {"binary": lambda: _write(tmp_path / "c.toml", bytes(range(256)) * 4), "missing": lambda: tmp_path / "n.toml",
            "folder": lambda: _mkdir(tmp_path / "c.toml"), "not-toml": lambda: _write(tmp_path / "c.toml", b"[[["),
            "name-too-long": lambda: tmp_path / f"{LONG}.toml"}[case]()
    run_hostile(tmp_path, ["train", "--config", path, "--out", tmp_path / "run"], code)


@dataclasses.dataclass
class _Inner:
    rate: float = 1.0


@dataclasses.dataclass
class _Outer:
    n: int = 1
    name: str | None = None
    sizes: tuple[int, ...] = ()
    inner: _Inner = dataclasses.field(default_factory=_Inner)


def test_type_check_follows_the_dataclass_annotations():
    from reenact.validate import type_problem

    Outer = _Outer
    assert type_problem(Outer, {"n": 2, "name": None, "sizes": [1, 2], "inner": {"rate": 3}}) is None
    assert "inner.rate" in type_problem(Outer, {"inner": {"rate": "x"}})
    assert "n must be an integer" in type_problem(Outer, {"n": True})
    assert "sizes" in type_problem(Outer, {"sizes": [1, "2"]})
    assert "name" in type_problem(Outer, {"name": 3})


# ───────────────────────────── export and checkpoints ─────────────────────────────


def _checkpoints(d: Path) -> dict:
    import torch

    def save(name: str, payload) -> Path:
        torch.save(payload, d / name)
        return d / name

    head = {"format": "reenact-train-checkpoint", "version": 1, "step": 1}
    return {
        "empty": lambda: _write(d / "empty.pt", b""),
        "toml": lambda: _write(d / "c.pt", b'batch_size = 8\n[model]\nsize = 64\n'),
        "random": lambda: _write(d / "r.pt", np.random.default_rng(2).bytes(4000)),
        "truncated-zip": lambda: _write(d / "t.pt", save("full.pt", {"a": torch.zeros(100)}).read_bytes()[:300]),
        "foreign-dict": lambda: save("f.pt", {"weights": torch.zeros(3)}),
        "config-wrong-type": lambda: save("w.pt", {**head, "model_config": {"size": "big"}}),
        "config-not-a-dict": lambda: save("n.pt", {**head, "model_config": [1, 2]}),
        "config-impossible": lambda: save("i.pt", {**head, "model_config": {"size": 64, "levels": 2}}),
        "no-weights": lambda: save("nw.pt", {**head, "model_config": {"size": 64, "levels": 2, "inject_levels": 2}}),
        "manifest-parts-not-a-list": lambda: _write(d / "m.pt", b'{"reenact_checkpoint_parts": 1, "parts": 5}'),
        "manifest-parts-escape": lambda: _write(d / "m.pt", json.dumps(
            {"reenact_checkpoint_parts": 1, "parts": ["../../etc/passwd"], "sha256": "0"}).encode()),
        "manifest-part-missing": lambda: _write(d / "m.pt", json.dumps(
            {"reenact_checkpoint_parts": 1, "parts": ["m.pt.abc.0"], "sha256": "0"}).encode()),
        "manifest-not-json": lambda: _write(d / "m.pt", b'{"reenact_checkpoint_parts": [[['),
        "missing": lambda: d / "nope.pt",
    }


CHECKPOINT_CASES = sorted(_checkpoints(Path(".")))


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_export_of_something_that_is_not_a_checkpoint(tmp_path, case):
    """Cause 4 and 16: exit 6 with a short reason (no PyTorch essay, no empty reason)."""
    ckpt = _checkpoints(tmp_path)[case]()
    text = run_hostile(tmp_path, ["export", ckpt, "-o", tmp_path / "w.onnx"], 6)
    assert "weights_only" not in text and len(text) < 600 and not text.rstrip().endswith(":")


@pytest.mark.parametrize("case", ["missing-folder", "read-only", "disk-full", "exists"])
def test_export_output_problems(tmp_path, monkeypatch, case):
    """Cause 4: a missing folder is not silently created; read-only and full folders exit 5."""
    ckpt = _checkpoints(tmp_path)["config-impossible"]()  # never loaded: the output is checked first
    out = tmp_path / "w.onnx"
    if case == "missing-folder":
        out = tmp_path / "no" / "w.onnx"
    elif case == "exists":
        _write(out, b"old")
        ckpt = _checkpoints(tmp_path)["no-weights"]()
    else:
        code = errno.EROFS if case == "read-only" else errno.ENOSPC
        monkeypatch.setattr(Path, "touch", lambda self, *a, **k: (_ for _ in ()).throw(
            OSError(code, os.strerror(code), str(self))))
    run_hostile(tmp_path, ["export", ckpt, "-o", out], {5, 6} if case == "exists" else 5)
    assert not (tmp_path / "no").exists()


# ───────────────────────────── crafted ONNX weights ─────────────────────────────


def _onnx_pair(d: Path, meta: dict, *, app_input: str = "reference", side: int = 64) -> Path:
    """A tiny NAME.onnx + NAME.appearance.onnx pair of Identity graphs with `meta` as metadata."""
    import onnx
    from onnx import TensorProto, helper

    def graph(inputs: list[tuple[str, list]], outputs: list[str], path: Path, metadata: dict) -> None:
        ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
        nodes = [helper.make_node("Identity", [inputs[0][0]], [o]) for o in outputs]
        model = helper.make_model(helper.make_graph(nodes, "g", ins, outs), opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        for k, v in metadata.items():
            model.metadata_props.add(key=k, value=v)
        onnx.save(model, path)

    graph([(app_input, [1, 3, side, side])], ["appearance_4"], d / "m.appearance.onnx", {})
    graph([("pose_parsing", [1, 12, 64, 64]), ("appearance_4", None)], ["image"], d / "m.onnx", meta)
    return d / "m.onnx"


GOOD_META = {"reenact.kind": "generator", "reenact.appearance": "m.appearance.onnx",
             "reenact.model_config": json.dumps({"size": 64, "feature_warp": False, "variant": "thesis"})}


@pytest.mark.parametrize("case", ["config-not-json", "config-a-list", "size-a-string", "size-lies",
                                  "companion-escapes", "wrong-input-names", "no-metadata", "not-onnx"])
def test_crafted_onnx_is_not_a_reenact_model(tmp_path, case):
    """Cause 9: malformed or lying metadata gave JSONDecodeError / ORT input-name tracebacks."""
    meta, kw = dict(GOOD_META), {}
    if case == "config-not-json":
        meta["reenact.model_config"] = "{size: 64"
    elif case == "config-a-list":
        meta["reenact.model_config"] = "[64]"
    elif case == "size-a-string":
        meta["reenact.model_config"] = json.dumps({"size": "64", "feature_warp": False})
    elif case == "size-lies":
        kw["side"] = 128
    elif case == "companion-escapes":
        meta["reenact.appearance"] = "../../m.appearance.onnx"
    elif case == "wrong-input-names":
        kw["app_input"] = "photo"
    elif case == "no-metadata":
        meta = {}
    weights = _onnx_pair(tmp_path, meta, **kw)
    if case == "companion-escapes":
        (tmp_path / "m.appearance.onnx").unlink()
    if case == "not-onnx":
        _write(weights, b"\x08\x07garbage" * 30)
    run_hostile(tmp_path, ["image", EXAMPLES / "ref.jpg", EXAMPLES / "pose.jpg", "--engine", "gan",
                           "--weights", weights, "-o", tmp_path / "o.png"], 6)


# ───────────────────────────── eval, bench, data, info ─────────────────────────────


@pytest.mark.parametrize("case,code", [("limit-negative", 2), ("pairs-binary", 4), ("pairs-missing", 4),
                                       ("pairs-folder", 4), ("weights-corrupt", 6), ("weights-missing", 6),
                                       ("mouth-weights-corrupt", 6)])
def test_eval_refuses_bad_options(tmp_path, case, code):
    """Cause 7: tracebacks, and exit 0 with nothing evaluated for corrupt --weights."""
    refs, drivers = _mkdir(tmp_path / "refs"), _mkdir(tmp_path / "drivers")
    _write(refs / "a.jpg", (EXAMPLES / "ref.jpg").read_bytes())
    _write(drivers / "b.jpg", (EXAMPLES / "pose.jpg").read_bytes())
    args = ["eval", "--refs", refs, "--drivers", drivers, "-o", tmp_path / "report", "--no-fid", "--no-lpips",
            "--no-identity", "--engines", "reference,warp,gan"]
    extra = {"limit-negative": ["--limit", "-5"],
             "pairs-binary": ["--pairs", _write(tmp_path / "p.csv", b"\xff\xfe\x00\x81" * 100)],
             "pairs-missing": ["--pairs", tmp_path / "nope.csv"], "pairs-folder": ["--pairs", refs],
             "weights-corrupt": ["--weights", _write(tmp_path / "w.onnx", b"garbage" * 10)],
             "weights-missing": ["--weights", tmp_path / "none.onnx"],
             "mouth-weights-corrupt": ["--engines", "reference,warp,fusion",
                                       "--mouth-weights", _write(tmp_path / "m.onnx", b"garbage" * 10)]}[case]
    run_hostile(tmp_path, [*args, *extra], code)


def test_eval_region_weights_do_not_make_a_missing_whole_face_model_fatal(tmp_path):
    """--mouth-weights names the fusion engine's mouth, not gan's weights: gan without bundled
    whole-face weights is still reported unavailable, not an exit 6."""
    from reenact.evaluate import runner

    settings = runner.EvalSettings(engines=("gan",), mouth_weights=str(tmp_path / "m.onnx"))
    engine, status = runner.build("gan", settings)
    assert engine is None and status.startswith("unavailable")
    with pytest.raises(Exception, match="m.onnx"):
        runner.build("fusion", settings)


@pytest.mark.parametrize("extra,code", [(["--repeats", "-1"], 2), (["--repeats", "0"], 2), (["--frames", "0"], 2),
                                        (["--repeats", "many"], 2), (["--engines", "nope"], 2)])
def test_bench_refuses_bad_numbers(tmp_path, extra, code):
    """Cause 8: --repeats -1 gave ZeroDivisionError."""
    run_hostile(tmp_path, ["bench", "--ref", EXAMPLES / "ref.jpg", "--driver", EXAMPLES / "drive.mp4", *extra], code)


@pytest.mark.parametrize("case,code", [("missing-source", 4), ("output-exists", 5), ("source-is-a-file", 4)])
def test_data_prepare_refuses(tmp_path, case, code):
    src = {"missing-source": lambda: tmp_path / "nope", "source-is-a-file": lambda: _write(tmp_path / "f.jpg", b"x"),
           "output-exists": lambda: _mkdir(tmp_path / "photos")}[case]()
    out = tmp_path / "cache"
    if case == "output-exists":
        _write(src / "a.jpg", (EXAMPLES / "ref.jpg").read_bytes())
        _write(_mkdir(out) / "old.txt", b"kept")
    run_hostile(tmp_path, ["data", "prepare", src, "-o", out], code)


@pytest.mark.parametrize("argv", [["image", "--no-such-option"], ["video", "a.jpg"], ["image", "a", "b", "--size", "big"],
                                  ["nosuchcommand"], ["train"], ["bench", "--ref"], ["eval", "--limit", "x"],
                                  ["data", "prepare"], ["export"], ["batch", "--job-options"]])
def test_option_errors_follow_the_error_line_convention(tmp_path, argv):
    """Cause 16: option parsing printed Click's framed usage box."""
    text = run_hostile(tmp_path, argv, 2)
    assert text.lstrip().startswith("error:") and "╭" not in text and "hint: see: reenact" in text


def test_broken_ffmpeg_is_blamed_not_the_input(tmp_path, monkeypatch):
    """Cause 16: IMAGEIO_FFMPEG_EXE=/bin/false said the driver could not be opened."""
    media.ffmpeg_exe.cache_clear()
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", "/bin/false")
    try:
        text = run_hostile(tmp_path, ["video", EXAMPLES / "ref.jpg", EXAMPLES / "drive.mp4", "-o", tmp_path / "o.mp4"],
                           1, "ffmpeg")
        assert "drive.mp4" not in text
    finally:
        monkeypatch.undo()
        media.ffmpeg_exe.cache_clear()


def test_unexpected_errors_are_one_line_unless_debugging(tmp_path, monkeypatch):
    """A bug shows `error: internal error …` (exit 1); --debug or REENACT_DEBUG=1 shows the traceback."""
    from reenact import cli

    monkeypatch.setattr(cli, "_debug", False)  # restored after --debug set it
    monkeypatch.setattr(media, "media_kind", lambda p: 1 / 0)
    args = ["image", EXAMPLES / "ref.jpg", EXAMPLES / "pose.jpg", "-o", tmp_path / "o.png"]
    run_hostile(tmp_path, args, 1, "internal error", "ZeroDivisionError", "--debug")
    r = invoke("--debug", *args)
    assert isinstance(r.exception, ZeroDivisionError)


@pytest.mark.parametrize("code,expected", [(errno.ENOSPC, 5), (errno.EROFS, 5), (errno.EACCES, 5), (errno.ENOENT, 4),
                                           (errno.ENAMETOOLONG, 5), (errno.ENOTDIR, 4), (errno.EISDIR, 4)])
def test_os_errors_on_an_output_map_by_errno_and_path(tmp_path, monkeypatch, code, expected):
    """The boundary: an OSError escaping any command becomes its documented code, path named."""
    target = tmp_path / "o.png"
    where = str(target) if expected == 5 else str(EXAMPLES / "pose.jpg")
    monkeypatch.setattr(media, "write_image", lambda *a, **k: (_ for _ in ()).throw(
        OSError(code, os.strerror(code), where)))
    text = run_hostile(tmp_path, ["image", EXAMPLES / "ref.jpg", EXAMPLES / "pose.jpg", "-o", target], expected)
    assert Path(where).name in text


# ───────────────────────────── frame count and sync ─────────────────────────────


def _corrupt_middle(src: Path, dst: Path) -> Path:
    """A copy of `src` with 6 KB of noise in the middle: the decoder loses a few frames there."""
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 6000] = np.random.default_rng(0).integers(0, 256, 6000, np.uint8).tobytes()
    return _write(dst, bytes(data))


def test_corrupt_driver_frames_are_repeated_not_skipped(tmp_path):
    """Cause 15: frames lost to corrupt data were skipped (114 of 120), so the audio drifted."""
    bad = _corrupt_middle(EXAMPLES / "drive.mp4", tmp_path / "bad.mp4")
    with media.VideoReader(bad) as video:
        n = sum(1 for _ in video)
    assert n == media.probe_video(EXAMPLES / "drive.mp4").n_frames == 120
    assert video.repeated > 0
    r = invoke("video", EXAMPLES / "ref.jpg", bad, "-o", tmp_path / "o.mp4", "--size", "128", "--max-side", "256")
    assert r.exit_code == 0, r.output
    assert "undecodable" in r.output and media.probe_video(tmp_path / "o.mp4").n_frames == 120


def test_repeated_frames_are_counted_even_when_the_stderr_reader_is_told_to_stop_early(tmp_path):
    """imageio-ffmpeg tells its stderr reader to stop as soon as the frames end, often before
    ffmpeg's final statistics line (dup=…) is written; under load the count was lost (3 of 60
    reads). Here the stop comes before the first frame: the count must still arrive."""
    bad = _corrupt_middle(EXAMPLES / "drive.mp4", tmp_path / "bad.mp4")
    with media.VideoReader(bad) as video:
        video._log.stop_me()
        assert sum(1 for _ in video) == 120
    assert video.repeated > 0


# ───────────────────────────── found by tools/hostile_sweep.py ─────────────────────────────


@pytest.mark.parametrize("toml,key", [
    ("lr_g = -1.0", "lr_g"), ("lr_g = nan", "lr_g"), ("lr_d = inf", "lr_d"), ("threads = -3", "threads"),
    ("batch_size = 1000000000", "batch_size"), ("[data]\nworkers = -1", "data.workers"),
    ("[losses]\nl1 = -2.0", "losses.l1"), ("[model]\nsize = -64", "model.size"),
])
def test_train_config_numbers_out_of_range(tmp_path, monkeypatch, toml, key):
    """Typed validation let negative, infinite and NaN numbers through: tracebacks from PyTorch
    (learning rate, threads, DataLoader workers) or a run training on nonsense (exit 0); a huge
    batch_size ran out of memory. Now exit 2 naming the key and the file, before any work."""
    from reenact.train import cache

    monkeypatch.setattr(cache, "ensure_cache", lambda *a, **k: pytest.fail("work started"))
    cfg = _write(tmp_path / "bad.toml", toml.encode())
    run_hostile(tmp_path, ["train", "--config", cfg, "--out", tmp_path / "run"], 2, key, "bad.toml")


def test_range_check_allows_every_shipped_config():
    from reenact.train.config import TrainConfig

    for path in sorted((REPO / "configs").glob("*.toml")):
        TrainConfig.from_toml(path)


@pytest.mark.parametrize("how", ["missing", "folder"])
def test_train_resume_from_a_missing_checkpoint_is_exit_6(tmp_path, how):
    """A missing checkpoint is exit 6 in every command (export said 6, train said 2)."""
    ck = tmp_path / "last.pt" if how == "missing" else _mkdir(tmp_path / "last.pt")
    cfg = tiny_config_file(tmp_path)
    run_hostile(tmp_path, ["train", "--config", cfg, "--out", tmp_path / "run", "--resume", ck], 6, "last.pt")


def test_train_disk_full_at_the_start_leaves_no_run_folder(tmp_path, monkeypatch):
    """The run folder was left behind with a half-written config.json, the error named no file."""
    from reenact.train import loop

    cfg = tiny_config_file(tmp_path)
    real = Path.write_text

    def full(self, *a, **k):
        if self.name == "config.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    monkeypatch.setattr(loop.Trainer, "__init__", _fake_trainer_init)
    text = run_hostile(tmp_path, ["train", "--config", cfg, "--out", tmp_path / "run"], 5, "config.json")
    assert "no space" in text


def tiny_config_file(tmp_path: Path) -> Path:
    from tests.gen_helpers import synthetic_cache

    cache = synthetic_cache(tmp_path / "cache", n=4, size=64).path
    text = (REPO / "configs" / "tiny.toml").read_text().replace('".cache/packs/tiny-64"', json.dumps(str(cache)))
    return _write(tmp_path / "c.toml", text.encode())


def _fake_trainer_init(self, config, out_dir, *, dist=None, resume=None):
    from reenact.train.ddp import DistInfo

    self.cfg, self.out, self.dist = config, Path(out_dir), dist or DistInfo()


@pytest.mark.parametrize("case,code", [
    ("identities-missing", 4), ("identities-binary", 4), ("identities-unbalanced-quote", 4),
    ("identities-word-id", 2), ("size-0", 2), ("size-17", 2), ("size-absurd", 2), ("output-under-a-file", 5),
])
def test_data_prepare_refuses_bad_inputs_and_sizes(tmp_path, case, code):
    """Tracebacks (UnicodeDecodeError, int(None), int('bob'), OpenCV resize and allocation errors),
    a 17² cache accepted, a file in the way of the output folder blamed on nothing (exit 1)."""
    src = _mkdir(tmp_path / "photos")
    _write(src / "a.jpg", (EXAMPLES / "ref.jpg").read_bytes())
    args = ["data", "prepare", src, "-o", tmp_path / "cache", "--split", "all"]
    ids = {"identities-missing": tmp_path / "nope.csv",
           "identities-binary": _write(tmp_path / "b.csv", b"\xff\x00\xfe" * 50),
           "identities-unbalanced-quote": _write(tmp_path / "u.csv", b'file,identity\n"a.jpg,1\n'),
           "identities-word-id": _write(tmp_path / "w.csv", b"file,identity\na.jpg,bob\n")}.get(case)
    if ids is not None:
        args += ["--identities", ids]
    args += {"size-0": ["--size", "0"], "size-17": ["--size", "17"], "size-absurd": ["--size", "100000"]}.get(case, [])
    if case == "output-under-a-file":
        args[args.index("-o") + 1] = _write(tmp_path / "f", b"x") / "cache"
    run_hostile(tmp_path, args, code)


@pytest.mark.parametrize("where", ["the-refs-folder", "above-the-inputs"])
def test_eval_report_folder_never_holds_an_input(tmp_path, where):
    """`eval -o REFS -y` replaced the folder of reference photos with the report: data loss."""
    refs, drivers = _mkdir(tmp_path / "refs"), _mkdir(tmp_path / "drivers")
    _write(refs / "a.jpg", (EXAMPLES / "ref.jpg").read_bytes())
    _write(drivers / "b.jpg", (EXAMPLES / "pose.jpg").read_bytes())
    out = refs if where == "the-refs-folder" else tmp_path
    run_hostile(tmp_path, ["eval", "--refs", refs, "--drivers", drivers, "-o", out, "-y", "--no-fid", "--no-lpips",
                           "--no-identity", "--engines", "reference,warp"], 5, "input")


def test_live_recording_is_never_the_source(tmp_path):
    """`live --source a.mp4 -o a.mp4 -y` recorded over the source video."""
    src = _write(tmp_path / "a.mp4", (EXAMPLES / "drive.mp4").read_bytes())
    run_hostile(tmp_path, ["live", EXAMPLES / "ref.jpg", "--source", src, "--no-window", "--max-frames", "2",
                           "--engine", "warp", "-o", src, "-y"], 5, "input")


@pytest.mark.parametrize("case", ["is-the-reference", "name-too-long", "a-folder", "under-a-file"])
def test_bench_json_is_checked_before_benchmarking(tmp_path, monkeypatch, case):
    """--json was only written after minutes of benchmarking: over the reference photo itself
    (data loss), or failing with a long OSError text and a leftover temporary file."""
    from reenact.evaluate import bench

    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: pytest.fail("benchmark started"))
    ref = _write(tmp_path / "r.jpg", (EXAMPLES / "ref.jpg").read_bytes())
    out = {"is-the-reference": ref, "name-too-long": tmp_path / f"{LONG}.json", "a-folder": _mkdir(tmp_path / "b.json"),
           "under-a-file": _write(tmp_path / "f", b"x") / "b.json"}[case]
    run_hostile(tmp_path, ["bench", "--ref", ref, "--driver", EXAMPLES / "drive.mp4", "--json", out], 5)


@pytest.mark.parametrize("how", ["hard-link", "symlink"])
def test_export_output_is_never_the_checkpoint(tmp_path, how):
    ck = _write(tmp_path / "c.pt", b"not even loaded: the output is checked first")
    out = tmp_path / "m.onnx"
    (os.link if how == "hard-link" else os.symlink)(ck, out)
    run_hostile(tmp_path, ["export", ck, "-o", out, "-y"], 5, "input")


def test_export_over_a_folder_writes_nothing(tmp_path):
    """-o NAME.onnx being a folder: NAME.appearance.onnx was written before the failure."""
    from tests.gen_helpers import trained_checkpoint

    ck = trained_checkpoint(_mkdir(tmp_path / "t"), steps=1)
    _mkdir(tmp_path / "m.onnx")
    run_hostile(tmp_path, ["export", ck, "-o", tmp_path / "m.onnx", "-y"], 5, "folder")


def _batch_inputs(tmp_path: Path, row: str) -> Path:
    inp = _mkdir(tmp_path / "in")
    for n in ("ref.jpg", "pose.jpg"):
        _write(inp / n, (EXAMPLES / n).read_bytes())
    return _write(inp / "jobs.csv", (row + "\n").encode())


@pytest.mark.parametrize("row,job_options,words", [
    ("ref.jpg,pose.jpg,a.png", "--chunk-frames -3", "--chunk-frames"),
    ("ref.jpg,pose.jpg,a.png", "--size -16", "--size"),
    ("ref.jpg,pose.jpg,a.png", "-o /tmp/elsewhere.png", "--output"),
    ('ref.jpg,"pose.jpg,a.png', "", "quote"),
    ("ref.jpg,pose.jpg,a.png,--face 0,extra,more", "", "at most 4"),
])
def test_batch_refuses_bad_job_options_and_rows_before_any_work(tmp_path, row, job_options, words):
    """An out-of-range value in --job-options (which every job gets) failed each job in turn
    (exit 1) instead of stopping the batch (exit 2); an unbalanced CSV quote swallowed the rest
    of the row; a 6-cell row ran with its extra cells ignored; -o in the options was ignored."""
    jobs = _batch_inputs(tmp_path, row)
    run_hostile(tmp_path, ["batch", jobs, "-o", tmp_path / "out", "--job-options", job_options], 2, words)


def test_batch_output_option_in_a_row_fails_that_job(tmp_path):
    """-o in a CSV row's options was silently ignored; now that job fails with exit 2 (a bad
    row fails its job only, as every bad row option does)."""
    jobs = _batch_inputs(tmp_path, "ref.jpg,pose.jpg,a.png,-o /tmp/elsewhere.png")
    r = invoke("batch", jobs, "-o", tmp_path / "out")
    assert r.exit_code == 1, r.output
    row = next(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert (row["status"], row["exit_code"]) == ("failed", "2") and "--output" in row["error"]
    assert not (tmp_path / "out" / "a.png").exists()


def test_batch_csv_with_nul_bytes_is_not_a_job_list(tmp_path):
    jobs = _write(tmp_path / "jobs.csv", b"ref.jpg,pose.jpg,a\x00.png\n")
    run_hostile(tmp_path, ["batch", jobs, "-o", tmp_path / "out"], 4, "NUL")


def test_ctrl_c_while_the_output_is_joined_completes_the_render(tmp_path, monkeypatch):
    """Ctrl-C between joining the output and removing the work folder said "interrupted — nothing
    was written" (exit 130) beside a complete output, and left the work folder behind."""
    real = media.concat_videos

    def join_then_ctrl_c(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)  # as the user's Ctrl-C would, while the join runs
        return real(*a, **k)

    monkeypatch.setattr(media, "concat_videos", join_then_ctrl_c)
    r = invoke(*_video_args(tmp_path))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o.mp4").is_file() and not resume.work_dir_for(tmp_path / "o.mp4").exists()
    assert signal.getsignal(signal.SIGINT) is not None  # the handler was given back


def test_video_resume_work_folder_hold_signals_restores_handlers(tmp_path):
    work = resume.WorkDir.open(tmp_path / "o.mp4", job="x", inputs={}, chunk=40, resume=False, overwrite=False)
    before = signal.getsignal(signal.SIGINT)
    work.hold_signals()
    os.kill(os.getpid(), signal.SIGINT)  # noted, not raised
    work.remove()
    assert signal.getsignal(signal.SIGINT) is before
