"""Image and video I/O: the project's only ffmpeg user and its one colour convention.

Everything that leaves this module is RGB uint8, H×W×3, C-contiguous; the BGR of OpenCV and the
raw bytes of ffmpeg are converted once, here. Videos stream frame by frame (constant memory)
through the ffmpeg bundled with imageio-ffmpeg; every subprocess gets an argv list, never a shell.

Reading
  read_image      EXIF orientation applied, grey → 3 channels, alpha composited over mid-grey
                  (ALPHA_BACKGROUND), 16-bit → 8-bit.
  probe_video     VideoInfo from the container header (no decoding).
  VideoReader     iterator of upright frames; variable-frame-rate sources are resampled to a
                  constant rate (info.fps) so that frame i belongs at time i / fps.
Writing (atomic: a hidden temp file beside the target, then os.replace; never a partial target)
  write_image     .png .jpg/.jpeg (quality 95) .webp .bmp .tif/.tiff
  VideoWriter     H.264 yuv420p (BT.709, tagged) with libx264, optional AAC audio from another file.
  check_output_path   validate an output before any long work.

Every failure a user can cause raises a `reenact.errors` class (MediaError and its subclasses
UnsupportedMedia / CorruptMedia for inputs, OutputError for outputs) naming the file, with a hint.
Wrong arrays handed in by calling code are bugs and raise ValueError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import glob
import logging
import math
import numbers
import os
import queue
import re
import secrets
import struct
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Literal

import cv2
import imageio_ffmpeg
import numpy as np

from reenact.errors import (
    CorruptMedia,
    MediaError,
    OutputError,
    ReenactError,
    UnsupportedMedia,
    UsageError,
    from_os_error,
)

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES: frozenset[str] = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})
# What write_image / VideoWriter can produce (H.264 + AAC does not go into .webm or .avi).
WRITABLE_IMAGE_SUFFIXES: frozenset[str] = IMAGE_SUFFIXES
WRITABLE_VIDEO_SUFFIXES: frozenset[str] = frozenset({".mp4", ".m4v", ".mov", ".mkv"})

# Transparent pixels are composited over mid-grey: neutral for the face networks and, unlike
# white or black, it leaves no hard halo around a cut-out portrait.
ALPHA_BACKGROUND = 128

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
# The tool's own encoder settings: an x264 preset with some options changed (`x264_settings`).
# "veryfast-dia" (the default of `reenact video`) is veryfast with the cheapest motion search
# (diamond) and, for frames of LARGE_FRAME pixels or more, no inter sub-partitions (8×8 and
# smaller): there ≈ 25 % less encoder CPU for files and PSNR within ±2 % / 0.1 dB of veryfast's;
# on smaller frames the sub-partitions pay (640×360: +10 % file, −0.26 dB without them), so only
# the search changes (8–25 % less CPU, files +0.9–1.6 %). Measured: README, Performance.
OWN_PRESETS = ("veryfast-dia",)
PRESETS = (*OWN_PRESETS, *X264_PRESETS)
LARGE_FRAME = 1280 * 720


def x264_settings(preset: str, size: tuple[int, int]) -> tuple[str, str | None]:
    """(x264's preset, its `-x264-params` or None) for a preset name (`PRESETS`) and frames of
    `size` (w, h)."""
    if preset not in OWN_PRESETS:
        return preset, None
    if size[0] * size[1] >= LARGE_FRAME:
        return "veryfast", "me=dia:partitions=i8x8,i4x4"
    return "veryfast", "me=dia"

_IMAGE_FORMATS = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "webp": "WebP", "tiff": "TIFF"}
_OTHER_IMAGES = {"gif": "GIF", "heif": "HEIF/AVIF"}
_VIDEO_FORMATS = {"isobmff": "MP4/MOV", "matroska": "Matroska/WebM", "avi": "AVI"}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
MAX_PIXELS_ENV = "REENACT_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 64_000_000  # see max_pixels()
_NAME_MAX = 255  # bytes per path component on ext4, XFS, APFS, NTFS (UTF-16 units)
_FASTSTART = {".mp4", ".m4v", ".mov"}


class _DropResizeNotice(logging.Filter):
    """imageio-ffmpeg warns when ffmpeg's autorotation swaps width and height; we expect it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "frame size for reading" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_DropResizeNotice())


# ───────────────────────────── paths, sniffing, ffmpeg ─────────────────────────────


def _input_path(path: str | os.PathLike) -> Path:
    """An existing, non-empty regular file, or MediaError / CorruptMedia naming it."""
    p = Path(path).expanduser()
    try:
        exists = p.exists()
    except OSError as e:  # a name over the file system's limit, a loop of links…
        raise from_os_error(e, "input") from None
    if not exists:
        raise MediaError(f"{p}: no such file", hint="check the path and its spelling")
    if p.is_dir():
        raise MediaError(f"{p} is a folder, not a file", hint="give one image or video inside it")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise MediaError(f"cannot read {p}: {e.strerror}", hint="check its permissions") from None
    if size == 0:
        raise CorruptMedia(f"{p} is empty (0 bytes)",
                           hint="it was not fully written or downloaded; get a fresh copy")
    return p


def _read_head(p: Path, n: int = 64) -> bytes:
    try:
        with open(p, "rb") as f:
            return f.read(n)
    except OSError as e:
        raise MediaError(f"cannot read {p}: {e.strerror}", hint="check its permissions") from None


def _sniff(head: bytes) -> str | None:
    """Container/format name from the first bytes: a key of _IMAGE_FORMATS, _OTHER_IMAGES,
    _VIDEO_FORMATS, or "text"; None when unrecognised."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:2] == b"BM" and head[14:15] in (b"\x0c", b"(", b"4", b"8", b"@", b"l", b"|"):
        return "bmp"  # the DIB header size byte: 12, 40, 52, 56, 64, 108 or 124
    if head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"AVI "):
        return "webp" if head[8:12] == b"WEBP" else "avi"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[4:8] == b"ftyp":
        return "heif" if head[8:12] in _HEIF_BRANDS else "isobmff"
    if head[4:8] in _QUICKTIME_ATOMS:
        return "isobmff"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    return "text" if _looks_like_text(head) else None


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a multi-byte character cut by the read
            return False
        text = head[:e.start].decode("utf-8")
    return sum(c.isprintable() or c in "\t\r\n" for c in text) >= 0.95 * len(text)


def media_kind(path: str | os.PathLike) -> Literal["image", "video"]:
    """"image" or "video" for an input file: by suffix, else by sniffing its first bytes.

    Raises MediaError (missing, a folder), CorruptMedia (empty) or UnsupportedMedia (neither).
    """
    p = _input_path(path)
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    fmt = _sniff(_read_head(p))
    if fmt in _IMAGE_FORMATS:
        return "image"
    if fmt in _VIDEO_FORMATS:
        return "video"
    raise UnsupportedMedia(
        f"{p}: cannot tell whether this is an image or a video"
        + (f" (its content looks like {_describe(fmt)})" if fmt else ""),
        hint=f"use an image, {_suffix_list(IMAGE_SUFFIXES)}, or a video, {_suffix_list(VIDEO_SUFFIXES)}",
    )


def _describe(fmt: str | None) -> str:
    names = {**_IMAGE_FORMATS, **_OTHER_IMAGES, **_VIDEO_FORMATS, "text": "text"}
    return f"a {names[fmt]} file" if fmt in names else "unknown data"


def _suffix_list(suffixes: frozenset[str]) -> str:
    return " ".join(sorted(suffixes))


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg executable bundled with imageio-ffmpeg (or IMAGEIO_FFMPEG_EXE)."""
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        raise ReenactError(f"ffmpeg is not available: {e}",
                           hint="reinstall imageio-ffmpeg, or set IMAGEIO_FFMPEG_EXE") from None
    # Once per process: a broken ffmpeg must be blamed, not the input it fails to open.
    try:
        probe = subprocess.run([exe, "-version"], stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        works = probe.returncode == 0 and probe.stdout.startswith(b"ffmpeg version")
    except (OSError, subprocess.TimeoutExpired):
        works = False
    if not works:
        raise ReenactError(f"ffmpeg at {exe} does not work (`{exe} -version` fails)",
                           hint="unset IMAGEIO_FFMPEG_EXE, or reinstall imageio-ffmpeg")
    return exe


_NOISE = re.compile(r"^(frame=|size=|video:|\[out#|Press \[q\]|Exiting normally|"
                    r"Conversion failed|At least one output file)")


def _last_ffmpeg_error(stderr: str) -> str:
    """The last line of ffmpeg's stderr that says something, without pointer addresses."""
    for line in reversed(stderr.splitlines()):
        line = line.strip()
        if line and not _NOISE.match(line):
            return re.sub(r"\[(\S+) @ 0x[0-9a-f]+\] ", r"[\1] ", line)
    return "no error message"


def _run_ffmpeg(
    args: list[str],
    *,
    check: bool = True,
    error: type[ReenactError] = MediaError,
    what: str = "",
    hint: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `ffmpeg -hide_banner -nostdin *args` (argv list, no shell), stderr captured as text.

    With check, a non-zero exit raises `error` ("ffmpeg failed <what>: <last stderr line>").
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", *args]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise error(f"ffmpeg took longer than {timeout:.0f} s {what}".rstrip(),
                    hint=hint or "is the file on a slow or stalled drive?") from None
    except OSError as e:
        raise ReenactError(f"cannot run ffmpeg ({e.strerror})", hint="reinstall imageio-ffmpeg") from None
    result = subprocess.CompletedProcess(cmd, proc.returncode, None,
                                         proc.stderr.decode("utf-8", "replace"))
    if check and result.returncode != 0:
        raise error(f"ffmpeg failed{' ' + what if what else ''}: {_last_ffmpeg_error(result.stderr)}",
                    hint=hint)
    return result


def _ffmpeg_path(p: Path) -> str:
    """Absolute path for ffmpeg, so that a name like "a:b.mp4" is not taken for a protocol."""
    return os.path.abspath(p)


# ───────────────────────────────────── images ─────────────────────────────────────


def read_image(path: str | os.PathLike, *, at_least: int = 0) -> np.ndarray:
    """Read a still image as RGB uint8, H×W×3, C-contiguous, upright.

    The content decides the format (a PNG named .jpg reads fine). EXIF orientation (JPEG APP1,
    PNG eXIf, WebP EXIF; TIFF is oriented by its decoder) is applied. Grey → 3 equal channels;
    RGBA / grey+alpha → composited over mid-grey (ALPHA_BACKGROUND); 16-bit → 8-bit (v / 257,
    rounded). Very large images are read at full size (OpenCV's limit is 2^30 pixels).

    `at_least` (for a caller that shrinks the image to that longest side anyway): a JPEG two or
    more times larger is decoded at 1/2, 1/4 or 1/8 of its size by libjpeg itself, the most
    that keeps its longest side ≥ `at_least` (a 12 MP photo for 1920: 54 → 16 ms).

    Raises MediaError (missing, a folder, unreadable), CorruptMedia (empty, truncated,
    undecodable) or UnsupportedMedia (a video, text, GIF/HEIF, an unknown suffix and content).
    """
    p = _input_path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise MediaError(f"cannot read {p}: {e.strerror}", hint="check its permissions") from None
    fmt = _sniff(data[:64])
    _check_image_format(p, fmt)
    size = image_size(data, fmt)
    _check_size(p, size, "image")  # from the header: nothing decoded yet
    img = _decode(p, data, fmt, reduce=_jpeg_reduction(max(size), at_least) if fmt == "jpeg" else 1)
    if fmt != "tiff":  # OpenCV's TIFF decoder orients the image itself, whatever the flags
        img = _apply_orientation(img, _exif_orientation(data, fmt))
    return np.ascontiguousarray(_to_rgb8(p, img))


def max_pixels() -> int:
    """The largest image or video frame read, in pixels: REENACT_MAX_PIXELS, default 64 MP
    (a decoded 64 MP RGB image takes 192 MiB; a 30000² "decompression bomb" would take 2.5 GiB)."""
    value = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        return int(float(value)) if value.strip() else DEFAULT_MAX_PIXELS
    except ValueError:
        raise UsageError(f"{MAX_PIXELS_ENV}={value!r} is not a number",
                         f"give a pixel count, e.g. {MAX_PIXELS_ENV}=100000000") from None


def _check_size(p: Path, size: tuple[int, int] | None, what: str) -> None:
    """Refuse, before decoding, pictures whose header is unreadable or that exceed max_pixels()."""
    if size is None:
        raise CorruptMedia(f"{p}: its {what} header is damaged (no readable width and height)",
                           hint="re-export or re-download it")
    w, h = size
    if w * h > max_pixels():
        raise UnsupportedMedia(f"{p} is {w}×{h} pixels ({w * h / 1e6:.0f} MP), above the limit of "
                               f"{max_pixels() / 1e6:g} MP", hint=f"scale it down, or raise {MAX_PIXELS_ENV}")


def image_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) from an image file's header bytes, or None when it is unreadable.
    `fmt`: a key of _IMAGE_FORMATS (from `_sniff`). Nothing is decoded."""
    try:
        size = _HEADER_READERS[fmt](data)
    except (struct.error, IndexError, KeyError, ValueError):
        return None
    return size if size and size[0] > 0 and size[1] > 0 else None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":  # the first chunk, right after the 8-byte signature
        return None
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the markers to the first SOFn (baseline, progressive, lossless, arithmetic)."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:  # stray bytes between segments: decoders skip them too
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF or 0xD0 <= marker <= 0xD9 or marker == 0x01:  # fill byte, RSTn/SOI/EOI, TEM
            i += 1 if marker == 0xFF else 2
            continue
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the frame tag and start code
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit (size − 1) fields after the signature byte
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit (size − 1) canvas
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 core header: 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    w, h = struct.unpack("<ii", data[18:26])
    return w, abs(h)  # a negative height means top-down rows


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first IFD."""
    end = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(end + "I", data[4:8])[0]
    found = {}
    for k in range(struct.unpack(end + "H", data[ifd:ifd + 2])[0]):
        tag, kind, _, value = struct.unpack(end + "HHI4s", data[ifd + 2 + 12 * k:ifd + 14 + 12 * k])
        if tag in (256, 257):
            found[tag] = struct.unpack(end + ("H" if kind == 3 else "I"), value[:2 if kind == 3 else 4])[0]
    return (found[256], found[257]) if len(found) == 2 else None


_HEADER_READERS = {"png": _png_size, "jpeg": _jpeg_size, "webp": _webp_size, "bmp": _bmp_size, "tiff": _tiff_size}


def _check_image_format(p: Path, fmt: str | None) -> None:
    suffix = p.suffix.lower()
    if fmt in _IMAGE_FORMATS:
        return
    if fmt in _VIDEO_FORMATS or (fmt is None and suffix in VIDEO_SUFFIXES):
        raise UnsupportedMedia(f"{p} is a video, not an image",
                               hint=f"give a still image here: {_suffix_list(IMAGE_SUFFIXES)}")
    if fmt is None and suffix in IMAGE_SUFFIXES:
        raise CorruptMedia(f"{p} is not a valid {suffix} image: its content is unrecognised",
                           hint="the file is damaged; re-export or re-download it")
    raise UnsupportedMedia(
        f"{p} is not an image reenact reads (its content looks like {_describe(fmt)})",
        hint=f"convert it to PNG or JPEG; reenact reads {_suffix_list(IMAGE_SUFFIXES)}",
    )


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own stderr warnings while decoding; failures become our exceptions."""
    previous = cv2.getLogLevel()
    cv2.setLogLevel(0)
    try:
        yield
    finally:
        cv2.setLogLevel(previous)


_JPEG_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}


def _jpeg_reduction(side: int, at_least: int) -> int:
    """The largest of 1, 2, 4, 8 that keeps `side` / it ≥ `at_least` (1 when `at_least` is 0)."""
    reduce = 1
    while at_least and reduce < 8 and side // (2 * reduce) >= at_least:
        reduce *= 2
    return reduce


def _decode(p: Path, data: bytes, fmt: str, reduce: int = 1) -> np.ndarray:
    """OpenCV decode without orientation: BGR(A)/grey, uint8 or uint16; a JPEG at 1/`reduce`
    of its size (1, 2, 4, 8)."""
    # JPEG has no alpha and no 16 bits; IMREAD_COLOR also turns CMYK and grey into BGR.
    flags = (_JPEG_REDUCED[reduce] | cv2.IMREAD_IGNORE_ORIENTATION) if fmt == "jpeg" else cv2.IMREAD_UNCHANGED
    try:
        with _quiet_opencv():
            img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:
        raise CorruptMedia(f"{p} could not be decoded: {str(e).strip().splitlines()[-1]}",
                           hint="it may be damaged, or larger than OpenCV's 2^30-pixel limit") from None
    if img is None or img.size == 0:
        raise CorruptMedia(f"{p} could not be decoded as {_IMAGE_FORMATS[fmt]}",
                           hint="it is truncated or damaged; re-download or re-export it")
    return img


def _to_rgb8(p: Path, img: np.ndarray) -> np.ndarray:
    """BGR(A)/grey(+alpha), uint8/uint16 → RGB uint8 H×W×3 (alpha over ALPHA_BACKGROUND)."""
    if img.dtype == np.uint16:
        img = cv2.convertScaleAbs(img, alpha=255.0 / 65535.0)  # rounds, no big temporaries
    elif img.dtype != np.uint8:
        raise UnsupportedMedia(f"{p} has {img.dtype} pixels", hint="save it with 8 or 16 bits per channel")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 2:  # grey + alpha (OpenCV usually expands it to BGRA already)
        img = np.dstack([img[:, :, 0]] * 3 + [img[:, :, 1]])
    if img.shape[2] == 4:
        img = _composite(img)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _composite(bgra: np.ndarray) -> np.ndarray:
    """BGRA uint8 → BGR uint8 over ALPHA_BACKGROUND, exact integer rounding."""
    alpha = bgra[:, :, 3:4]
    if alpha.min() == 255:
        return bgra[:, :, :3]
    a = alpha.astype(np.uint16)
    out = bgra[:, :, :3] * a  # ≤ 255·255 fits uint16
    out += (255 - a) * ALPHA_BACKGROUND + 127
    out //= 255
    return out.astype(np.uint8)


# EXIF orientation value → the operation that makes the stored pixels upright.
_ORIENT = {
    2: lambda im: cv2.flip(im, 1),
    3: lambda im: cv2.rotate(im, cv2.ROTATE_180),
    4: lambda im: cv2.flip(im, 0),
    5: cv2.transpose,
    6: lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
    7: lambda im: cv2.rotate(cv2.transpose(im), cv2.ROTATE_180),
    8: lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def _apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    op = _ORIENT.get(orientation)
    return img if op is None else op(img)


def _exif_orientation(data: bytes, fmt: str) -> int:
    """EXIF Orientation (1–8) of a JPEG / PNG / WebP file; 1 when absent or unreadable."""
    find = {"jpeg": _jpeg_exif, "png": _png_exif, "webp": _webp_exif}.get(fmt)
    try:
        tiff = find(data) if find else None
        return _tiff_orientation(tiff) if tiff else 1
    except (struct.error, IndexError, KeyError, ValueError):
        return 1  # a damaged EXIF block must not stop a readable photo


def _jpeg_exif(data: bytes) -> bytes | None:
    """TIFF block of the first APP1 "Exif" segment before the image data."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xD9, 0xDA):  # end of image / start of scan: no more metadata
            return None
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 1 if marker == 0xFF else 2  # fill byte or marker without length
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker == 0xE1 and data[i + 4:i + 10] == b"Exif\x00\x00":
            return data[i + 10:i + 2 + length]
        i += 2 + length
    return None


def _png_exif(data: bytes) -> bytes | None:
    i = 8
    while i + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[i:i + 8])
        if kind == b"eXIf":
            return data[i + 8:i + 8 + length]
        if kind == b"IEND":
            return None
        i += 12 + length
    return None


