"""The inference pipeline: reference + driver → reenacted image (videos: `reenact.video`).

media → landmarks → motion retargeting → engine (warp | gan | fusion) → paste-back → media.
No printing here: progress goes through a callback and results come back as small dataclasses
that the CLI reports.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from reenact import align, media, motion
from reenact import references as refs
from reenact.config import REGIONS, InferenceConfig, MotionConfig
from reenact.engines import Engine, RefState, build_engine, mask_grid
from reenact.redraw import DriverFace
from reenact.errors import NoFaceFound, UsageError
from reenact.landmarks import Face, Landmarker
from reenact.tracking import describe_choice, select_face

class StageTimer:
    """Accumulates wall time per named stage (for summaries and the benchmark). Thread-safe: a
    stage timed in several threads at once adds up their times (so the stages of a video whose
    frames render in parallel sum to more than its wall time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            with self._lock:
                self.seconds[stage] += elapsed


@dataclass(frozen=True)
class Reference:
    """A reference photo with its chosen face. `n_faces`: how many faces were found in it."""

    image: np.ndarray
    face: Face
    n_faces: int
    name: str = "reference"


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so the longest side is ≤ max_side (0 = unchanged; `media.scaled_size`)."""
    h, w = image.shape[:2]
    size = media.scaled_size(w, h, max_side)
    if size == (w, h):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


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
    image = downscale(media.read_image(path, at_least=max_side), max_side)
    face, n = find_face(image, landmarker, name=str(path), choice=choice)
    return Reference(image=image, face=face, n_faces=n, name=str(path))


def load_references(paths: str | Path | list, landmarker: Landmarker, *, max_side: int = 0,
                    choice: str | int = "largest") -> list[Reference]:
    """Every reference photo named by `paths` (files, folders, globs; `references.expand`), each
    with its chosen face; the first is the primary. Raises like `load_reference`."""
    specs = paths if isinstance(paths, (list, tuple)) else [paths]
    return [load_reference(p, landmarker, max_side=max_side, choice=choice) for p in refs.expand(specs)]


def retargeter(reference: Reference, motion_cfg: MotionConfig,
               anchor: np.ndarray | None = None) -> motion.Retargeter:
    """The reference's `motion.Retargeter` for these motion settings (`anchor`: the driver's
    anchor landmarks, needed for relative motion). A photo reference: transfer "auto" is "all"."""
    motion_cfg = motion_cfg.with_transfer_for(False)
    return motion.Retargeter(reference.face.points, mode=motion_cfg.mode, anchor=anchor,
                             transfer=motion_cfg.transfer, components=motion.components_for(motion_cfg.regions))


MULTI_MODES = ("auto", "select", "fuse")
# (state, crop-space target landmarks, side n) → (n, n) float32 in [0, 1] over the state's crop
PasteLimit = Callable[[RefState, np.ndarray, int], np.ndarray]


class Reenactor:
    """Renders the reference with a driver face's pose and expression, frame by frame.

    `references`: one `Reference` or several photos of the same person; the first is the
    *primary*: motion is retargeted onto its face and results are pasted into its frame (so the
    background never jumps). With several, `multi` decides how they are used: "select" renders
    each frame from the reference nearest in head pose and expression to the pose being rendered
    (with hysteresis, `references.Selector`); "fuse" lets a k-shot generator fuse all of them
    (CainGAN-style); "auto" fuses when the engine can, else selects.

    `states`: the references' states already prepared by this `engine` (as a Reenactor made
    them, e.g. `other.states[:k]`), so an evaluation comparing several k prepares each
    reference once; None prepares them here."""

    def __init__(self, references: Reference | list[Reference], config: InferenceConfig,
                 engine: Engine | None = None, timer: StageTimer | None = None,
                 retarget: motion.Retargeter | None = None, *, multi: str = "auto",
                 margin: float = 5.0, states: list[RefState] | None = None) -> None:
        self.references = [references] if isinstance(references, Reference) else list(references)
        self.reference = self.references[0]
        self.config = config
        self.retarget = retarget or motion.Retargeter(self.reference.face.points)  # absolute, everything
        self.engine = engine or build_engine(config)
        self.timer = timer or StageTimer()
        if states is not None and len(states) != len(self.references):
            raise ValueError(f"{len(states)} prepared states for {len(self.references)} references")
        self.states = list(states) if states is not None else self._prepare()
        self.state: RefState = self.states[0]
        self.mode = self._mode(multi)
        if self.mode == "fuse":
            self.state = self.engine.bank(self.states, primary=0)
        self.selector = refs.Selector([refs.candidate(r.face.points) for r in self.references], margin=margin)
        self._crop = align.align(self.reference.face.points, config.size) if config.crop else None
        # (primary's state, crop-space target, side n) → (n, n) mask over the crop that the paste
        # is limited to; None: the engine's mask as it is (a video source limits it to where its
        # pixels move, `v2v`)
        self.paste_limit: PasteLimit | None = None

    def _prepare(self) -> list[RefState]:
        """Every reference's engine state, all at the primary's crop side."""
        first = self.engine.prepare(self.reference.image, self.reference.face)
        size = first.size
        return [first] + [self.engine.prepare(r.image, r.face, size) for r in self.references[1:]]

    def _mode(self, multi: str) -> str:
        if multi not in MULTI_MODES:
            raise UsageError(f"unknown --multi {multi!r}", f"choose one of {', '.join(MULTI_MODES)}")
        can_fuse = hasattr(self.engine, "bank")
        if multi == "fuse" and not can_fuse:
            raise UsageError("--multi fuse needs a k-shot generator (variant kshot) as the engine",
                             "use --multi select, or --weights of a k-shot model with --engine gan|fusion")
        if len(self.references) == 1:
            return "single"
        return "fuse" if multi == "fuse" or (multi == "auto" and can_fuse) else "select"

    def set_primary(self, reference: Reference) -> None:
        """Make `reference` the primary (a video source: every source frame is the reference of
        its own output frame). Prepared at the current crop side, so the other references' states
        stay valid; the selector, a fused bank and `--crop`'s crop follow it."""
        with self.timer("prepare"):
            state = self.engine.prepare(reference.image, reference.face, self.states[0].size)
        self.reference, self.references[0], self.states[0] = reference, reference, state
        self.state = self.engine.bank(self.states, primary=0) if self.mode == "fuse" else state
        self.selector.candidates[0] = refs.candidate(reference.face.points)
        if self._crop is not None:
            self._crop = align.align(reference.face.points, self.config.size)

    def target(self, driver: Face) -> np.ndarray:
        """(478, 3) landmarks the reference should have, in the primary reference's frame."""
        return self.retarget(driver.points)

    def choose(self, target: np.ndarray | None) -> int:
        """Which reference renders this frame (advances the selector; 0 unless selecting)."""
        if self.mode != "select":
            return 0
        if target is None:
            return self.selector.hold() or 0
        return self.selector.choose(refs.candidate(target))

    @property
    def needs_driver_image(self) -> bool:
        """Whether `render` needs the driver's frame too (the driver-mouth baseline)."""
        return bool(getattr(self.engine, "needs_driver", False))

    def render(self, driver: Face | None, driver_image: np.ndarray | None = None) -> np.ndarray:
        """Output frame (RGB uint8) for one driver face; None = the reference unchanged.
        `driver_image`: the driver's frame, needed when `needs_driver_image`."""
        return self.plan(driver, driver_image)()

    def plan(self, driver: Face | None, driver_image: np.ndarray | None = None, *, use: int | None = None,
             onto: Callable[[], np.ndarray] | None = None,
             limit: PasteLimit | None = None,
             parts: tuple[str, ...] | None = None) -> Callable[[], np.ndarray]:
        """`render` in two parts: what depends on the order of frames (retargeting, the reference
        choice) now, and the rest (the engine's render and the paste-back) as the returned call.
        That call uses only what it was planned with — later plans, `set_primary` included, do
        not change it — so a video renders several frames at once, each call in its own thread
        (`video.write_chunks`). `use`: render from this reference (an index into `references`)
        instead of choosing one; the result is pasted into the primary's frame either way, or
        into what `onto` returns when the call runs (a frame in the primary's layout, e.g.
        another plan's result), limited to `limit(state, crop-space target, n)` (n×n in [0, 1]
        over the crop, n the side of the engine's mask: its grid for a direct render, else the
        crop's; default `paste_limit` for the primary, none for the others). `parts`: the regions a warp
        engine redraws (default all; `Redrawer.redraw`)."""
        reference, crop = self.reference.image, self._crop
        if driver is None:
            self.choose(None)
            return lambda: _output(reference, crop)
        with self.timer("retarget"):
            target = self.target(driver)
            j = self.choose(target) if use is None else use
        state = self.state if j == 0 else self.states[j]
        if j:  # the same crop-space target, expressed in reference j's frame
            target = state.crop.points_to_frame(self.states[0].crop.points_to_crop(target))
        face = None
        if self.needs_driver_image:
            if driver_image is None:
                raise UsageError("--mouth driver needs the driver's frames", "use --mouth generator or cavity")
            face = DriverFace(driver_image, driver.points)
        engine, timer, primary = self.engine, self.timer, self.states[0]
        limit_to = limit if limit is not None else self.paste_limit if j == 0 else None
        direct = self._direct(state)
        only = {} if parts is None else {"parts": parts}

        def finish() -> np.ndarray:
            base = reference if onto is None else onto()
            with timer("render"):
                side = mask_grid(state.size) if direct else state.size
                limit = None if limit_to is None else limit_to(state, state.crop.points_to_crop(target), side)
                if direct:  # straight into the photo: no crop render, no paste-back resampling
                    patch = engine.render_patch(state, target, reference.shape, primary.crop, face, limit, **only)
                else:
                    crop_rgb, mask = (engine.render(state, target, face, **only) if face
                                      else engine.render(state, target, **only))
                    if limit is not None:
                        mask = mask * limit
            with timer("paste"):
                if direct:
                    return _output(patch.onto(base), crop)
                return _output(align.paste_back(base, crop_rgb, primary.crop, mask), crop)

        return finish

    def _direct(self, state: RefState) -> bool:
        direct = getattr(self.engine, "direct", None)
        return bool(direct and direct(state))

    def advance(self, driver: Face | None) -> None:
        """Account for a frame without rendering it (a resumed video's completed chunks), so the
        reference choice continues exactly as in an uninterrupted render."""
        if self.mode == "select":
            self.choose(None if driver is None else self.target(driver))

    def usage(self) -> list[tuple[str, int, list[tuple[int, int]]]]:
        """Per reference: (name, frames served, [(first, last) frame runs]) — selection only;
        every reference is listed (with 0 frames when never chosen)."""
        runs: dict[int, list[tuple[int, int]]] = {i: [] for i in range(len(self.references))}
        for first, last, i in self.selector.segments:
            runs[i].append((first, last))
        return [(r.name, sum(b - a + 1 for a, b in runs[i]), runs[i]) for i, r in enumerate(self.references)]

    def unchanged(self, frame: np.ndarray) -> np.ndarray:
        """`frame` as it is, in the output's layout (`--crop`: the current crop of it)."""
        return _output(frame, self._crop)

    def output_size(self) -> tuple[int, int]:
        """(width, height) of rendered frames (before any compare layout)."""
        if self._crop is not None:
            return self._crop.size, self._crop.size
        h, w = self.reference.image.shape[:2]
        return w, h


