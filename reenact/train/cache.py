"""Prepared training cache ("pack"): aligned face crops + landmarks computed once with mediapipe.

Training reads only this cache, so it needs neither mediapipe nor the original photos (the GPU
machine has no mediapipe, and the photos do not fit its 64 MiB carry limit). Layout of CACHE/:

  meta.json         format, size, JPEG quality, source, split, counts, reenact version
  index.npz         names (N,) str, identity (N,) int64 (-1 = unknown), shard (N,) int16,
                    offset (N,) int64, length (N,) int32, landmarks (N, 478, 3) int16
  images-000.bin …  JPEG bytes of the crops back to back (each shard ≤ `shard_mib`)

Crops are `align.align(points, size).extract(photo)`, exactly the inference crops. Landmarks are
stored in crop pixels as fixed-point residuals from the frontal template: round(32·(p −
align.template(size))) in int16 (1/32 px steps, range ±1024 px; the npz is zlib-compressed),
which is both more precise than float16 crop coordinates and ~30 % smaller. Shards are read
through `np.memmap`, so DataLoader workers share the page cache.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from reenact import __version__, align
from reenact.errors import MediaError, NoFaceFound, OutputError, ReenactError, UsageError, from_os_error

FORMAT = "reenact-face-cache"
FORMAT_VERSION = 1
FIXED_POINT = 32.0  # landmark residual units per pixel
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MIN_SIZE, MAX_SIZE = 16, 2048  # crop side: a multiple of 16 (as a model's size) in this range

Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class CacheSummary:
    """What `prepare_cache` did: faces stored, photos skipped (no face / unreadable), bytes."""

    path: Path
    count: int
    no_face: int
    unreadable: int
    image_bytes: int
    total_bytes: int
    seconds: float


class CacheWriter:
    """Append crops to shards in a temporary folder; `finish` moves it into place atomically."""

    def __init__(self, out_dir: str | os.PathLike, *, size: int, quality: int = 85, shard_mib: float = 15.0) -> None:
        if not MIN_SIZE <= size <= MAX_SIZE or size % 16:
            raise UsageError(f"crop size {size} is out of range", f"use a multiple of 16 in {MIN_SIZE}..{MAX_SIZE}")
        self.out = Path(out_dir)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise OutputError(f"{self.out} already exists and is not empty", "delete it or choose another folder")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        self.size, self.quality, self.shard_bytes = size, quality, int(shard_mib * 2**20)
        self.names: list[str] = []
        self.ids: list[int] = []
        self.rows: list[tuple[int, int, int]] = []  # shard, offset, length
        self.points: list[np.ndarray] = []
        self._shard, self._fh, self._offset = -1, None, 0
        self._template = align.template(size)

    def add(self, name: str, identity: int, crop_rgb: np.ndarray, points: np.ndarray) -> None:
        """crop_rgb: size×size×3 uint8; points: (478, 3) crop-pixel landmarks."""
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, self.quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
        if not ok:
            raise ReenactError(f"could not JPEG-encode the crop of {name}")
        data = buf.tobytes()
        if self._fh is None or self._offset + len(data) > self.shard_bytes:
            self._next_shard()
        self._fh.write(data)
        self.rows.append((self._shard, self._offset, len(data)))
        self._offset += len(data)
        self.names.append(name)
        self.ids.append(int(identity))
        resid = np.round((np.asarray(points, np.float64) - self._template) * FIXED_POINT)
        self.points.append(np.clip(resid, -32767, 32767).astype(np.int16))

    def _next_shard(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._shard, self._offset = self._shard + 1, 0
        self._fh = open(self.tmp / f"images-{self._shard:03d}.bin", "wb")

    def finish(self, meta: dict) -> Path:
        """Write index + meta, move the folder to `out_dir`. Returns the cache path."""
        if self._fh is not None:
            self._fh.close()
        rows = np.array(self.rows, np.int64).reshape(-1, 3)
        np.savez_compressed(self.tmp / "index.npz", names=np.array(self.names), identity=np.array(self.ids, np.int64),
                            shard=rows[:, 0].astype(np.int16), offset=rows[:, 1], length=rows[:, 2].astype(np.int32),
                            landmarks=np.array(self.points, np.int16).reshape(-1, 478, 3))
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "size": self.size, "quality": self.quality,
                "count": len(self.names), "shards": self._shard + 1, "landmarks": "int16 residual from "
                "align.template(size), 1/32 px", "reenact_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta}
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if self.out.exists():
            self.out.rmdir()  # only an empty folder can be here (anything else was refused above)
        os.replace(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def list_photos(source: Path, identities: Path | None, split: str | None) -> list[tuple[str, int]]:
    """(file name relative to `source`, identity) pairs; identity -1 without an identity file.
    `split` filters the identity file's `split` column (None or "all" = every row)."""
    if not source.is_dir():
        what = "is not a folder" if source.exists() else "does not exist"
        raise MediaError(f"photo folder {source} {what}", "give the folder holding the face photos")
    if identities is None:
        return [(p.name, -1) for p in sorted(source.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    try:
        with open(identities, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh, strict=True))
    except OSError as e:
        raise from_os_error(e, "input", "give a CSV file with the columns file,identity[,split]") from None
    except (UnicodeDecodeError, csv.Error) as e:  # a binary file, an unbalanced quote
        raise MediaError(f"the identity file {identities} is not a readable CSV file ({e})",
                         "give a CSV file with the columns file,identity[,split]") from None
    if rows and not {"file", "identity"} <= set(rows[0]):
        raise UsageError(f"{identities} needs the columns file,identity[,split]")
    keep = [r for r in rows if split in (None, "all") or r.get("split") == split]
    if not keep:
        raise UsageError(f"no rows with split {split!r} in {identities}")
    out = []
    for r in keep:
        try:
            out.append((str(r["file"]), int(r["identity"])))
        except (TypeError, ValueError):
            raise UsageError(f"{identities}: row {r.get('file')!r}: the identity must be an integer, "
                             f"not {r.get('identity')!r}") from None
    return out


def _store_face(writer: CacheWriter, lm, name: str, identity: int, image: np.ndarray) -> bool:
    """The first face mediapipe finds in `image`, aligned and added to `writer`; False: no face."""
    faces = lm.detect(image)
    if faces:
        crop = align.align(faces[0].points, writer.size)
        writer.add(name, identity, crop.extract(image), crop.points_to_crop(faces[0].points))
    return bool(faces)


def prepare_cache(source: str | os.PathLike, out_dir: str | os.PathLike, *, identities: str | os.PathLike | None = None,
                  split: str | None = "train", size: int = 256, quality: int = 85, limit: int | None = None,
                  progress: Progress | None = None) -> CacheSummary:
    """Detect landmarks in every photo, store the aligned crop and its landmarks (see module doc).

    Photos without a face or that cannot be read are skipped and counted. Raises UsageError (bad
    folder / identity file), OutputError (cache exists), NoFaceFound (no face in any photo).
    """
    from reenact import media
    from reenact.landmarks import Landmarker

    t0 = time.perf_counter()
    source = Path(source)
    photos = list_photos(source, Path(identities) if identities else None, split)[:limit]
    writer = CacheWriter(out_dir, size=size, quality=quality)
    no_face = unreadable = 0
    try:
        with Landmarker(mode="image") as lm:
            for i, (name, identity) in enumerate(photos):
                try:
                    image = media.read_image(source / name)
                except MediaError:
                    unreadable += 1
                    continue
                if not _store_face(writer, lm, name, identity, image):
                    no_face += 1
                if progress:
                    progress(i + 1, len(photos))
        if not writer.names:
            raise NoFaceFound(f"no face found in any of the {len(photos)} photos in {source}")
        path = writer.finish({"source": str(source), "identities": str(identities) if identities else None,
                              "split": split, "photos": len(photos), "no_face": no_face, "unreadable": unreadable})
    except BaseException:
        writer.abort()
        raise
    return summarize(path, no_face=no_face, unreadable=unreadable, seconds=time.perf_counter() - t0)


def prepare_video_cache(videos: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, size: int = 256,
                        quality: int = 85, stride: int = 1, progress: Progress | None = None) -> CacheSummary:
    """Like `prepare_cache`, from every `stride`-th frame of talking-face videos: each video is one
    identity (its index in `videos`), so same-identity pairs are same-video pairs (same person,
    light and camera; the later frame is the ground truth). Frames are named `VIDEO@FRAME`.
    Frames without a face are skipped and counted. Raises MediaError for an unreadable video,
    OutputError when the cache exists, NoFaceFound when no frame shows a face."""
    from reenact import media
    from reenact.landmarks import Landmarker

    if stride < 1:
        raise UsageError("the video frame stride must be ≥ 1")
    t0, paths = time.perf_counter(), [Path(v) for v in videos]
    writer = CacheWriter(out_dir, size=size, quality=quality)
    frames = no_face = 0
    try:
        with Landmarker(mode="image") as lm:
            for identity, path in enumerate(paths):
                with media.VideoReader(path) as video:
                    for i, image in enumerate(video):
                        if i % stride:
                            continue
                        frames += 1
                        if not _store_face(writer, lm, f"{path.name}@{i}", identity, image):
                            no_face += 1
                        if progress:
                            progress(frames, None)
        if not writer.names:
            raise NoFaceFound(f"no face found in any frame of {len(paths)} videos")
        path = writer.finish({"source": [str(p) for p in paths], "identities": "one per video", "split": "videos",
                              "stride": stride, "photos": frames, "no_face": no_face, "unreadable": 0})
    except BaseException:
        writer.abort()
        raise
    return summarize(path, no_face=no_face, seconds=time.perf_counter() - t0)


def summarize(path: Path, *, no_face: int = 0, unreadable: int = 0, seconds: float = 0.0) -> CacheSummary:
    files = list(Path(path).iterdir())
    images = sum(f.stat().st_size for f in files if f.name.startswith("images-"))
    return CacheSummary(path=Path(path), count=json.loads((Path(path) / "meta.json").read_text())["count"],
                        no_face=no_face, unreadable=unreadable, image_bytes=images,
                        total_bytes=sum(f.stat().st_size for f in files), seconds=seconds)


class FaceCache:
    """Read access to a prepared cache. Thread-compatible; cheap to pickle into DataLoader workers
    (the memory maps are reopened lazily in each process)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise UsageError(f"{self.path} is not a prepared cache (no meta.json)",
                             "create it with `reenact data prepare` (reenact train does it when the config names a source)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT or self.meta.get("version") != FORMAT_VERSION:
            raise UsageError(f"{self.path} has an unknown cache format", "prepare it again")
        self.size = int(self.meta["size"])
        with np.load(self.path / "index.npz", allow_pickle=False) as idx:
            self.names = idx["names"]
            self.identity = idx["identity"]
            self._rows = np.stack([idx["shard"].astype(np.int64), idx["offset"], idx["length"].astype(np.int64)], 1)
            self._landmarks = idx["landmarks"]
        self._template = align.template(self.size).astype(np.float32)
        self._maps: dict[int, np.memmap] = {}

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}

    def image(self, i: int) -> np.ndarray:
        """Crop i: size×size×3 RGB uint8."""
        shard, offset, length = (int(v) for v in self._rows[i])
        if shard not in self._maps:
            self._maps[shard] = np.memmap(self.path / f"images-{shard:03d}.bin", dtype=np.uint8, mode="r")
        bgr = cv2.imdecode(np.asarray(self._maps[shard][offset:offset + length]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ReenactError(f"crop {i} of {self.path} is corrupt", "prepare the cache again")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def points(self, i: int) -> np.ndarray:
        """Landmarks of crop i: (478, 3) float32 crop pixels."""
        return self._landmarks[i].astype(np.float32) / FIXED_POINT + self._template


def is_prepared(path: str | os.PathLike) -> bool:
    """Whether `path` holds a finished cache (meta.json is written last)."""
    return (Path(path) / "meta.json").is_file()


def ensure_cache(cache: str | os.PathLike, *, source: str | None, identities: str | None, split: str, size: int,
                 quality: int = 85, progress: Progress | None = None) -> CacheSummary | None:
    """Prepare the cache from `source` when it does not exist yet (None when it already did).
    Raises UsageError when it is missing and no source is configured."""
    if is_prepared(cache):
        return None
    if not source:
        raise UsageError(f"the prepared cache {cache} does not exist and the config names no data.source",
                         "run `reenact data prepare` or set data.source (and data.identities) in the config")
    return prepare_cache(source, cache, identities=identities, split=split, size=size, quality=quality,
                         progress=progress)