def _webp_exif(data: bytes) -> bytes | None:
    i = 12
    while i + 8 <= len(data):
        kind, length = struct.unpack("<4sI", data[i:i + 8])
        if kind == b"EXIF":
            block = data[i + 8:i + 8 + length]
            return block[6:] if block.startswith(b"Exif\x00\x00") else block
        i += 8 + length + (length & 1)
    return None


def _tiff_orientation(tiff: bytes) -> int:
    """Tag 0x0112 of IFD0 in a TIFF-structured EXIF block."""
    order = {b"II": "<", b"MM": ">"}[tiff[:2]]
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for k in range(count):
        tag, typ, _n, value = struct.unpack(order + "HHI4s", tiff[ifd + 2 + 12 * k:ifd + 14 + 12 * k])
        if tag == 0x0112 and typ == 3:
            (orientation,) = struct.unpack(order + "H", value[:2])
            return orientation if 1 <= orientation <= 8 else 1
    return 1


_JPEG_QUALITY = 95
_ENCODE_PARAMS = {
    ".jpg": [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY],
    ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY],
    ".webp": [cv2.IMWRITE_WEBP_QUALITY, _JPEG_QUALITY],
    ".png": [cv2.IMWRITE_PNG_COMPRESSION, 3],
}


def write_image(path: str | os.PathLike, rgb: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write an RGB uint8 H×W×3 image atomically; the format follows the suffix.

    .png, .jpg/.jpeg (quality 95), .webp (quality 95), .bmp, .tif/.tiff. The bytes go to a hidden
    temp file beside the target (".<stem>.<random>.tmp<suffix>") that is then os.replace'd onto
    it; on any failure, Ctrl-C included, the temp file is removed and the target is untouched.
    Returns the resolved target. Raises OutputError (exists and not overwrite, folder missing or
    not writable, unknown suffix, disk full) and ValueError for an array of the wrong kind.
    """
    target = check_output_path(path, overwrite=overwrite, kinds=WRITABLE_IMAGE_SUFFIXES)
    _check_rgb(rgb)
    suffix = target.suffix.lower()
    try:
        ok, buf = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _ENCODE_PARAMS.get(suffix, []))
    except cv2.error:  # e.g. WebP stops at 16383 pixels a side
        ok = False
    if not ok:
        raise OutputError(f"could not encode a {rgb.shape[1]}×{rgb.shape[0]} image as {suffix} for {target}",
                          hint="try .png or .jpg")
    tmp, fd = _create_temp(target)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        _unlink(tmp)
        if isinstance(e, OSError):
            raise OutputError(f"could not write {target}: {e.strerror or e}",
                              hint="check the free space and permissions of that folder") from None
        raise
    return target


def _check_rgb(rgb: object, size: tuple[int, int] | None = None) -> None:
    """ValueError unless rgb is a uint8 H×W×3 array (of (w, h) == size when given)."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        desc = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"expected an RGB uint8 H×W×3 array, got a {desc}")
    if size is not None and (rgb.shape[1], rgb.shape[0]) != size:
        raise ValueError(f"frame is {rgb.shape[1]}×{rgb.shape[0]}, the video is {size[0]}×{size[1]}")


# ───────────────────────────────────── outputs ─────────────────────────────────────


def check_output_path(path: str | os.PathLike, *, overwrite: bool, kinds: frozenset[str],
                      inputs: tuple = ()) -> Path:
    """Validate an output path before any long work; returns it with its folder resolved.

    The suffix (any case) must be in `kinds`; the folder must exist (it is not created: the
    error says how) and accept a new file (tried for real, so read-only mounts are caught);
    the target must not exist unless `overwrite`. Raises OutputError with a hint.
    """
    try:
        target = _check_output_path(Path(path).expanduser(), overwrite=overwrite, kinds=kinds)
    except OSError as e:  # a name too long, a folder we may not look into…
        raise from_os_error(e, "output") from None
    check_not_an_input(target, inputs)
    return target


def check_not_an_input(target: str | os.PathLike, inputs: tuple = ()) -> None:
    """OutputError when the output file `target` is one of `inputs` (same device and inode:
    other spellings, hard links and symbolic links too)."""
    for source in _input_files(inputs):
        if _same_file(Path(target), source):
            raise OutputError(f"{target} is also an input ({source}); it is never overwritten",
                              hint="choose another output name with -o")


def check_output_folder(path: str | os.PathLike, inputs: tuple = ()) -> None:
    """OutputError when an output folder (replaced as a whole with --overwrite: a report folder)
    is one of the inputs or holds one: replacing it would delete the input."""
    try:
        target = Path(path).expanduser().resolve()
    except OSError:
        return  # an unusable name: the output checks say so
    for source in _input_files(inputs):
        try:
            src = source.expanduser().resolve()
        except OSError:
            continue
        if src.exists() and (src == target or target in src.parents or _same_file(target, src)):
            raise OutputError(f"{path} is or holds an input ({source}); it is never replaced",
                              hint="choose another output folder with -o")


def _input_files(inputs) -> Iterator[Path]:
    """The paths among `inputs` (paths, lists of paths, quoted globs; None skipped)."""
    for item in inputs if isinstance(inputs, (list, tuple)) else [inputs]:
        if item is None:
            continue
        if isinstance(item, (list, tuple)):
            yield from _input_files(item)
            continue
        text = os.fspath(item)
        yield from (Path(m) for m in glob.glob(text)) if glob.has_magic(text) else [Path(text)]


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths are one file (same device and inode: links and other spellings too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing: an output that does not exist yet is no input
        return False


def check_input_names(*paths: str | os.PathLike) -> None:
    """MediaError for an input whose path has a name longer than the file system allows (such
    a file cannot exist; checked before an output name is derived from it)."""
    for path in paths:
        if any(len(os.fsencode(part)) > _NAME_MAX for part in Path(path).parts):
            raise from_os_error(OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path)), "input")


