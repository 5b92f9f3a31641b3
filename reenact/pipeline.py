"""The inference pipeline: reference + driver → reenacted image or video.

media → landmarks → motion retargeting → engine (warp | gan | fusion) → paste-back → media.
No printing here: progress goes through a callback and results come back as small dataclasses
that the CLI reports.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from reenact import align, media, motion
from reenact.config import InferenceConfig
from reenact.engines import Engine, RefState, build_engine
from reenact.errors import NoFaceFound
from reenact.landmarks import Face, Landmarker

Progress = Callable[[int, "int | None"], None]


class StageTimer:
    """Accumulates wall time per named stage (for summaries and the benchmark)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0


@dataclass(frozen=True)
class Reference:
    """A reference photo with its chosen face. `n_faces`: how many faces were found in it."""

    image: np.ndarray
    face: Face
    n_faces: int
    name: str = "reference"


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so the longest side is ≤ max_side (0 = unchanged)."""
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image
    f = max_side / max(h, w)
    return cv2.resize(image, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)


def find_face(image: np.ndarray, landmarker: Landmarker, *, name: str) -> tuple[Face, int]:
    """The largest face in `image` and the number found; NoFaceFound when there is none."""
    faces = landmarker.detect(image)
    if not faces:
        raise NoFaceFound(f"no face found in {name}",
                          "use a photo where one face is clearly visible, frontal or up to ~45° turned")
    return faces[0], len(faces)


def load_reference(path: str | Path, landmarker: Landmarker, *, max_side: int = 0) -> Reference:
    image = downscale(media.read_image(path), max_side)
    face, n = find_face(image, landmarker, name=str(path))
    return Reference(image=image, face=face, n_faces=n, name=str(path))


class Reenactor:
    """Renders the reference with a driver face's pose and expression, frame by frame."""

    def __init__(self, reference: Reference, config: InferenceConfig, engine: Engine | None = None,
                 timer: StageTimer | None = None) -> None:
        self.reference = reference
        self.config = config
        self.engine = engine or build_engine(config)
        self.timer = timer or StageTimer()
        self.state: RefState = self.engine.prepare(reference.image, reference.face)
        self._crop = align.align(reference.face.points, config.size) if config.crop else None

    def target(self, driver: Face) -> np.ndarray:
        """(478, 3) landmarks the reference should have, in the reference frame."""
        return motion.retarget(self.reference.face.points, driver.points)

    def render(self, driver: Face | None) -> np.ndarray:
        """Output frame (RGB uint8) for one driver face; None = the reference unchanged."""
        if driver is None:
            return self._finish(self.state.image, None)
        with self.timer("retarget"):
            target = self.target(driver)
        with self.timer("render"):
            crop_rgb, mask = self.engine.render(self.state, target)
        return self._finish(crop_rgb, mask)

    def _finish(self, crop_rgb: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        with self.timer("paste"):
            if mask is None:
                full = self.reference.image
            else:
                full = align.paste_back(self.reference.image, crop_rgb, self.state.crop, mask)
            if self._crop is not None:
                return self._crop.extract(full)
            return full

    def output_size(self) -> tuple[int, int]:
        """(width, height) of rendered frames (before any compare layout)."""
        if self._crop is not None:
            return self._crop.size, self._crop.size
        h, w = self.reference.image.shape[:2]
        return w, h


def side_by_side(driver: np.ndarray, output: np.ndarray) -> np.ndarray:
    """[driver | output], the driver scaled to the output's height."""
    h = output.shape[0]
    w = max(1, round(driver.shape[1] * h / driver.shape[0]))
    return np.hstack([cv2.resize(driver, (w, h), interpolation=cv2.INTER_AREA), output])


@dataclass(frozen=True)
class ImageResult:
    image: np.ndarray
    reference_faces: int
    driver_faces: int
    seconds: dict[str, float]


def reenact_image(ref_path: str | Path, pose_path: str | Path, config: InferenceConfig) -> ImageResult:
    """Render the reference with the pose photo's head pose and expression (nothing written)."""
    timer = StageTimer()
    with Landmarker(mode="image") as lm:
        with timer("landmarks"):
            ref = load_reference(ref_path, lm)
            pose_img = media.read_image(pose_path)
            driver, n_drv = find_face(pose_img, lm, name=str(pose_path))
    r = Reenactor(ref, config, timer=timer)
    out = r.render(driver)
    if config.compare:
        out = side_by_side(pose_img, out)
    return ImageResult(image=out, reference_faces=ref.n_faces, driver_faces=n_drv,
                       seconds=dict(timer.seconds))


@dataclass
class VideoSummary:
    """What happened in a video render. `held`: frames without a face that reused the last
    driver face; `still`: frames before any face was seen (the reference, unchanged)."""

    frames: int = 0
    with_face: int = 0
    held: int = 0
    still: int = 0
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)
    audio: bool = False
    reference_faces: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def _even(size: tuple[int, int]) -> tuple[int, int]:
    return size[0] + size[0] % 2, size[1] + size[1] % 2


