"""The Python API: the CLI's code path, called from Python.

    import reenact
    anim = reenact.load("ref.jpg")                  # options: those of `reenact image`
    result = anim.image("pose.jpg")                 # RGB uint8 H×W×3
    for out in anim.frames(camera_frames): ...      # streaming, constant memory
    anim.video("drive.mp4", "out.mp4")              # what `reenact video` does

`load` detects the reference's face and prepares the engine once; each call then reuses them.
`image` goes through `pipeline.render_pose`, the function `reenact image` ends in, so the pixels
are the CLI's. `frames` runs a `stream.Stream` (no look-ahead: see that module for what differs
from a video render). `video` calls `video.reenact_video`, exactly as `reenact video` does.

Images are paths or RGB uint8 H×W×3 arrays. Errors are `reenact.errors` classes: MediaError for
a missing or unreadable file, UnsupportedMedia for an array of the wrong kind, NoFaceFound,
UsageError for a bad option value, MissingWeights. An `Animator` is not thread-safe.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np

from reenact.errors import UnsupportedMedia, UsageError

Image = Union[str, os.PathLike, np.ndarray]
"""A picture: a path (any format `reenact image` reads) or an RGB uint8 H×W×3 array."""


def as_rgb(image: object, what: str = "image") -> np.ndarray:
    """`image` (path or array) as a C-contiguous RGB uint8 H×W×3 array. Raises MediaError and
    its subclasses for files (as `media.read_image`), UnsupportedMedia for arrays of another
    dtype or shape, UsageError for anything that is neither."""
    from reenact import media

    if isinstance(image, (str, os.PathLike)):
        return media.read_image(image)
    if not isinstance(image, np.ndarray):
        raise UsageError(f"{what} must be a path or an RGB uint8 array, not {type(image).__name__}")
    if image.dtype != np.uint8:
        hint = ("scale floats in [0, 1] with (img * 255).round().clip(0, 255).astype(np.uint8)"
                if image.dtype.kind == "f" else "convert it with .astype(np.uint8) if its values are 0..255")
        raise UnsupportedMedia(f"{what} is a {image.dtype} array; RGB uint8 is expected", hint)
    if image.ndim != 3 or image.shape[2] != 3:
        hints = {2: "a grey image: np.dstack([img] * 3)", 4: "drop the alpha channel: img[..., :3]"}
        key = image.shape[2] if image.ndim == 3 else image.ndim
        raise UnsupportedMedia(f"{what} has shape {image.shape}; (height, width, 3) RGB is expected",
                               hints.get(key, "give an RGB image, height × width × 3"))
    if min(image.shape[:2]) == 0:
        raise UnsupportedMedia(f"{what} is empty (shape {image.shape})")
    return np.ascontiguousarray(image)


def _name(image: Image, i: int, what: str) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else f"{what} array {i}"


class Animator:
    """A reference (one photo or several of one person), its face found and its engine state
    prepared; renders it with other faces' head pose and expression. Make one with `load`."""

    def __init__(self, references: list, config, motion, *, ref_face: str | int, driver_face: str | int,
                 multi: str, sources: list, landmarker) -> None:
        from reenact.pipeline import Reenactor

        self.config, self.motion = config, motion  # InferenceConfig, MotionConfig (absolute)
        self.references = references  # list[pipeline.Reference]; the first is the primary
        self.ref_face, self.driver_face, self.multi = ref_face, driver_face, multi
        self._sources = sources  # what `load` was given, for `video`
        prepared = Reenactor(references, config, multi=multi)  # engine + states, once
        self.engine, self._states = prepared.engine, prepared.states
        self._lm = landmarker  # image mode, as `reenact image` detects the pose photo's face

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of `image`'s and `frames`' results (without `compare`)."""
        from reenact.pipeline import Reenactor

        return Reenactor(self.references, self.config, engine=self.engine, states=self._states,
                         multi=self.multi).output_size()

    def image(self, pose: Image) -> np.ndarray:
        """The reference with the head pose and expression of `pose` (a photo: path or RGB
        uint8 array): RGB uint8 H×W×3, the pixels `reenact image` writes with the same options.
        Raises NoFaceFound, MediaError/UnsupportedMedia, UsageError (a video given)."""
        return self.render(pose).image

    def render(self, pose: Image):
        """Like `image`, with what the CLI reports: a `pipeline.ImageResult` (image, faces found
        in the reference and the pose photo, stage times, the reference used)."""
        from reenact import media, pipeline

        if isinstance(pose, (str, os.PathLike)) and media.media_kind(pose) == "video":
            raise UsageError(f"{pose} is a video", "use Animator.video or Animator.frames for it")
        pose_img = as_rgb(pose, "pose")
        driver, n = pipeline.find_face(pose_img, self._detector(), name=_name(pose, 0, "pose"),
                                       choice=self.driver_face)
        return pipeline.render_pose(self.references, pose_img, driver, self.config, motion_cfg=self.motion,
                                    multi=self.multi, driver_faces=n, engine=self.engine, states=self._states)

    def frames(self, frames: Iterable[Image], *, motion: str = "relative", anchor: Image | None = None,
               smooth: bool = True, fps: float = 25.0) -> Iterator[np.ndarray]:
        """Render a stream of driver frames (paths or RGB uint8 arrays, consecutive frames of
        one video or camera) lazily: one result per frame, pulled one at a time, in constant
        memory. `motion`: "relative" (the driver's changes from `anchor`, a photo of the
        driver's neutral face; None = the first frame with a face) or "absolute"; `smooth`:
        causal One-Euro smoothing at the nominal `fps`. See `reenact.stream` for how this
        differs from `video`, which sees the whole driver."""
        stream = self.stream(motion=motion, anchor=anchor, smooth=smooth, fps=fps)
        with stream:
            for i, frame in enumerate(frames):
                yield stream(as_rgb(frame, f"frame {i}"))

    def stream(self, *, motion: str = "relative", anchor: Image | None = None, smooth: bool = True,
               fps: float = 25.0, search: str = "inline"):
        """The `stream.Stream` behind `frames` (call it per frame; `reanchor()`; close it).
        `search="background"`: a face too small for the whole frame is searched for in a thread
        of its own (a camera's picture does not stall; `reenact live`)."""
        from reenact import pipeline
        from reenact.stream import Stream

        motion_cfg = self._motion(motion, smooth)
        anchor_points = None
        if anchor is not None:
            img = as_rgb(anchor, "anchor")
            anchor_points = pipeline.find_face(img, self._detector(), name=_name(anchor, 0, "anchor"),
                                               choice=self.driver_face)[0].points
        r = pipeline.Reenactor(self.references, self.config, engine=self.engine, states=self._states,
                               multi=self.multi)
        return Stream(r, motion_cfg, driver_face=self.driver_face, fps=fps, anchor=anchor_points, search=search)

    def _motion(self, mode: str, smooth: bool, anchor: int | None = None):
        from reenact.config import MotionConfig

        m = self.motion
        return MotionConfig(mode=mode, transfer=m.transfer, regions=m.regions, anchor=anchor, smooth=smooth)

    def video(self, driver: str | os.PathLike, output: str | os.PathLike, *, motion: str = "relative",
              anchor: int | None = None, smooth: bool = True, fps: float | None = None, max_side: int = 1920,
              resume: bool = False, chunk_frames: int = 250, overwrite: bool = False,
              progress: Callable[[str, int, int | None], None] | None = None):
        """Render `driver` (a video file or a folder of frames) into `output`, exactly as
        `reenact video` does with the same options (two passes, driver's fps and audio,
        resumable): returns its `video.VideoSummary`. `progress(stage, done, total)` is called
        as it goes. References given as arrays are written to a temporary PNG (lossless) first;
        `resume` then needs them as files."""
        from reenact.config import VideoOptions
        from reenact.video import reenact_video

        opts = VideoOptions(motion=self._motion(motion, smooth, anchor), ref_face=self.ref_face,
                            driver_face=self.driver_face, fps=fps, chunk=chunk_frames, resume=resume,
                            multi=self.multi)
        config = self.config.replace(max_side=max_side)
        with tempfile.TemporaryDirectory(prefix="reenact-api-") as tmp:
            refs = self._reference_paths(Path(tmp), resume)
            return reenact_video(refs, driver, output, config, options=opts, overwrite=overwrite,
                                 progress=progress)

    def _reference_paths(self, tmp: Path, resume: bool) -> list:
        from reenact import media

        paths = []
        for i, source in enumerate(self._sources):
            if isinstance(source, np.ndarray):
                if resume:
                    raise UsageError("resume needs the references as files", "give reference paths to load()")
                source = media.write_image(tmp / f"reference-{i}.png", source)
            paths.append(source)
        return paths

    def _detector(self):
        if self._lm is None:
            raise UsageError("this Animator is closed", "load the reference again with reenact.load")
        return self._lm

    def close(self) -> None:
        """Free the face detector (also done when the Animator is garbage-collected). Idempotent."""
        lm, self._lm = self._lm, None
        if lm is not None:
            lm.close()

    def __enter__(self) -> "Animator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def load(reference: Image | Sequence[Image], *, engine: str | None = None, size: int = 256, crop: bool = False,
         compare: bool = False, transfer: str = "all", regions: str | Sequence[str] = "mouth,eyes,brows",
         face: str | int = "largest", driver_face: str | int = "largest", ref: Sequence[Image] = (),
         multi: str = "auto", weights: str | os.PathLike | None = None, mouth: str = "auto", eyes: str = "auto",
         mouth_weights: str | os.PathLike | None = None,
         eyes_weights: str | os.PathLike | None = None) -> Animator:
    """Load a reference and prepare it for rendering. Options: those of `reenact image`, same
    names (dashes → underscores) and defaults; `engine=None` is the CLI's default engine.

    `reference`: a photo (path or RGB uint8 array), a folder or quoted-glob path, or a list of
    them: several photos of one person (the first is the primary, as in the CLI; `ref` adds
    more, like `--ref`). Raises MediaError / UnsupportedMedia, NoFaceFound, UsageError (a bad
    option value), MissingWeights (gan/fusion without weights)."""
    from reenact.config import InferenceConfig, MotionConfig, parse_face, parse_regions
    from reenact.engines import default_engine
    from reenact.landmarks import Landmarker

    config = InferenceConfig(engine=engine or default_engine(), size=size, crop=crop, compare=compare, max_side=0,
                             weights=_opt_path(weights), mouth=mouth, eyes=eyes,
                             mouth_weights=_opt_path(mouth_weights), eyes_weights=_opt_path(eyes_weights))
    regions = parse_regions(regions if isinstance(regions, str) else ",".join(regions))
    motion = MotionConfig(mode="absolute", transfer=transfer, regions=regions, smooth=False)
    sources = list(reference) if isinstance(reference, (list, tuple)) else [reference]
    sources += list(ref)
    if not sources:
        raise UsageError("no reference was given", "give a photo: a path or an RGB uint8 array")
    ref_face, drv_face = parse_face(str(face)), parse_face(str(driver_face))
    lm = Landmarker(mode="image")
    try:
        references = _load_references(sources, lm, ref_face)
        return Animator(references, config, motion, ref_face=ref_face, driver_face=drv_face, multi=multi,
                        sources=sources, landmarker=lm)
    except BaseException:
        lm.close()
        raise


def _opt_path(p: str | os.PathLike | None) -> str | None:
    return None if p is None else str(p)


def _load_references(sources: list, lm, choice: str | int) -> list:
    """pipeline.Reference per photo: paths (files, folders, globs) as `reenact image` loads
    them (all in one call when there is no array, so duplicates drop out alike), arrays as given."""
    from reenact import pipeline

    if all(isinstance(s, (str, os.PathLike)) for s in sources):
        return pipeline.load_references(sources, lm, choice=choice)
    out = []
    for i, source in enumerate(sources):
        if isinstance(source, (str, os.PathLike)):
            out += pipeline.load_references(source, lm, choice=choice)
            continue
        img, name = as_rgb(source, "reference"), _name(source, i, "reference")
        face, n = pipeline.find_face(img, lm, name=name, choice=choice)
        out.append(pipeline.Reference(image=img, face=face, n_faces=n, name=name))
    return out