def _check_output_path(p: Path, *, overwrite: bool, kinds: frozenset[str]) -> Path:
    p = p.parent.resolve() / p.name
    suffix = p.suffix.lower()
    if p.is_dir():
        example = p / ("result" + _example_suffix(kinds))
        raise OutputError(f"{p} is a folder", hint=f"give a file name, e.g. {example}")
    if suffix not in kinds:
        raise OutputError(f"{p}: cannot write {f'{suffix} files' if suffix else 'a file without a suffix'}",
                          hint=f"end the name with one of: {_suffix_list(kinds)}")
    if not p.parent.is_dir():
        what = "is not a folder" if p.parent.exists() else "does not exist"
        raise OutputError(f"output folder {p.parent} {what}", hint=f"create it first: mkdir -p {p.parent}")
    if p.exists() and not overwrite:
        raise OutputError(f"{p} already exists", hint="pass --overwrite to replace it, or choose another name")
    tmp, fd = _create_temp(p)
    os.close(fd)
    _unlink(tmp)
    return p


def _example_suffix(kinds: frozenset[str]) -> str:
    return next((s for s in (".mp4", ".png") if s in kinds), min(kinds))


def _create_temp(target: Path) -> tuple[Path, int]:
    """Create ".<stem>.<random>.tmp<suffix>" beside target (O_EXCL, mode 0666 & ~umask)."""
    for _ in range(100):
        tmp = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}")
        try:
            return tmp, os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        except OSError as e:
            raise OutputError(f"cannot write in {target.parent}: {e.strerror}",
                              hint="choose a folder you can write to") from None
    raise OutputError(f"cannot create a temporary file in {target.parent}")  # pragma: no cover