def reenact_video(ref_path: str | Path, drive_path: str | Path, out_path: str | Path,
                  config: InferenceConfig, *, overwrite: bool = False,
                  progress: Progress | None = None) -> VideoSummary:
    """Stream the driver video frame by frame and write the reenacted mp4 (driver's fps, frame
    count and audio). Memory does not grow with the video's length. Raises NoFaceFound (and
    writes nothing) when no frame of the driver has a face."""
    timer = StageTimer()
    with Landmarker(mode="image") as lm:
        ref = load_reference(ref_path, lm, max_side=config.max_side)
    r = Reenactor(ref, config, timer=timer)
    summary = VideoSummary(reference_faces=ref.n_faces)
    with media.VideoReader(drive_path) as reader, Landmarker(mode="video", max_faces=2) as lm:
        info = reader.info
        size = _output_size(r, info, config)
        summary.fps, summary.size, summary.audio = info.fps, size, info.has_audio
        with media.VideoWriter(out_path, fps=info.fps, size=size, audio_from=drive_path,
                               overwrite=overwrite) as writer:
            _render_frames(reader, lm, r, writer, config, summary, timer, progress, info.n_frames)
            if summary.with_face == 0:
                writer.abort()
                raise NoFaceFound(f"no face found in any of the {summary.frames} frames of {drive_path}",
                                  "the driver video must show a face")
    summary.seconds = dict(timer.seconds)
    return summary


def _output_size(r: Reenactor, info: media.VideoInfo, config: InferenceConfig) -> tuple[int, int]:
    w, h = r.output_size()
    if config.compare:
        w += max(1, round(info.width * h / info.height))
    return _even((w, h))


def _render_frames(reader, lm: Landmarker, r: Reenactor, writer, config: InferenceConfig,
                   summary: VideoSummary, timer: StageTimer, progress: Progress | None,
                   total: int | None) -> None:
    last: Face | None = None
    frames = iter(reader)
    while True:
        with timer("decode"):
            frame = next(frames, None)
        if frame is None:
            break
        with timer("landmarks"):
            faces = lm.detect(frame)
        if faces:
            last, summary.with_face = faces[0], summary.with_face + 1
        elif last is not None:
            summary.held += 1
        else:
            summary.still += 1
        out = r.render(last)
        if config.compare:
            out = side_by_side(frame, out)
        with timer("encode"):
            writer.write(_pad_to(out, writer.size))
        summary.frames += 1
        if progress:
            progress(summary.frames, total)


def _pad_to(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Edge-pad (never rescale) to exactly (w, h)."""
    w, h = size
    dh, dw = h - img.shape[0], w - img.shape[1]
    if dh == 0 and dw == 0:
        return img
    return cv2.copyMakeBorder(img, 0, max(dh, 0), 0, max(dw, 0), cv2.BORDER_REPLICATE)[:h, :w]
