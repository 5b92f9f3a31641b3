"""Tests for reenact.media: colour/orientation contract, error classes, atomic writes,
streaming reads, audio mux. Fixtures are generated into tmp dirs (bundled ffmpeg, lavfi)."""

from __future__ import annotations

import gc
import os
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from reenact import media, pipeline
from reenact.errors import CorruptMedia, MediaError, OutputError, UnsupportedMedia, UsageError

FF = media.ffmpeg_exe()


# ───────────────────────────── helpers ─────────────────────────────


def ffmpeg(*args: str) -> None:
    subprocess.run([FF, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                   check=True, capture_output=True)


def lavfi_ok() -> bool:
    try:
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.1", "-f", "null", "-")
        return True
    except subprocess.CalledProcessError:
        return False


LAVFI = lavfi_ok()


def make_video(path: Path, *, n: int, size=(64, 48), fps=25, audio: bool = False) -> Path:
    """testsrc video (libx264 yuv420p), optionally with a sine audio track of the same length."""
    if not LAVFI:
        pytest.skip("this ffmpeg build has no lavfi sources")
    w, h = size
    dur = n / fps
    args = ["-f", "lavfi", "-i", f"testsrc=size={w}x{h}:rate={fps}:duration={dur}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={dur}", "-c:a", "aac"]
    ffmpeg(*args, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
    return path


def ffmpeg_children() -> list[tuple[int, str]]:
    """(pid, state) of ffmpeg processes whose parent is this test process, zombies included."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        if int(ppid) == os.getpid() and "ffmpeg" in comm:
            found.append((int(d.name), state))
    return found


def count_frames(path: Path) -> int:
    with media.VideoReader(path) as r:
        return sum(1 for _ in r)


def leftovers(folder: Path, keep: set[str] = frozenset()) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def quadrants(h: int = 40, w: int = 60) -> np.ndarray:
    """RGB test image whose four quadrants differ, so every flip/rotation is distinguishable."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)
    img[: h // 2, w // 2:] = (0, 255, 0)
    img[h // 2:, : w // 2] = (0, 0, 255)
    img[h // 2:, w // 2:] = (255, 255, 255)
    return img


def tiff_orientation_block(orientation: int, little: bool) -> bytes:
    e = "<" if little else ">"
    return ((b"II*\x00" if little else b"MM\x00*") + struct.pack(e + "I", 8) + struct.pack(e + "H", 1)
            + struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(e + "I", 0))


def jpeg_with_orientation(bgr: np.ndarray, orientation: int, little: bool = False) -> bytes:
    """A JPEG with a minimal EXIF APP1 segment (IFD0 holding only Orientation) after SOI."""
    data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    payload = b"Exif\x00\x00" + tiff_orientation_block(orientation, little)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + app1 + data[2:]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(arr: np.ndarray, color_type: int, extra: bytes = b"") -> bytes:
    """Minimal PNG writer (8- or 16-bit by dtype); color_type 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA."""
    h, w = arr.shape[:2]
    depth = 16 if arr.dtype == np.uint16 else 8
    rows = arr.reshape(h, -1).astype(">u2" if depth == 16 else "u1")
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra
            + png_chunk(b"IDAT", zlib.compress(raw, 1)) + png_chunk(b"IEND", b""))


def webp_with_orientation(bgr: np.ndarray, orientation: int) -> bytes:
    """Extended WebP (VP8X with the EXIF flag) holding an EXIF chunk after the image data."""
    data = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()  # lossless
    h, w = bgr.shape[:2]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x08, 0, 0, 0]) + (w - 1).to_bytes(3, "little") \
        + (h - 1).to_bytes(3, "little")
    exif = tiff_orientation_block(orientation, little=True)
    body = b"WEBP" + vp8x + data[12:] + b"EXIF" + struct.pack("<I", len(exif)) + exif
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Small generated videos shared by the video tests (generated once, ~1 s)."""
    d = tmp_path_factory.mktemp("clips")
    out = {"silent": make_video(d / "silent.mp4", n=50)}
    if LAVFI:
        out["av"] = make_video(d / "av.mp4", n=50, audio=True)
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=1.5", "-c:a", "aac", str(d / "tone.m4a"))
        out["tone"] = d / "tone.m4a"
    return out


@pytest.fixture
def audio_clip(clips, request) -> Path:
    """A 25 fps clip with audio: generated (lavfi) or, failing that, a shared VoxCeleb clip."""
    if "av" in clips:
        return clips["av"]
    return request.getfixturevalue("shared_data") / "clips/pcavs-vox2/Input/00002.mp4"


# ───────────────────────────── images: contract ─────────────────────────────


def test_read_image_is_rgb_uint8_contiguous(tmp_path):
    rgb = quadrants()
    cv2.imwrite(str(tmp_path / "q.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = media.read_image(tmp_path / "q.png")
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)  # red stays red: one RGB convention
    assert out.flags.writeable


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_opencv_imread_color(tmp_path, orientation):
    """IMREAD_COLOR applies EXIF itself; our UNCHANGED-style decode must end up identical."""
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(jpeg_with_orientation(cv2.cvtColor(quadrants(), cv2.COLOR_RGB2BGR), orientation,
                                           little=orientation % 2 == 0))
    out = media.read_image(path)
    expected = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(out, expected)
    assert out.shape == ((60, 40, 3) if orientation >= 5 else (40, 60, 3))


def test_exif_orientation_geometry(tmp_path):
    """Independent of OpenCV: orientation 6 = stored image turned 90° clockwise to display."""
    rgb = quadrants()
    path = tmp_path / "o6.jpg"
    path.write_bytes(jpeg_with_orientation(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 6))
    out = media.read_image(path).astype(int)
    assert np.abs(out - np.rot90(rgb, -1)).mean() < 8  # JPEG ringing at the quadrant edges
    assert np.abs(out - np.rot90(rgb, 1)).mean() > 50  # the other way round is far off


def test_exif_orientation_matches_pillow(tmp_path):
    """Cross-check JPEG and TIFF with Pillow when it happens to be installed (not a dependency)."""
    image_module = pytest.importorskip("PIL.Image")
    image_ops = pytest.importorskip("PIL.ImageOps")
    for orientation in range(1, 9):
        path = tmp_path / f"p{orientation}.jpg"
        path.write_bytes(jpeg_with_orientation(cv2.cvtColor(quadrants(), cv2.COLOR_RGB2BGR), orientation))
        ref = np.asarray(image_ops.exif_transpose(image_module.open(path)).convert("RGB")).astype(int)
        out = media.read_image(path)
        assert out.shape == ref.shape
        assert np.abs(out - ref).mean() < 2
        # TIFF: OpenCV's decoder orients it itself (even with IMREAD_UNCHANGED); no double turn
        exif = image_module.Exif()
        exif[0x0112] = orientation
        tif = tmp_path / f"p{orientation}.tif"
        image_module.fromarray(quadrants()).save(tif, exif=exif.tobytes())
        ref = np.asarray(image_ops.exif_transpose(image_module.open(tif)).convert("RGB"))
        np.testing.assert_array_equal(media.read_image(tif), ref)


def test_a_jpeg_shrunk_anyway_is_decoded_smaller(tmp_path):
    """`at_least`: libjpeg decodes at 1/2, 1/4 or 1/8, the most that keeps the longest side ≥ it;
    orientation still applies; the caller's shrink then gives nearly what full size would."""
    rgb = cv2.resize(quadrants(), (2000, 1000), interpolation=cv2.INTER_LINEAR)
    rgb = cv2.GaussianBlur(rgb, (0, 0), 20)  # smooth, so JPEG's own scaling and INTER_AREA agree
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_with_orientation(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 6))
    full = media.read_image(path)
    assert full.shape == (2000, 1000, 3)
    for at_least, shape in ((480, (500, 250, 3)), (1000, (1000, 500, 3)), (1001, (2000, 1000, 3)), (0, full.shape)):
        out = media.read_image(path, at_least=at_least)
        assert out.shape == shape, at_least
        want = cv2.resize(full, shape[1::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(out.astype(int) - want).mean() < 2, at_least
    png = tmp_path / "big.png"
    png.write_bytes(png_bytes(rgb, 2))
    assert media.read_image(png, at_least=480).shape == (1000, 2000, 3)  # only JPEGs


def test_exif_orientation_on_grayscale_jpeg(tmp_path):
    grey = np.tile(np.arange(60, dtype=np.uint8) * 4, (40, 1))
    path = tmp_path / "g.jpg"
    path.write_bytes(jpeg_with_orientation(grey, 8))
    out = media.read_image(path)
    assert out.shape == (60, 40, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.abs(out[..., 0].astype(int) - np.rot90(grey, 1)).mean() < 3


def test_png_exif_orientation_with_alpha(tmp_path):
    """IMREAD_UNCHANGED (needed for alpha) ignores EXIF; we apply it anyway."""
    rgba = np.dstack([quadrants(), np.full((40, 60), 255, np.uint8)])
    exif = png_chunk(b"eXIf", tiff_orientation_block(6, little=False))
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(rgba, 6, extra=exif))
    np.testing.assert_array_equal(media.read_image(path), np.rot90(quadrants(), -1))


def test_webp_exif_orientation(tmp_path):
    path = tmp_path / "o.webp"
    path.write_bytes(webp_with_orientation(cv2.cvtColor(quadrants(), cv2.COLOR_RGB2BGR), 3))
    np.testing.assert_array_equal(media.read_image(path), np.rot90(quadrants(), 2))


def test_alpha_is_composited_over_mid_grey(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (200, 10, 50, 255)  # opaque: colour kept
    rgba[0, 1] = (200, 10, 50, 0)  # transparent: background
    rgba[0, 2] = (255, 0, 0, 128)  # half: midway
    path = tmp_path / "rgba.png"
    path.write_bytes(png_bytes(rgba, 6))
    out = media.read_image(path)
    bg = media.ALPHA_BACKGROUND
    assert tuple(out[0, 0]) == (200, 10, 50)
    assert tuple(out[0, 1]) == (bg, bg, bg)
    expected = [round((c * 128 + bg * 127) / 255) for c in (255, 0, 0)]
    assert np.abs(out[0, 2].astype(int) - expected).max() <= 1


def test_grey_alpha_png(tmp_path):
    la = np.array([[[40, 255], [40, 0]]], np.uint8)
    path = tmp_path / "la.png"
    path.write_bytes(png_bytes(la, 4))
    out = media.read_image(path)
    bg = media.ALPHA_BACKGROUND
    np.testing.assert_array_equal(out, [[[40, 40, 40], [bg, bg, bg]]])


@pytest.mark.parametrize("color_type", [0, 2, 6])
def test_16_bit_png_becomes_8_bit(tmp_path, color_type):
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    values = np.array([0, 257, 32896, 65535, 1000], np.uint16)
    arr = np.repeat(values[None, :, None], channels, axis=2)
    if channels == 4:
        arr[..., 3] = 65535
    path = tmp_path / "deep.png"
    path.write_bytes(png_bytes(arr, color_type))
    out = media.read_image(path)
    assert out.dtype == np.uint8 and out.shape == (1, 5, 3)
    np.testing.assert_array_equal(out[0, :, 0], np.round(values / 257).astype(np.uint8))


def test_content_decides_over_suffix(tmp_path):
    rgb = quadrants()
    png = tmp_path / "really_a_png.jpg"
    png.write_bytes(cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes())
    np.testing.assert_array_equal(media.read_image(png), rgb)
    bare = tmp_path / "no_suffix"
    bare.write_bytes(png.read_bytes())
    np.testing.assert_array_equal(media.read_image(bare), rgb)


@pytest.mark.slow
def test_very_large_image_reads_at_full_size(tmp_path):
    h, w = 7800, 7900  # 61.6 MP
    grey = np.full((h, w), 90, np.uint8)
    grey[-1, -1] = 250
    path = tmp_path / "huge.png"
    path.write_bytes(cv2.imencode(".png", grey, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes())
    del grey
    out = media.read_image(path)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert tuple(out[-1, -1]) == (250, 250, 250) and tuple(out[0, 0]) == (90, 90, 90)


# ───────────────────────────── images: errors ─────────────────────────────


def _bad_image(tmp_path: Path, case: str, clips: dict[str, Path]) -> Path:
    good = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))[1]
    png = cv2.imencode(".png", np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))[1]
    p = tmp_path / {"missing": "nope.jpg", "folder": "folder.jpg", "empty": "empty.jpg",
                    "truncated_jpg": "cut.jpg", "truncated_png": "cut.png", "garbage_jpg": "noise.jpg",
                    "text_as_jpg": "notes.jpg", "txt": "notes.txt", "video": "clip.mp4",
                    "video_as_jpg": "clip.jpg", "gif": "anim.gif"}[case]
    if case == "folder":
        p.mkdir()
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "truncated_jpg":
        p.write_bytes(good.tobytes()[: len(good) // 2])
    elif case == "truncated_png":
        p.write_bytes(png.tobytes()[: len(png) // 2])
    elif case == "garbage_jpg":
        p.write_bytes(np.random.default_rng(2).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    elif case in ("text_as_jpg", "txt"):
        p.write_text("these are my notes, not a photo\n" * 20)
    elif case in ("video", "video_as_jpg"):
        p.write_bytes(clips["silent"].read_bytes())
    elif case == "gif":
        p.write_bytes(b"GIF89a" + bytes(40))
    return p


@pytest.mark.parametrize("case, cls", [
    ("missing", MediaError), ("folder", MediaError), ("empty", CorruptMedia),
    ("truncated_jpg", CorruptMedia), ("truncated_png", CorruptMedia), ("garbage_jpg", CorruptMedia),
    ("text_as_jpg", UnsupportedMedia), ("txt", UnsupportedMedia), ("video", UnsupportedMedia),
    ("video_as_jpg", UnsupportedMedia), ("gif", UnsupportedMedia),
])
def test_read_image_errors(tmp_path, clips, case, cls):
    path = _bad_image(tmp_path, case, clips)
    with pytest.raises(MediaError) as info:
        media.read_image(path)
    err = info.value
    assert type(err) is cls, f"{case}: {type(err).__name__}: {err}"
    assert path.name in err.message and err.hint, str(err)
    assert "cv2" not in str(err) and "OpenCV" not in str(err)


def test_media_kind(tmp_path, clips):
    assert media.media_kind(clips["silent"]) == "video"
    jpg = tmp_path / "x.JPG"
    jpg.write_bytes(jpeg_with_orientation(quadrants(), 1))
    assert media.media_kind(jpg) == "image"
    (tmp_path / "photo").write_bytes(jpg.read_bytes())
    assert media.media_kind(tmp_path / "photo") == "image"
    (tmp_path / "movie").write_bytes(clips["silent"].read_bytes())
    assert media.media_kind(tmp_path / "movie") == "video"
    (tmp_path / "readme").write_text("hello\n")
    with pytest.raises(UnsupportedMedia, match="text"):
        media.media_kind(tmp_path / "readme")
    with pytest.raises(MediaError, match="no such file"):
        media.media_kind(tmp_path / "absent.mp4")
    with pytest.raises(MediaError, match="folder"):
        media.media_kind(tmp_path)


# ───────────────────────────── write_image & output paths ─────────────────────────────


@pytest.mark.parametrize("suffix, exact", [(".png", True), (".bmp", True), (".tif", True),
                                           (".jpg", False), (".jpeg", False), (".webp", False)])
def test_write_image_round_trip(tmp_path, suffix, exact):
    rgb = quadrants()
    target = media.write_image(tmp_path / f"out{suffix}", rgb)
    assert target == (tmp_path / f"out{suffix}").resolve()
    back = media.read_image(target)
    if exact:
        np.testing.assert_array_equal(back, rgb)
    else:
        assert np.abs(back.astype(int) - rgb).mean() < 4
    assert leftovers(tmp_path) == [f"out{suffix}"]


def test_write_image_respects_overwrite(tmp_path):
    target = tmp_path / "o.png"
    target.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists") as info:
        media.write_image(target, quadrants())
    assert "--overwrite" in info.value.hint
    assert target.read_bytes() == b"keep me"
    media.write_image(target, quadrants(), overwrite=True)
    np.testing.assert_array_equal(media.read_image(target), quadrants())
    assert leftovers(tmp_path) == ["o.png"]


def test_write_image_output_errors(tmp_path):
    with pytest.raises(OutputError, match="does not exist") as info:
        media.write_image(tmp_path / "missing" / "o.png", quadrants())
    assert "mkdir" in info.value.hint
    with pytest.raises(OutputError, match=r"\.gif"):
        media.write_image(tmp_path / "o.gif", quadrants())
    with pytest.raises(OutputError, match="without a suffix"):
        media.write_image(tmp_path / "o", quadrants())
    (tmp_path / "d.png").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        media.write_image(tmp_path / "d.png", quadrants())
    with pytest.raises(ValueError):
        media.write_image(tmp_path / "o.png", quadrants().astype(np.float32))
    with pytest.raises(ValueError):
        media.write_image(tmp_path / "o.png", quadrants()[..., 0])
    assert leftovers(tmp_path) == ["d.png"]


def test_output_folder_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permission bits do not stop writes")
        with pytest.raises(OutputError, match="cannot write in"):
            media.write_image(ro / "o.png", quadrants())
    finally:
        ro.chmod(0o755)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_output_folder_not_writable_even_for_root():
    with pytest.raises(OutputError, match="cannot write in /proc"):
        media.check_output_path("/proc/out.png", overwrite=False, kinds=media.IMAGE_SUFFIXES)


def test_check_output_path(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    got = media.check_output_path(sub / ".." / "sub" / "Result.MP4", overwrite=False,
                                  kinds=media.VIDEO_SUFFIXES)
    assert got == sub.resolve() / "Result.MP4"
    assert leftovers(sub) == []  # the writability probe cleans up
    with pytest.raises(OutputError, match=r"\.png"):
        media.check_output_path(sub / "r.png", overwrite=False, kinds=media.VIDEO_SUFFIXES)


def test_write_image_failure_leaves_nothing(tmp_path, monkeypatch):
    def no_space(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(media.os, "replace", no_space)
    with pytest.raises(OutputError, match="No space left"):
        media.write_image(tmp_path / "o.png", quadrants())
    assert leftovers(tmp_path) == []


def test_write_image_interrupted_leaves_nothing(tmp_path, monkeypatch):
    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(media.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        media.write_image(tmp_path / "o.jpg", quadrants())
    assert leftovers(tmp_path) == []


# ───────────────────────────── probing & reading ─────────────────────────────


def test_probe_generated_clip(audio_clip):
    info = media.probe_video(audio_clip)
    assert info.fps == 25 and info.n_frames == count_frames(audio_clip)
    assert info.has_audio and info.codec == "h264" and info.rotation == 0
    assert info.duration == pytest.approx(info.n_frames / 25, abs=0.05)


def test_probe_silent_clip(clips):
    info = media.probe_video(clips["silent"])
    assert (info.width, info.height, info.fps, info.n_frames) == (64, 48, 25, 50)
    assert not info.has_audio


def test_reader_frames_and_info(clips):
    with media.VideoReader(clips["silent"]) as r:
        frames = list(r)
        assert r.frames_read == 50 and r.info.width == 64 and r.info.height == 48
    assert len(frames) == 50
    f = frames[0]
    assert f.shape == (48, 64, 3) and f.dtype == np.uint8 and f.flags.c_contiguous and f.flags.writeable
    ref = cv2.imread(str(_first_frame_png(clips["silent"])))[..., ::-1]  # independent decode, BGR→RGB
    assert np.abs(f.astype(int) - ref).mean() < 2


def _first_frame_png(video: Path) -> Path:
    out = video.with_suffix(".first.png")
    ffmpeg("-i", str(video), "-frames:v", "1", str(out))
    return out


def test_rotation_metadata_is_applied(tmp_path, clips):
    rotated = tmp_path / "rot.mp4"
    try:
        ffmpeg("-display_rotation", "90", "-i", str(clips["silent"]), "-c", "copy", str(rotated))
    except subprocess.CalledProcessError:
        pytest.skip("this ffmpeg cannot set -display_rotation")
    info = media.probe_video(rotated)
    assert info.rotation == 270  # 90° counter-clockwise = 270° clockwise
    assert (info.width, info.height) == (48, 64)  # as delivered, i.e. swapped
    with media.VideoReader(clips["silent"]) as r:
        upright_src = next(r)
    with media.VideoReader(rotated) as r:
        assert (r.info.width, r.info.height) == (48, 64)
        frame = next(r)
    assert frame.shape == (64, 48, 3)
    np.testing.assert_array_equal(frame, np.rot90(upright_src, -info.rotation // 90))


def test_reader_shrinks_large_frames_as_it_decodes(tmp_path, clips):
    """`max_side`: ffmpeg delivers the frames already shrunk (odd sizes, rotated videos too),
    averaging as `pipeline.downscale` does; frames within it come as they are."""
    video = make_video(tmp_path / "v.mp4", n=5, size=(102, 62))
    with media.VideoReader(video) as r:
        full = list(r)
    with media.VideoReader(video, max_side=41) as r:
        assert (r.info.width, r.info.height) == media.scaled_size(102, 62, 41) == (41, 25)
        small = list(r)
    assert len(small) == 5 and small[0].shape == (25, 41, 3)
    ref = [pipeline.downscale(f, 41) for f in full]
    assert np.abs(np.stack(small).astype(int) - np.stack(ref)).mean() < 3
    with media.VideoReader(video, max_side=102) as r:
        assert np.array_equal(next(r), full[0])  # not larger than max_side: untouched
    rotated = tmp_path / "rot.mp4"
    try:
        ffmpeg("-display_rotation", "90", "-i", str(clips["silent"]), "-c", "copy", str(rotated))
    except subprocess.CalledProcessError:
        pytest.skip("this ffmpeg cannot set -display_rotation")
    with media.VideoReader(rotated, max_side=32) as r:  # 48×64 upright → 24×32
        assert (r.info.width, r.info.height) == (24, 32) and next(r).shape == (32, 24, 3)


def test_variable_frame_rate_is_resampled_to_average_rate(tmp_path):
    """Kept frames spaced 1,3,1,3 ticks at 30 tbr: ~15 fps on average. Naive image2pipe reading
    duplicates up to the 30 fps tbr (60 frames); we deliver ~duration × average fps."""
    if not LAVFI:
        pytest.skip("this ffmpeg build has no lavfi sources")
    vfr = tmp_path / "vfr.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=30:duration=2", "-vf", r"select=lt(mod(n\,4)\,2)",
           "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(vfr))
    info = media.probe_video(vfr)
    assert 14 < info.fps < 17
    n = count_frames(vfr)
    assert abs(n - info.n_frames) <= 2 and n < 40


@pytest.mark.slow
def test_reader_streams_in_constant_memory(tmp_path):
    path = make_video(tmp_path / "long.mp4", n=600, size=(320, 240), fps=50)
    frame_bytes = 320 * 240 * 3

    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    tracemalloc.start()
    try:
        with media.VideoReader(path) as r:
            for _ in range(50):  # warm-up: buffers, thread, allocator pools
                next(r)
            rss0, (base, _) = rss(), tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            n = 50 + sum(1 for _ in r)
            _, peak = tracemalloc.get_traced_memory()
            rss1 = rss()
    finally:
        tracemalloc.stop()
    assert n == 600
    assert peak - base < 8 * frame_bytes  # a whole video would be 550 frames more
    if sys.platform.startswith("linux"):
        assert rss1 - rss0 < 40 * frame_bytes  # 9 MB slack; keeping frames would add 127 MB


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_leaving_early_leaves_no_ffmpeg_behind(clips):
    with media.VideoReader(clips["silent"]) as r:
        for i, _ in enumerate(r):
            if i == 2:
                break
        assert ffmpeg_children()  # it was running
    assert ffmpeg_children() == []
    r = media.VideoReader(clips["silent"])
    next(r)
    r.close()
    assert ffmpeg_children() == []
    for _ in media.VideoReader(clips["silent"]):
        break  # no with, no close: dropping the reader must still stop ffmpeg
    gc.collect()
    assert ffmpeg_children() == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_background_reader_gives_the_same_frames_and_stops_ffmpeg(clips):
    """background=True (decoding ahead in a thread): the same frames and counts; leaving early,
    or dropping the reader, stops ffmpeg and the thread."""
    with media.VideoReader(clips["silent"]) as a, media.VideoReader(clips["silent"], background=True) as b:
        plain, ahead = list(a), list(b)
        assert b.frames_read == 50 and (b.repeated, b.dropped) == (a.repeated, a.dropped)
    assert len(ahead) == 50 and all(np.array_equal(x, y) for x, y in zip(plain, ahead))
    assert ahead[0].flags.writeable and next(b, None) is None
    with media.open_frames(clips["silent"], background=True) as r:
        next(r)
    assert ffmpeg_children() == [] and not any(t.name == "VideoReader" for t in threading.enumerate())
    for _ in media.VideoReader(clips["silent"], background=True):
        break
    gc.collect()  # the thread may be reading a frame: it closes the reader once it lets go of it
    deadline = time.monotonic() + 5
    while ffmpeg_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ffmpeg_children() == []


def _bad_video(tmp_path: Path, case: str, clips: dict[str, Path]) -> Path:
    p = tmp_path / {"missing": "nope.mp4", "folder": "dir.mp4", "empty": "empty.mp4",
                    "truncated": "cut.mp4", "garbage": "noise.mp4", "text": "notes.mp4",
                    "image": "photo.jpg", "image_as_mp4": "photo.mp4", "audio_only": "tone.m4a"}[case]
    if case == "folder":
        p.mkdir()
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "truncated":  # libx264 via ffmpeg puts the index (moov) at the end
        data = clips["silent"].read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif case == "garbage":
        p.write_bytes(np.random.default_rng(3).integers(0, 255, 20000, dtype=np.uint8).tobytes())
    elif case == "text":
        p.write_text("not a video\n" * 50)
    elif case in ("image", "image_as_mp4"):
        p.write_bytes(jpeg_with_orientation(quadrants(), 1))
    elif case == "audio_only":
        if "tone" not in clips:
            pytest.skip("this ffmpeg build has no lavfi sources")
        p.write_bytes(clips["tone"].read_bytes())
    return p


@pytest.mark.parametrize("case, cls", [
    ("missing", MediaError), ("folder", MediaError), ("empty", CorruptMedia),
    ("truncated", CorruptMedia), ("garbage", CorruptMedia), ("text", UnsupportedMedia),
    ("image", UnsupportedMedia), ("image_as_mp4", UnsupportedMedia), ("audio_only", UnsupportedMedia),
])
def test_video_errors(tmp_path, clips, case, cls):
    path = _bad_video(tmp_path, case, clips)
    for opener in (media.probe_video, media.VideoReader):
        with pytest.raises(MediaError) as info:
            opener(path)
        err = info.value
        assert type(err) is cls, f"{case}: {type(err).__name__}: {err}"
        assert path.name in err.message and err.hint, str(err)
        assert "Traceback" not in str(err) and " @ 0x" not in str(err)
    assert ffmpeg_children() == []


def test_truncated_fast_start_file_is_reported(tmp_path, clips):
    """With the index first, ffmpeg silently decodes what survives; we report the truncation."""
    faststart = tmp_path / "fs.mp4"
    ffmpeg("-i", str(clips["silent"]), "-c", "copy", "-movflags", "+faststart", str(faststart))
    assert count_frames(faststart) == 50  # intact: fine
    data = faststart.read_bytes()
    cut = tmp_path / "fs_cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    with pytest.raises(CorruptMedia, match="truncated"):
        media.VideoReader(cut)
    padded = tmp_path / "fs_padded.mp4"  # a few stray bytes at the end are no truncation
    padded.write_bytes(data + b"\0" * 5)
    assert media.probe_video(padded).n_frames == 50


# ───────────────────────────── writing video ─────────────────────────────


def _frames(n: int, size=(64, 48)) -> list[np.ndarray]:
    w, h = size
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, : (i * 3) % w + 1] = (220, 40, 40)
        f[h // 2:, :, 2] = 200
        out.append(f)
    return out


def _write(path: Path, frames: list[np.ndarray], **kw) -> Path:
    h, w = frames[0].shape[:2]
    with media.VideoWriter(path, fps=kw.pop("fps", 25), size=(w, h), **kw) as out:
        for f in frames:
            out.write(f)
    assert out.frames_written == len(frames)
    return path


def test_writer_with_audio_keeps_frames_and_fps(tmp_path, audio_clip):
    src = media.probe_video(audio_clip)
    out = _write(tmp_path / "o.mp4", _frames(50), audio_from=audio_clip)
    info = media.probe_video(out)
    assert info.has_audio and info.codec == "h264"
    assert info.fps == 25 and count_frames(out) == 50
    assert info.duration == pytest.approx(2.0, abs=0.1)
    assert src.has_audio
    assert leftovers(tmp_path) == ["o.mp4"]


def test_writer_with_silent_source_has_no_audio(tmp_path, clips):
    out = _write(tmp_path / "o.mp4", _frames(30), audio_from=clips["silent"])
    info = media.probe_video(out)
    assert not info.has_audio and count_frames(out) == 30 and info.fps == 25


def test_writer_audio_shorter_and_longer_than_video(tmp_path, clips, audio_clip):
    long_video = _write(tmp_path / "long.mp4", _frames(100), audio_from=audio_clip)  # 4 s video
    assert count_frames(long_video) == 100 and media.probe_video(long_video).has_audio
    short_video = _write(tmp_path / "short.mp4", _frames(10), audio_from=audio_clip)  # 0.4 s video
    info = media.probe_video(short_video)
    assert count_frames(short_video) == 10 and info.duration == pytest.approx(0.4, abs=0.1)
    if "tone" in clips:  # an audio-only file works as a source too
        tone = _write(tmp_path / "tone.mp4", _frames(20), audio_from=clips["tone"])
        assert media.probe_video(tone).has_audio and count_frames(tone) == 20


def test_writer_keeps_ntsc_rate_exactly(tmp_path):
    out = _write(tmp_path / "ntsc.mp4", _frames(24), fps=24000 / 1001)
    info = media.probe_video(out)
    assert Fraction(info.fps).limit_denominator(2000) == Fraction(24000, 1001)
    assert count_frames(out) == 24


def test_writer_pads_odd_sizes_by_edge_replication(tmp_path):
    frames = _frames(5, size=(65, 49))
    frames[0][:, -1] = (0, 250, 0)  # a distinct last column
    out = _write(tmp_path / "odd.mp4", frames, crf=0, preset="ultrafast")
    with media.VideoReader(out) as r:
        assert (r.info.width, r.info.height) == (66, 50)
        first = next(r).astype(int)
    assert np.abs(first[:49, :65] - frames[0]).mean() < 3
    assert np.abs(first[:49, 65] - first[:49, 64]).max() < 12  # replicated, not black
    assert np.abs(first[49] - first[48]).max() < 12


def test_writer_round_trip_colours(tmp_path):
    frames = _frames(3, size=(160, 120))
    out = _write(tmp_path / "c.mp4", frames)
    with media.VideoReader(out) as r:
        back = next(r).astype(int)
    assert np.abs(back - frames[0]).mean() < 3


def test_i420_conversion_matches_ffmpegs_bt709_converter():
    """The writer converts frames itself (`rgb_to_i420`); ffmpeg's own BT.709 limited-range
    converter, which it replaced, gives the same planes to within one level (a BT.601 matrix, or
    full range, would be off by up to ~20 on these saturated colours)."""
    h, w = 96, 64
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 4, y * 2, 255 - x * 2], -1).astype(np.uint8)  # smooth gradients
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0), (200, 150, 30)]
    for k, c in enumerate(colours):  # flat saturated 16² blocks on the 2×2 chroma grid
        rgb[16 * k:16 * k + 16, :16] = c
    ours = media.rgb_to_i420(rgb)
    theirs = subprocess.run(
        [media.ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-i", "-",
         "-vf", "scale=out_color_matrix=bt709:out_range=tv", "-pix_fmt", "yuv420p", "-f", "rawvideo", "-"],
        input=rgb.tobytes(), capture_output=True, check=True).stdout
    theirs = np.frombuffer(theirs, np.uint8).reshape(ours.shape)
    assert np.abs(ours[:h].astype(int) - theirs[:h]).max() <= 1  # luma
    blocks = np.zeros((h // 2, w // 2), bool)  # chroma inside the flat blocks (ffmpeg's chroma filter
    for k in range(len(colours)):               # reaches two samples further: it differs near edges)
        blocks[8 * k + 3:8 * k + 5, 3:5] = True
    for plane in (slice(h * w, h * w + h * w // 4), slice(h * w + h * w // 4, None)):
        a, b = (v.reshape(-1)[plane].reshape(h // 2, w // 2).astype(int) for v in (ours, theirs))
        assert np.abs(a - b)[blocks].max() <= 1


def test_own_preset_reaches_x264(tmp_path):
    """x264 writes its settings into the stream: "veryfast-dia" is veryfast with the diamond
    search, and from 720p on also with only intra sub-partitions (analyse=0x3:0x3, not 0x113);
    a plain x264 preset stays untouched."""
    def settings(preset: str, size: tuple[int, int]) -> str:
        data = _write(tmp_path / f"{preset}-{size[0]}.mp4", _frames(2, size=size), preset=preset).read_bytes()
        return data[data.index(b"x264 - core"):].split(b"\0")[0].decode()

    small, large = settings("veryfast-dia", (64, 48)), settings("veryfast-dia", (1280, 720))
    plain = settings("veryfast", (1280, 720))
    assert " me=dia " in small and " analyse=0x3:0x113 " in small
    assert " me=dia " in large and " analyse=0x3:0x3 " in large
    assert " me=hex " in plain and " analyse=0x3:0x113 " in plain
    assert all(" subme=2 " in s for s in (small, large, plain))
    assert media.x264_settings("veryfast-dia", (1279, 720)) == ("veryfast", "me=dia")


def test_i420_conversion_fills_a_given_buffer_and_refuses_odd_sizes():
    rgb = np.full((6, 10, 3), (10, 200, 30), np.uint8)
    buf = np.zeros((9, 10), np.uint8)
    assert media.rgb_to_i420(rgb, buf) is buf and buf.min() > 0
    with pytest.raises(ValueError, match="even"):
        media.rgb_to_i420(rgb[:5])


def test_writer_respects_overwrite_before_any_work(tmp_path):
    target = tmp_path / "o.mp4"
    target.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists"):
        media.VideoWriter(target, fps=25, size=(64, 48))
    assert target.read_bytes() == b"precious"
    _write(target, _frames(5), overwrite=True)
    assert count_frames(target) == 5
    assert leftovers(tmp_path) == ["o.mp4"]


@pytest.mark.parametrize("background", [False, True], ids=["with-audio", "background"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_writer_interrupted_leaves_nothing(tmp_path, clips, exc, background):
    extra = {"background": True} if background else {"audio_from": clips["silent"]}
    with pytest.raises(exc):
        with media.VideoWriter(tmp_path / "o.mp4", fps=25, size=(64, 48), **extra) as out:
            for f in _frames(20):
                out.write(f)
            raise exc
    assert leftovers(tmp_path) == []
    if Path("/proc/self").is_dir():
        assert ffmpeg_children() == []


def test_writer_abort_and_zero_frames(tmp_path):
    w = media.VideoWriter(tmp_path / "a.mp4", fps=25, size=(64, 48))
    for f in _frames(5):
        w.write(f)
    w.abort()
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="aborted"):
        w.write(_frames(1)[0])
    assert w.close() is None and leftovers(tmp_path) == []  # e.g. __exit__ after an explicit abort
    with media.VideoWriter(tmp_path / "c.mp4", fps=25, size=(64, 48)) as w:
        w.write(_frames(1)[0])
        w.abort()  # then leaving the block normally writes nothing
    assert leftovers(tmp_path) == []
    with pytest.raises(OutputError, match="no frames"):
        with media.VideoWriter(tmp_path / "b.mp4", fps=25, size=(64, 48)):
            pass
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("size", [(64, 48), (65, 49)])
def test_background_writer_writes_the_same_video(tmp_path, size):
    """background=True (the frames go to ffmpeg from a thread) gives the same frames, padding
    included, and a frame buffer the caller reuses after write() is not lost on odd sizes."""
    frames = _frames(12, size=size)
    plain = _write(tmp_path / "plain.mp4", frames, crf=0, preset="ultrafast")
    threaded = _write(tmp_path / "bg.mp4", [f.copy() for f in frames], crf=0, preset="ultrafast", background=True)
    with media.VideoReader(plain) as a, media.VideoReader(threaded) as b:
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert sorted(leftovers(tmp_path)) == ["bg.mp4", "plain.mp4"]


def test_background_writer_reports_a_dead_encoder(tmp_path):
    out = media.VideoWriter(tmp_path / "o.mp4", fps=25, size=(64, 48), background=True)
    out.write(_frames(1)[0])
    media._generator_process(out._gen, "p").kill()  # ffmpeg dies (disk full, killed, …)
    with pytest.raises(OutputError, match="stopped accepting"):
        for f in _frames(200):  # the thread's failed pipe write surfaces at a later write()
            out.write(f)
    assert leftovers(tmp_path) == [] and out.close() is None


def test_writer_rejects_wrong_frames_and_arguments(tmp_path, clips):
    with pytest.raises(ValueError, match="64×48"):
        with media.VideoWriter(tmp_path / "o.mp4", fps=25, size=(64, 48)) as out:
            out.write(_frames(1)[0])
            out.write(_frames(1, size=(48, 64))[0])
    assert leftovers(tmp_path) == []
    for kw, match in [({"fps": 0}, "frame rate"), ({"fps": float("nan")}, "frame rate"),
                      ({"size": (0, 48)}, "size"), ({"crf": 60}, "crf"), ({"preset": "warp"}, "preset")]:
        args = {"fps": 25, "size": (64, 48), **kw}
        with pytest.raises(UsageError, match=match):
            media.VideoWriter(tmp_path / "o.mp4", **args)
    with pytest.raises(OutputError, match=r"\.webm"):
        media.VideoWriter(tmp_path / "o.webm", fps=25, size=(64, 48))
    with pytest.raises(MediaError, match="no such file"):
        media.VideoWriter(tmp_path / "o.mp4", fps=25, size=(64, 48), audio_from=tmp_path / "nope.mp4")
    assert leftovers(tmp_path) == []


def test_run_ffmpeg_reports_the_meaningful_line(tmp_path):
    with pytest.raises(OutputError, match=r"ffmpeg failed testing: .*No such file") as info:
        media._run_ffmpeg(["-i", str(tmp_path / "absent.mp4"), "-f", "null", "-"],
                          error=OutputError, what="testing", hint="a hint")
    assert info.value.hint == "a hint"
    assert Path(media.ffmpeg_exe()).is_file()


# ───────────────────────────── the shared sample media ─────────────────────────────


@pytest.mark.shared
def test_sample_images(shared_data):
    d = shared_data / "samples/pyfeat"
    alpha = media.read_image(d / "Image_with_alpha.png")
    assert alpha.shape == (1036, 1524, 3)
    bw = media.read_image(d / "BWPictureHuman.jpg")
    assert bw.shape == (1912, 2560, 3) and (bw[..., 0] == bw[..., 2]).all()
    for name in ("multi_face.jpg", "free-mountain-vector-01.jpg", "single_face.jpg"):
        img = media.read_image(d / name)
        assert img.ndim == 3 and img.dtype == np.uint8


@pytest.mark.shared
def test_sample_hevc_movs_decode(shared_data):
    d = shared_data / "samples/pyfeat"
    for name in ("face_noface.mov", "noface_face.mov"):
        info = media.probe_video(d / name)
        assert info.codec == "hevc" and (info.width, info.height) == (960, 540) and info.has_audio
        with media.VideoReader(d / name) as r:
            first = next(r)
        assert first.shape == (540, 960, 3) and first.std() > 5  # real picture, not a blank
    # variable frame rate (26.4 fps average, 30 tbr): ~169 frames, not the 192 of naive reading
    n = count_frames(d / "face_noface.mov")
    assert abs(n - media.probe_video(d / "face_noface.mov").n_frames) <= 3


@pytest.mark.shared
def test_sample_clip_audio(shared_data, tmp_path):
    driving = shared_data / "clips/tpsmm/driving.mp4"  # audio is stream #0, video #1
    info = media.probe_video(driving)
    assert (info.width, info.height, info.fps, info.has_audio) == (410, 412, 25, True)
    assert not media.probe_video(shared_data / "clips/lia-vox/driving1.mp4").has_audio
    out = _write(tmp_path / "o.mp4", _frames(25), audio_from=driving)
    assert media.probe_video(out).has_audio and count_frames(out) == 25


def test_reuse_frame_memory_is_idempotent_and_leaves_user_settings(monkeypatch):
    from reenact import media as m

    m.reuse_frame_memory.cache_clear()
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert m.reuse_frame_memory() is False  # the user's malloc settings win
    m.reuse_frame_memory.cache_clear()
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    first = m.reuse_frame_memory()
    assert isinstance(first, bool) and m.reuse_frame_memory() is first
    m.reuse_frame_memory.cache_clear()
