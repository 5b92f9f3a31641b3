"""The inference pipeline: reference + driver → reenacted image (videos: `reenact.video`).

media → landmarks → motion retargeting → engine (warp | gan | fusion) → paste-back → media.
No printing here: progress goes through a callback and results come back as small dataclasses
that the CLI reports.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from reenact import align, media, motion
from reenact.config import REGIONS, InferenceConfig, MotionConfig
from reenact.engines import Engine, RefState, build_engine
from reenact.errors import NoFaceFound, UsageError
from reenact.landmarks import Face, Landmarker
from reenact.tracking import describe_choice, select_face

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


def find_face(image: np.ndarray, landmarker: Landmarker, *, name: str,
              choice: str | int = "largest") -> tuple[Face, int]:
    """The chosen face in `image` ("largest" or a 0-based left-to-right index) and the number
    found; NoFaceFound when there is none, UsageError when there are too few for the index."""
    faces = landmarker.detect(image)
    if not faces:
        raise NoFaceFound(f"no face found in {name}",
                          "use a photo where one face is clearly visible, frontal or up to ~45° turned")
    face = select_face(faces, choice)
    if face is None:
        raise UsageError(f"{describe_choice(choice)} was asked for, but {name} has {len(faces)} "
                         f"face{'s' if len(faces) > 1 else ''}",
                         f"give an index from 0 to {len(faces) - 1} (0 = leftmost), or 'largest'")
    return face, len(faces)


def load_reference(path: str | Path, landmarker: Landmarker, *, max_side: int = 0,
                   choice: str | int = "largest") -> Reference:
    image = downscale(media.read_image(path), max_side)
    face, n = find_face(image, landmarker, name=str(path), choice=choice)
    return Reference(image=image, face=face, n_faces=n, name=str(path))


def retargeter(reference: Reference, motion_cfg: MotionConfig,
               anchor: np.ndarray | None = None) -> motion.Retargeter:
    """The reference's `motion.Retargeter` for these motion settings (`anchor`: the driver's
    anchor landmarks, needed for relative motion)."""
    return motion.Retargeter(reference.face.points, mode=motion_cfg.mode, anchor=anchor,
                             transfer=motion_cfg.transfer, components=motion.components_for(motion_cfg.regions))


class Reenactor:
    """Renders the reference with a driver face's pose and expression, frame by frame."""

    def __init__(self, reference: Reference, config: InferenceConfig, engine: Engine | None = None,
                 timer: StageTimer | None = None, retarget: motion.Retargeter | None = None) -> None:
        self.reference = reference
        self.config = config
        self.retarget = retarget or motion.Retargeter(reference.face.points)  # absolute, everything
        self.engine = engine or build_engine(config)
        self.timer = timer or StageTimer()
        self.state: RefState = self.engine.prepare(reference.image, reference.face)
        self._crop = align.align(reference.face.points, config.size) if config.crop else None

    def target(self, driver: Face) -> np.ndarray:
        """(478, 3) landmarks the reference should have, in the reference frame."""
        return self.retarget(driver.points)

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


ABSOLUTE = MotionConfig(mode="absolute", regions=REGIONS)


def reenact_image(ref_path: str | Path, pose_path: str | Path, config: InferenceConfig, *,
                  motion_cfg: MotionConfig = ABSOLUTE, ref_face: str | int = "largest",
                  driver_face: str | int = "largest") -> ImageResult:
    """Render the reference with the pose photo's head pose and expression (nothing written).

    A single pose photo has no anchor frame, so motion is absolute (UsageError for relative);
    `motion_cfg.transfer` / `.regions` select what moves. Faces: "largest" or a 0-based
    left-to-right index."""
    if motion_cfg.mode != "absolute":
        raise UsageError("relative motion needs a driver video", "a pose photo uses --motion absolute")
    timer = StageTimer()
    with Landmarker(mode="image") as lm:
        with timer("landmarks"):
            ref = load_reference(ref_path, lm, choice=ref_face)
            pose_img = media.read_image(pose_path)
            driver, n_drv = find_face(pose_img, lm, name=str(pose_path), choice=driver_face)
    r = Reenactor(ref, config, timer=timer, retarget=retargeter(ref, motion_cfg))
    out = r.render(driver)
    if config.compare:
        out = side_by_side(pose_img, out)
    return ImageResult(image=out, reference_faces=ref.n_faces, driver_faces=n_drv,
                       seconds=dict(timer.seconds))


def __getattr__(name: str) -> Any:
    """`pipeline.reenact_video` / `pipeline.VideoSummary` moved to `reenact.video`."""
    if name in ("reenact_video", "VideoSummary"):
        from reenact import video

        return getattr(video, name)
    raise AttributeError(name)