def _output(full: np.ndarray, crop: align.Crop | None) -> np.ndarray:
    """A full output frame in the output's layout (`--crop`: `crop` of it)."""
    return full if crop is None else crop.extract(full)


def side_by_side(driver: np.ndarray, output: np.ndarray) -> np.ndarray:
    """[driver | output], the driver scaled to the output's height."""
    h = output.shape[0]
    w = max(1, round(driver.shape[1] * h / driver.shape[0]))
    return np.hstack([cv2.resize(driver, (w, h), interpolation=cv2.INTER_AREA), output])


@dataclass(frozen=True)
class ImageResult:
    """`used`: the reference photo that rendered the face (several references: the nearest in
    pose and expression, or "all (fused)")."""

    image: np.ndarray
    reference_faces: int
    driver_faces: int
    seconds: dict[str, float]
    references: int = 1
    used: str = ""


ABSOLUTE = MotionConfig(mode="absolute", regions=REGIONS)


def reenact_image(ref_path: str | Path | list, pose_path: str | Path, config: InferenceConfig, *,
                  motion_cfg: MotionConfig = ABSOLUTE, ref_face: str | int = "largest",
                  driver_face: str | int = "largest", multi: str = "auto") -> ImageResult:
    """Render the reference with the pose photo's head pose and expression (nothing written).

    `ref_path`: one photo, or several / a folder / a glob (the first is the primary; see
    `Reenactor` for `multi`). A single pose photo has no anchor frame, so motion is absolute
    (UsageError for relative); `motion_cfg.transfer` / `.regions` select what moves. Faces:
    "largest" or a 0-based left-to-right index."""
    check_absolute(motion_cfg)
    timer = StageTimer()
    with Landmarker(mode="image") as lm:
        with timer("landmarks"):
            references = load_references(ref_path, lm, choice=ref_face)
            pose_img = media.read_image(pose_path)
            driver, n_drv = find_face(pose_img, lm, name=str(pose_path), choice=driver_face)
    return render_pose(references, pose_img, driver, config, motion_cfg=motion_cfg, multi=multi,
                       timer=timer, driver_faces=n_drv)