def _unlink(p: Path | None) -> None:
    """Remove p if it is there; cleanup must never mask the error that caused it."""
    if p is not None:
        with contextlib.suppress(OSError):
            os.unlink(p)


# ───────────────────────────────────── probing ─────────────────────────────────────


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a video holds, as VideoReader delivers it.

    width, height: pixels of the delivered (upright) frames, i.e. already swapped for 90°/270°.
    fps: frames per second of the delivered frames (exact NTSC rates restored: 23.98 → 24000/1001;
      a variable-rate source reports its average rate, and VideoReader resamples to it).
    n_frames: estimate round(duration × fps) — for progress bars, not loop bounds: headers hold
      no exact count, and the duration is the longest stream's (audio may outlast the video);
      None when the duration is unknown.
    duration: seconds, None when unknown. has_audio: an audio stream exists. codec: e.g. "h264".
    rotation: clockwise degrees (0/90/180/270) the stored frames are turned to be shown upright
      (the classic `rotate` tag; ffmpeg's display matrix prints the opposite sign).
    """

    width: int
    height: int
    fps: float
    n_frames: int | None
    duration: float | None
    has_audio: bool
    codec: str | None
    rotation: int


@dataclasses.dataclass(frozen=True)
class _Streams:
    """Parsed `ffmpeg -i` header: the first real video stream and the first audio stream."""

    video_index: int | None
    video_desc: str
    video_block: str  # the stream line and its metadata / side-data lines
    audio_index: int | None
    duration: float | None


_STREAM = re.compile(r"^\s*Stream #0:(\d+)\S*: (Video|Audio|Subtitle|Data|Attachment): (.*)$")


def _header(p: Path, fmt: str | None) -> _Streams:
    """Run `ffmpeg -i p` and parse the streams; CorruptMedia / MediaError when ffmpeg cannot open
    it. fmt is what _sniff made of the first bytes (it words the error)."""
    stderr = _run_ffmpeg(["-i", _ffmpeg_path(p)], check=False, timeout=60, what=f"reading {p}").stderr
    if "Input #0" not in stderr:
        raise _open_error(p, stderr, fmt)
    lines = stderr.splitlines()
    video: tuple[int, str, str] | None = None
    audio = None
    for i, line in enumerate(lines):
        m = _STREAM.match(line)
        if not m:
            continue
        kind, desc = m.group(2), m.group(3)
        if kind == "Video" and video is None and "(attached pic)" not in desc:
            video = (int(m.group(1)), desc, _indented_block(lines, i))
        elif kind == "Audio" and audio is None:
            audio = int(m.group(1))
    d = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", stderr)
    duration = int(d[1]) * 3600 + int(d[2]) * 60 + float(d[3]) if d else None
    if video is None:
        return _Streams(None, "", "", audio, duration or None)
    return _Streams(video[0], video[1], video[2], audio, duration or None)


def _indented_block(lines: list[str], i: int) -> str:
    """Line i and the lines below it indented deeper (a stream's metadata and side data)."""
    depth = len(lines[i]) - len(lines[i].lstrip())
    end = i + 1
    while end < len(lines) and len(lines[end]) - len(lines[end].lstrip()) > depth:
        end += 1
    return "\n".join(lines[i:end])


def _open_error(p: Path, stderr: str, fmt: str | None) -> MediaError:
    """The right exception for an input ffmpeg could not open."""
    last = _last_ffmpeg_error(stderr)
    if "Permission denied" in stderr:
        return MediaError(f"cannot read {p}: permission denied", hint="check its permissions")
    if fmt is None:
        return CorruptMedia(f"{p} is not a valid {p.suffix or 'video'} file: its content is unrecognised",
                            hint="the file is damaged or not a video")
    if "moov atom not found" in stderr:
        return CorruptMedia(f"{p} is incomplete: its index (moov atom) is missing",
                            hint="the recording or download was cut short; get a complete copy")
    if "Invalid data found" in stderr:
        return CorruptMedia(f"{p} could not be read as a video: invalid data",
                            hint="the file is damaged or not a video")
    return CorruptMedia(f"{p} could not be opened: {last}", hint="the file is damaged or not a video")


def _isobmff_truncated(p: Path) -> bool:
    """True when an MP4/MOV top-level box claims more bytes than the file has left.

    ffmpeg quietly decodes what is there when the index comes first (fast-start files), so a
    file cut short would otherwise pass for a shorter video.
    """
    with open(p, "rb") as f:
        size, pos = os.fstat(f.fileno()).st_size, 0
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            n, kind = struct.unpack(">I4s", head[:8])
            if n == 1 and len(head) == 16:
                (n,) = struct.unpack(">Q", head[8:])
            if n == 0 or n < 8 or not kind.isascii() or not kind.decode("ascii").isprintable():
                return False  # "to end of file", or trailing bytes that are not a box
            pos += n
        return pos > size


def _rate(desc: str, unit: str) -> float | None:
    m = re.search(rf"([\d.]+)(k?) {unit}\b", desc)
    return float(m[1]) * (1000 if m[2] else 1) if m else None


def _exact_fps(fps: float) -> float:
    """ffmpeg prints rates with 2 decimals; restore the NTSC ones (23.98 → 24000/1001)."""
    for base in (24, 30, 48, 60, 120, 240):
        ntsc = base * 1000 / 1001
        if abs(fps - ntsc) < 0.006:
            return ntsc
    return fps


def _rotation(block: str) -> int:
    """Clockwise display rotation from the display matrix (counter-clockwise there) or `rotate`."""
    m = re.search(r"display ?matrix: rotation of (-?[\d.]+) degrees", block, re.IGNORECASE)
    if m:
        return int(round(-float(m[1]) / 90.0)) * 90 % 360
    m = re.search(r"^\s*rotate\s*:\s*(-?\d+)", block, re.MULTILINE)
    return int(round(int(m[1]) / 90.0)) * 90 % 360 if m else 0


def _probe(path: str | os.PathLike) -> tuple[VideoInfo, _Streams, bool]:
    """probe_video plus the parsed streams and whether the frame rate is variable."""
    p = _input_path(path)
    fmt = _sniff(_read_head(p))
    if fmt in _IMAGE_FORMATS or fmt in _OTHER_IMAGES or (not fmt and p.suffix.lower() in IMAGE_SUFFIXES):
        raise UnsupportedMedia(f"{p} is an image, not a video",
                               hint=f"give a video here: {_suffix_list(VIDEO_SUFFIXES)}")
    if fmt == "text":
        raise UnsupportedMedia(f"{p} is a text file, not a video",
                               hint=f"give a video here: {_suffix_list(VIDEO_SUFFIXES)}")
    if fmt == "isobmff" and _isobmff_truncated(p):
        raise CorruptMedia(f"{p} is truncated: the file ends before its last section does",
                           hint="the recording, copy or download was cut short; get a complete copy")
    s = _header(p, fmt)
    if s.video_index is None:
        only_audio = " (audio only)" if s.audio_index is not None else ""
        raise UnsupportedMedia(f"{p} has no video stream{only_audio}", hint="give a video with moving pictures")
    size = re.search(r", (\d+)x(\d+)\b", s.video_desc)
    fps, tbr = _rate(s.video_desc, "fps"), _rate(s.video_desc, "tbr")
    if not size or not (fps or tbr):
        raise CorruptMedia(f"{p}: the video stream has no usable size or frame rate",
                           hint="the file is damaged; re-export it")
    w, h = int(size[1]), int(size[2])
    _check_size(p, (w, h), "video")
    rotation = _rotation(s.video_block)
    if rotation in (90, 270):
        w, h = h, w
    rate = _exact_fps(fps or tbr)
    n = round(s.duration * rate) if s.duration else None
    codec = s.video_desc.split(" ", 1)[0].strip(",") or None
    info = VideoInfo(w, h, rate, n, s.duration, s.audio_index is not None, codec, rotation)
    return info, s, bool(fps and tbr and abs(fps - tbr) > 0.01)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """VideoInfo of a video file from its container header (fast: nothing is decoded).

    Raises MediaError (missing, a folder, unreadable), CorruptMedia (empty, truncated so the
    header is gone, invalid data) or UnsupportedMedia (an image, text, audio only).
    """
    return _probe(path)[0]


# ───────────────────────────────────── reading ─────────────────────────────────────


def _generator_process(gen: object, name: str) -> subprocess.Popen | None:
    """The ffmpeg Popen held by an imageio-ffmpeg generator, to reap it for sure (best effort)."""
    proc = _generator_local(gen, name)
    return proc if isinstance(proc, subprocess.Popen) else None


def _generator_local(gen: object, name: str) -> object:
    """A local variable of a generator (imageio-ffmpeg's process or log catcher), or None."""
    frame = getattr(gen, "gi_frame", None)
    return frame.f_locals.get(name) if frame is not None else None


def _reap(proc: subprocess.Popen | None) -> int | None:
    """Kill proc if still running and wait for it; its exit status (None if unknown)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        return proc.wait(timeout=10)
    return None


class VideoReader:
    """Stream the frames of a video: RGB uint8 H×W×3 (writable, C-contiguous), upright.

    Constant memory: one frame at a time from an ffmpeg pipe (imageio_ffmpeg.read_frames).
    Rotation metadata is applied by ffmpeg, and `info.width/height` are those of the frames.
    Frames come at the constant rate `info.fps` (a variable-rate source's average) so that frame
    i belongs at time i / fps and stays in sync with the audio: where the decoder cannot produce
    a frame (corrupt data), ffmpeg repeats the previous one, and surplus frames are dropped; once
    the stream is exhausted `repeated` and `dropped` count them. One pass only. Use as a context
    manager, or call close(): ffmpeg is stopped and reaped even when the loop is left early.

        with VideoReader("driver.mp4") as video:
            for rgb in video: ...

    `background=True` decodes ahead in a thread (at most `QUEUE` frames wait): the pipe read and
    copy of the next frame overlap the caller's work on this one; errors are raised the same way.
    `max_side`: frames longer than that on a side come shrunk to it (`scaled_size`) by ffmpeg,
    averaging as `pipeline.downscale` does, so a large video never crosses the pipe at full size.

    Raises (at construction) what probe_video raises; while iterating, CorruptMedia when
    decoding breaks off mid-frame or yields no frame at all.
    """

    QUEUE = 2  # frames decoded ahead by the background thread

    def __init__(self, path: str | os.PathLike, *, background: bool = False, max_side: int = 0) -> None:
        self._gen = None
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._closing = threading.Event()
        self.frames_read = self.repeated = self.dropped = 0
        info, streams, _ = _probe(path)
        self.path = Path(path).expanduser()
        fps = Fraction(info.fps).limit_denominator(100_000)
        # cfr also for constant-rate sources: frames lost to corrupt data are filled, not skipped
        timing = ["-fps_mode", "cfr", "-r", str(fps)]
        w, h = scaled_size(info.width, info.height, max_side)
        scale = ["-vf", f"scale={w}:{h}:flags=area"] if (w, h) != (info.width, info.height) else []
        self._gen = imageio_ffmpeg.read_frames(
            _ffmpeg_path(self.path), output_params=["-map", f"0:{streams.video_index}", *timing, *scale])
        try:
            meta = next(self._gen)
        except Exception as e:  # imageio raises OSError/RuntimeError, or fails parsing the header
            self.close()
            raise CorruptMedia(f"{self.path}: ffmpeg cannot decode its video ({_last_ffmpeg_error(str(e))})",
                               hint="the file is damaged or uses a codec this ffmpeg lacks") from None
        self._w, self._h = meta["size"]
        self.info = dataclasses.replace(info, width=self._w, height=self._h)
        self._log = _generator_local(self._gen, "log_catcher")  # ffmpeg's stderr: dup=/drop= counts
        if self._log is not None:
            # imageio-ffmpeg stops its stderr reader as soon as the frames end, often before
            # ffmpeg has written its final statistics line (under load the dup= count was lost
            # in 3 of 60 reads); left running, the reader ends at ffmpeg's exit (stderr closes;
            # imageio kills an ffmpeg that does not quit within 1.5 s)
            self._log.stop_me = lambda: None
        if background:  # decode (pipe read + copy) ahead in a thread, while the caller works
            self._queue = queue.Queue(maxsize=self.QUEUE)
            self._thread = threading.Thread(target=_prefetch, args=(weakref.ref(self), self._queue, self._closing),
                                            name="VideoReader", daemon=True)
            self._thread.start()

    def __iter__(self) -> VideoReader:
        return self

    def __next__(self) -> np.ndarray:
        if self._queue is None:
            return self._next_or_close()
        if self._thread is None:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, np.ndarray):
            return item
        self.close()
        raise item

    def _next_or_close(self) -> np.ndarray:
        try:
            return self._read()
        except BaseException:
            self.close()
            raise

    def _read(self) -> np.ndarray:
        """The next frame from ffmpeg; StopIteration at the end, CorruptMedia when it breaks off."""
        if self._gen is None:
            raise StopIteration
        try:
            raw = next(self._gen)
        except StopIteration:
            self._count_repairs()
            if self.frames_read == 0:
                raise CorruptMedia(f"{self.path}: no frame could be decoded",
                                   hint="the video data is damaged or truncated") from None
            raise
        except (OSError, RuntimeError):
            raise CorruptMedia(f"{self.path}: decoding broke off at frame {self.frames_read + 1}",
                               hint="the file is truncated or damaged") from None
        self.frames_read += 1
        return np.frombuffer(raw, np.uint8).reshape(self._h, self._w, 3).copy()

    def _count_repairs(self) -> None:
        """`repeated` / `dropped` from ffmpeg's final statistics line (…dup=N drop=M…)."""
        get_text = getattr(self._log, "get_text", None)
        found = re.findall(r"dup=\s*(\d+)\s+drop=\s*(\d+)", get_text(5.0)) if get_text else []  # waits only until ffmpeg has exited
        if found:
            self.repeated, self.dropped = map(int, found[-1])

    def close(self) -> None:
        """Stop ffmpeg (killed if it does not quit) and reap it. Idempotent."""
        thread, self._thread = self._thread, None
        self._closing.set()
        if thread is not None and thread is not threading.current_thread():
            if thread.is_alive():  # unblock a read in progress, then let the thread end
                proc = _generator_process(self._gen, "process") if self._gen is not None else None
                if proc is not None and proc.poll() is None:
                    proc.kill()
                thread.join()
        gen, self._gen = self._gen, None
        if gen is not None:
            proc = _generator_process(gen, "process")
            gen.close()
            _reap(proc)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _prefetch(reader: weakref.ref, frames: queue.Queue, closing: threading.Event) -> None:
    """A background VideoReader's thread: frames into the queue, then the exception that ended
    them (StopIteration, CorruptMedia, …), which __next__ raises in the caller's thread. Holds
    the reader only while reading a frame, so that a dropped reader is collected (and closed)."""
    while not closing.is_set():
        r = reader()
        if r is None:
            return
        try:
            item = r._read()
        except BaseException as e:  # noqa: BLE001 — handed over, raised by __next__
            item = e.with_traceback(None)
        del r  # may close the reader (its last reference): `closing` is then set
        while not closing.is_set():
            try:
                frames.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if not isinstance(item, np.ndarray):
            return


# ───────────────────────────────────── writing ─────────────────────────────────────


class _Abort(BaseException):
    """Thrown into imageio's writer generator: it then kills ffmpeg instead of waiting."""


def _audio_stream(path: str | os.PathLike | None) -> Path | None:
    """path if it holds an audio stream (any file ffmpeg reads: video or audio-only), else None."""
    if path is None:
        return None
    p = _input_path(path)
    return p if _header(p, _sniff(_read_head(p))).audio_index is not None else None


def scaled_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    """(width, height) shrunk so the longest side is ≤ `max_side` (0: unchanged)."""
    if not max_side or max(h, w) <= max_side:
        return w, h
    f = max_side / max(h, w)
    return max(1, round(w * f)), max(1, round(h * f))  # a 20000×1 sliver keeps one row


def _check_writer_args(fps: float, size: tuple[int, int], crf: int, preset: str) -> None:
    if not (isinstance(fps, numbers.Real) and math.isfinite(fps) and 0 < fps <= 1000):
        raise UsageError(f"frame rate {fps!r} is not usable", hint="give a positive number up to 1000")
    if (len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size)):
        raise UsageError(f"video size {size!r} is not usable", hint="give (width, height) in pixels")
    if not 0 <= crf <= 51:
        raise UsageError(f"crf {crf} is out of range",
                         hint="use 0–51: 0 is lossless, 18 looks lossless, 51 is worst")
    if preset not in PRESETS:
        raise UsageError(f"unknown x264 preset {preset!r}", hint=f"one of: {', '.join(PRESETS)}")


def _bt709() -> np.ndarray:
    """3×4: [R, G, B, 1] (8-bit levels) → Y, Cb, Cr of BT.709 in limited ("TV") range."""
    kr, kb = 0.2126, 0.0722
    kg = 1.0 - kr - kb
    luma = np.array([kr, kg, kb])
    cb = (np.array([0.0, 0.0, 1.0]) - luma) / (2 * (1 - kb))
    cr = (np.array([1.0, 0.0, 0.0]) - luma) / (2 * (1 - kr))
    return np.c_[np.vstack([luma * 219, cb * 224, cr * 224]) / 255, [16.0, 128.0, 128.0]]


BT709 = _bt709()


def rgb_to_i420(rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(H·3/2, W) uint8 planar YUV 4:2:0 (I420: the Y plane, then Cb and Cr at half size each way)
    of an (H, W, 3) RGB uint8 frame with even H and W; BT.709, limited range, each chroma sample the
    mean of its 2×2 block. What ffmpeg's converter makes of the same frame (within one level,
    measured), for about a fifth of its CPU: `VideoWriter` sends this, half the bytes of RGB.
    `out`: a buffer to fill and return."""
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"I420 needs an even frame size, got {w}×{h}")
    if out is None:
        out = np.empty((h * 3 // 2, w), np.uint8)
    ycc = cv2.transform(rgb, BT709)  # rounded and saturated to uint8
    half = cv2.resize(ycc, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    flat, n = out.reshape(-1), (h // 2) * (w // 2)  # planes: h·w bytes of Y, n of Cb, n of Cr
    cv2.extractChannel(ycc, 0, out[:h])
    cv2.extractChannel(half, 1, flat[h * w:h * w + n].reshape(h // 2, w // 2))
    cv2.extractChannel(half, 2, flat[h * w + n:].reshape(h // 2, w // 2))
    return out


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
FRAME_HEAP_MIN = 1 << 20  # output frames from this many bytes on: `reuse_frame_memory` (video renders)


@functools.lru_cache(maxsize=1)
def reuse_frame_memory() -> bool:
    """Make glibc serve frame-sized blocks (up to 32 MB: a 4K RGB frame) from its heap and keep
    freed ones for reuse, instead of mapping fresh pages for every output frame and returning
    them on free — ≈ 1,600 page faults per 1080p frame, 4–16 ms of CPU per frame at 2 MP. Once per
    process, before a video render of large frames (`FRAME_HEAP_MIN`); peak memory may grow by
    tens of MiB (freed blocks are kept). Left alone where the user set MALLOC_MMAP_THRESHOLD_ /
    MALLOC_TRIM_THRESHOLD_, and off glibc. True when set."""
    if not sys.platform.startswith("linux") or any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_",
                                                                             "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20))
    except (OSError, AttributeError):  # not glibc
        return False


class VideoWriter:
    """Encode RGB uint8 frames to an H.264 (libx264, yuv420p, BT.709) video, atomically.

        with VideoWriter("out.mp4", fps=25, size=(w, h), audio_from="driver.mp4") as out:
            for rgb in frames: out.write(rgb)

    Frames go to ffmpeg converted to I420 (`rgb_to_i420`; imageio_ffmpeg.write_frames,
    macro_block_size=1: never rescaled) which encodes into a hidden temp file beside the target.
    Odd width/height: yuv420p needs even sizes, so the last column/row is repeated once (edge
    replication) — the output is one pixel wider/taller, never resampled. On a clean exit (or
    close()), the first audio stream of `audio_from`, if it has one, is encoded to AAC and muxed
    in (video copied, not re-encoded; audio cut to the video's length), then the result is
    os.replace'd onto the target. On an exception or Ctrl-C in the with-block, or abort(): ffmpeg
    is killed and every temp file deleted. `frames_written` counts frames.

    `background=True` hands each frame to a writer thread (at most `QUEUE` frames wait, so memory
    stays bounded) and returns at once: the pipe write to ffmpeg (a few ms for a large frame)
    overlaps the caller's next frame. The caller must then not modify a frame after write().
    A failure of the thread surfaces at the next write() or at close().

    Raises OutputError (target exists and not overwrite, folder missing/not writable, unknown
    suffix, ffmpeg failing, zero frames written), MediaError for a bad `audio_from` (both at
    construction, before any work), UsageError for bad fps/size/crf/preset, ValueError in write()
    for a frame of the wrong size or type.
    """

    def __init__(self, path: str | os.PathLike, *, fps: float, size: tuple[int, int],
                 audio_from: str | os.PathLike | None = None, overwrite: bool = False,
                 crf: int = 18, preset: str = "medium", background: bool = False) -> None:
        self._gen = None
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = queue.Queue(maxsize=self.QUEUE) if background else None
        self._failed = False
        self._temps: list[Path] = []
        self._state = "open"  # → "done" (target written) or "aborted" (nothing left behind)
        self.frames_written = 0
        self.path = check_output_path(path, overwrite=overwrite, kinds=WRITABLE_VIDEO_SUFFIXES)
        _check_writer_args(fps, size, crf, preset)
        self.fps = Fraction(fps if isinstance(fps, Fraction) else float(fps)).limit_denominator(100_000)
        self.size = (int(size[0]), int(size[1]))
        self._overwrite, self._crf, self._preset = overwrite, crf, preset
        self._audio = _audio_stream(audio_from)
        w, h = self.size
        self._padded = np.empty((h + h % 2, w + w % 2, 3), np.uint8) if (w % 2 or h % 2) else None
        self._i420: np.ndarray | None = None

    QUEUE = 2  # frames waiting for the background writer thread

    def write(self, rgb: np.ndarray) -> None:
        """Append one frame: RGB uint8, exactly size[1]×size[0]×3."""
        if self._state != "open":
            raise ValueError(f"VideoWriter for {self.path} is already {self._state}")
        _check_rgb(rgb, self.size)
        if self._gen is None:
            self._start()
        if self._queue is not None:
            self._check_thread()
            # padding writes into a reused buffer: a queued frame needs its own copy then
            self._queue.put(self._pad(rgb).copy() if self._padded is not None else np.ascontiguousarray(rgb))
        elif not self._send(self._pad(rgb)):
            self._stopped()
        self.frames_written += 1

    def _send(self, frame: np.ndarray) -> bool:
        """One padded, contiguous frame into ffmpeg (as I420, `rgb_to_i420`); False when ffmpeg
        stopped accepting. Called by one thread only (the caller's, or the writer thread)."""
        self._i420 = rgb_to_i420(frame, self._i420)  # reused: the pipe write is done on return
        try:
            self._gen.send(self._i420)
        except OSError:
            return False
        return True

    def _stopped(self) -> None:
        self.abort()
        raise OutputError(f"ffmpeg stopped accepting frames for {self.path}",
                          hint="see ffmpeg's message above; is the disk full?") from None

    def _pump(self) -> None:
        """The background thread: frames from the queue into ffmpeg until None; after a failure
        it only drains the queue (so that write() never blocks on a dead encoder)."""
        while (rgb := self._queue.get()) is not None:
            try:
                if not self._failed and not self._send(rgb):
                    self._failed = True
            except BaseException:  # noqa: BLE001 — reported by write()/close(), never lost
                self._failed = True

    def _check_thread(self) -> None:
        if self._failed:
            self._stop_thread()
            self._stopped()

    def _stop_thread(self) -> None:
        """Let the thread write what is queued, and end it (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _pad(self, rgb: np.ndarray) -> np.ndarray:
        if self._padded is None:
            return np.ascontiguousarray(rgb)
        h, w = rgb.shape[:2]
        buf = self._padded  # reused: send() has written it to the pipe before returning
        buf[:h, :w] = rgb
        buf[:h, w:] = rgb[:, -1:]
        buf[h:, :] = buf[h - 1:h, :]
        return buf

    def _start(self) -> None:
        tmp, fd = _create_temp(self.path)
        os.close(fd)
        self._temps.append(tmp)
        h, w = (self._padded.shape[:2] if self._padded is not None else self.size[::-1])
        preset, options = x264_settings(self._preset, (w, h))
        params = ["-preset", preset, "-crf", str(self._crf), *(["-x264-params", options] if options else []),
                  # the frames come converted with the BT.709 matrix (`rgb_to_i420`); say so, so
                  # that players show true colours
                  "-vf", "setparams=range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709"]
        if self._audio is None and self.path.suffix.lower() in _FASTSTART:
            params += ["-movflags", "+faststart"]
        # fps as a float: older imageio-ffmpeg asserts it; 24000/1001 survives the round trip
        self._gen = imageio_ffmpeg.write_frames(
            str(tmp), (w, h), fps=float(self.fps), quality=None, codec="libx264",
            pix_fmt_in="yuv420p", pix_fmt_out="yuv420p", macro_block_size=1, ffmpeg_log_level="error",
            output_params=params)
        self._gen.send(None)
        if self._queue is not None:
            self._thread = threading.Thread(target=self._pump, name="VideoWriter", daemon=True)
            self._thread.start()

    def close(self) -> Path | None:
        """Finish: flush the encoder, mux audio, move into place. Returns the target path.

        Idempotent. After abort() it does nothing and returns None. On failure nothing is left
        behind and OutputError is raised.
        """
        if self._state != "open":
            return self.path if self._state == "done" else None
        if self.frames_written == 0:
            self.abort()
            raise OutputError(f"no frames were written, so {self.path} was not created",
                              hint="the input produced no frames to encode")
        try:
            self._stop_thread()
            self._check_thread()
            video = self._finish_encoding()
            final = self._mux_audio(video) if self._audio is not None else video
            if not self._overwrite and self.path.exists():
                raise OutputError(f"{self.path} appeared while encoding",
                                  hint="pass --overwrite to replace it, or choose another name")
            os.replace(final, self.path)
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):
                raise OutputError(f"could not write {self.path}: {e.strerror or e}",
                                  hint="check the free space and permissions of that folder") from None
            raise
        self._state = "done"
        self._temps = [t for t in self._temps if t != final]
        for tmp in self._temps:
            _unlink(tmp)
        return self.path

    def _finish_encoding(self) -> Path:
        gen, self._gen = self._gen, None
        proc = _generator_process(gen, "p")
        gen.close()  # closes ffmpeg's stdin and waits for it to finish the file
        status = _reap(proc)
        tmp = self._temps[0]
        if (status not in (0, None)) or not tmp.exists() or tmp.stat().st_size == 0:
            raise OutputError(f"ffmpeg failed to encode {self.path} (exit status {status})",
                              hint="see ffmpeg's message above")
        return tmp

    def _mux_audio(self, video: Path) -> Path:
        out, fd = _create_temp(self.path)
        os.close(fd)
        self._temps.append(out)
        duration = float(self.frames_written / self.fps)
        faststart = ["-movflags", "+faststart"] if self.path.suffix.lower() in _FASTSTART else []
        _run_ffmpeg(
            ["-y", "-i", str(video), "-t", f"{duration:.6f}", "-i", _ffmpeg_path(self._audio),
             "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", *faststart, str(out)],
            error=OutputError, what=f"adding the audio of {self._audio} to {self.path}",
            hint="try again without audio")
        return out

    def abort(self) -> None:
        """Discard everything: kill ffmpeg, delete every temp file. Idempotent; never raises."""
        if self._state == "open":
            self._state = "aborted"
        self._failed = True  # the thread drops what is still queued
        gen, self._gen = self._gen, None
        proc = _generator_process(gen, "p") if gen is not None else None
        if self._thread is not None:
            if proc is not None and proc.poll() is None:
                proc.kill()  # a send in progress in the thread then fails at once
            with contextlib.suppress(Exception):
                self._stop_thread()
        if gen is not None:
            with contextlib.suppress(_Abort, StopIteration, Exception):
                gen.throw(_Abort())
            _reap(proc)
        temps, self._temps = self._temps, []
        for tmp in temps:
            _unlink(tmp)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self._state == "open":
                self.abort()


# ──────────────────────────────── frame folders ────────────────────────────────


def _natural_key(name: str) -> list:
    """"frame10.png" after "frame9.png": digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of a folder in natural order (hidden files skipped); MediaError when
    there are none."""
    p = Path(folder).expanduser()
    files = [f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
             and f.is_file()] if p.is_dir() else []
    if not files:
        raise MediaError(f"{p} holds no image frames",
                         hint=f"a frame folder needs images ({_suffix_list(IMAGE_SUFFIXES)}) named in order")
    return sorted(files, key=lambda f: _natural_key(f.name))


class FrameFolderReader:
    """A folder of images (000000.jpg, 000001.jpg, …) read as a video at `fps`, in natural name
    order: same interface as VideoReader (iterator of RGB uint8 frames, `info`, context manager).
    Every frame must have the first frame's size (CorruptMedia otherwise); no audio."""

    def __init__(self, path: str | os.PathLike, fps: float = 25.0) -> None:
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            raise UsageError(f"--fps {fps:g} is not usable", hint="give a positive frame rate up to 1000")
        self.path = Path(path).expanduser()
        self._files = frame_files(self.path)
        self._i = 0
        first = read_image(self._files[0])
        h, w = first.shape[:2]
        n = len(self._files)
        self.info = VideoInfo(w, h, float(fps), n, n / fps, False, "images", 0)
        self.frames_read = 0

    def __iter__(self) -> FrameFolderReader:
        return self

    def __next__(self) -> np.ndarray:
        if self._i >= len(self._files):
            raise StopIteration
        f = self._files[self._i]
        img = read_image(f)
        if img.shape[:2] != (self.info.height, self.info.width):
            raise CorruptMedia(f"{f} is {img.shape[1]}×{img.shape[0]}, the folder's first frame "
                               f"{self.info.width}×{self.info.height}", hint="all frames of a folder must have one size")
        self._i += 1
        self.frames_read += 1
        return img

    def close(self) -> None:
        self._i = len(self._files)

    def __enter__(self) -> FrameFolderReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_frames(path: str | os.PathLike, *, fps: float | None = None, background: bool = False,
                max_side: int = 0) -> VideoReader | FrameFolderReader:
    """A frame source: a video file (VideoReader) or a folder of images (FrameFolderReader at
    `fps`, default 25). `fps` is for folders only: a video keeps its own rate (UsageError).
    `background`, `max_side`: for a video, as `VideoReader` (a folder's images come as they are)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return FrameFolderReader(p, 25.0 if fps is None else fps)
    if fps is not None:
        raise UsageError("--fps applies to a folder of frames only",
                         hint="a video keeps its own frame rate; leave --fps out")
    return VideoReader(p, background=background, max_side=max_side)


class OpenedAhead:
    """A frame source (`open_frames(path, **kw)`) opened in a thread from now on — probing the
    file and starting its decoder overlap the caller's other work (the reference photos). `take()`
    waits for it and returns it, raising what opening raised; `close()` (or leaving the `with`)
    waits for it too and closes it unless it was taken, so no decoder outlives the caller."""

    def __init__(self, path: str | os.PathLike, **kw) -> None:
        self._result: list = []  # [source] or [exception], once opened
        self._taken = False
        self._thread = threading.Thread(target=self._open, args=(path, kw), name="open-ahead", daemon=True)
        self._thread.start()

    def _open(self, path, kw) -> None:
        try:
            self._result.append(open_frames(path, **kw))
        except BaseException as e:  # noqa: BLE001 — raised by take()
            self._result.append(e)

    def take(self) -> VideoReader | FrameFolderReader:
        self._thread.join()
        result = self._result[0]
        if isinstance(result, BaseException):
            raise result
        self._taken = True
        return result

    def close(self) -> None:
        self._thread.join()
        result = self._result[0]
        if not self._taken and not isinstance(result, BaseException):
            result.close()

    def __enter__(self) -> "OpenedAhead":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ──────────────────────────────── joining ────────────────────────────────


def _concat_list(parts: list[Path], folder: Path) -> Path:
    """An ffmpeg concat-demuxer list naming `parts` (absolute paths, quotes escaped)."""
    lst, fd = _create_temp(folder / "concat.txt")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for part in parts:
            f.write("file '" + os.path.abspath(part).replace("'", "'\\''") + "'\n")
    return lst


def concat_videos(parts: list[str | os.PathLike], path: str | os.PathLike, *, duration: float,
                  audio_from: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Join videos encoded alike (e.g. segments written by VideoWriter with the same settings)
    into `path` without re-encoding (concat demuxer, stream copy), atomically; then the first
    audio stream of `audio_from`, if it has one, is encoded to AAC once over the whole joined
    video and cut to `duration` seconds (so it stays in sync with frame i at i / fps).

    Raises OutputError (target exists and not overwrite, ffmpeg failing) or MediaError for an
    unreadable `audio_from`. Nothing is left behind on failure.
    """
    target = check_output_path(path, overwrite=overwrite, kinds=WRITABLE_VIDEO_SUFFIXES)
    if not parts:
        raise OutputError(f"no video segments to join into {target}")
    audio = _audio_stream(audio_from)
    lst = _concat_list([Path(p) for p in parts], Path(parts[0]).parent)
    tmp, fd = _create_temp(target)
    os.close(fd)
    try:
        args = ["-y", "-f", "concat", "-safe", "0", "-i", str(lst)]
        if audio is not None:
            args += ["-t", f"{duration:.6f}", "-i", _ffmpeg_path(audio), "-map", "0:v:0", "-map", "1:a:0",
                     "-c:a", "aac"]
        else:
            args += ["-map", "0:v:0"]
        faststart = ["-movflags", "+faststart"] if target.suffix.lower() in _FASTSTART else []
        _run_ffmpeg([*args, "-c:v", "copy", *faststart, "-f", _muxer(target), str(tmp)], error=OutputError,
                    what=f"joining the segments of {target}", hint="check the free space of that folder")
        if not overwrite and target.exists():
            raise OutputError(f"{target} appeared while joining",
                              hint="pass --overwrite to replace it, or choose another name")
        os.replace(tmp, target)
    except BaseException:
        _unlink(tmp)
        raise
    finally:
        _unlink(lst)
    return target


def _muxer(target: Path) -> str:
    return {".mkv": "matroska", ".mov": "mov"}.get(target.suffix.lower(), "mp4")