def upright_pose(image: np.ndarray, face: Face) -> tuple[np.ndarray, Face]:
    """A pose photo whose face is rolled past `motion.QUARTER_TURN_ABOVE` (on its side: no EXIF
    orientation) turned upright by quarter turns, with its face: its head rotation then counts
    from its own upright frame, as a reference's does (`motion.quarter_turn`)."""
    turns = motion.quarter_turns(face.fit)
    if not turns:
        return image, face
    h, w = image.shape[:2]
    # np.rot90 turns counter-clockwise; pixel centres (x, y) go to these places
    where = {1: [[0, 1, 0], [-1, 0, w - 1]], -1: [[0, -1, h - 1], [1, 0, 0]], 2: [[-1, 0, w - 1], [0, -1, h - 1]]}
    return np.ascontiguousarray(np.rot90(image, turns)), face.transformed(np.array(where[turns], np.float64))


def check_absolute(motion_cfg: MotionConfig) -> None:
    """UsageError unless the motion is absolute (a single pose photo has no anchor frame)."""
    if motion_cfg.mode != "absolute":
        raise UsageError("relative motion needs a driver video", "a pose photo uses --motion absolute")


def render_pose(references: list[Reference], pose_img: np.ndarray, driver: Face, config: InferenceConfig, *,
                motion_cfg: MotionConfig = ABSOLUTE, multi: str = "auto", timer: StageTimer | None = None,
                driver_faces: int = 1, engine: Engine | None = None,
                states: list[RefState] | None = None) -> ImageResult:
    """The image step shared by `reenact image` and the Python API (`reenact.api`): the loaded
    references rendered with `driver`, the chosen face of `pose_img` (RGB uint8). `engine` /
    `states`: an engine and the references' states it prepared before (None: prepared here)."""
    check_absolute(motion_cfg)
    pose_img, driver = upright_pose(pose_img, driver)
    timer = timer or StageTimer()
    ref = references[0]
    r = Reenactor(references, config, engine=engine, timer=timer, retarget=retargeter(ref, motion_cfg),
                  multi=multi, states=states)
    out = r.render(driver, pose_img)
    if config.compare:
        out = side_by_side(pose_img, out)
    used = "all (fused)" if r.mode == "fuse" else next(n for n, k, _ in r.usage() if k) if r.mode == "select" else ref.name
    return ImageResult(image=out, reference_faces=ref.n_faces, driver_faces=driver_faces,
                       seconds=dict(timer.seconds), references=len(references), used=used)
