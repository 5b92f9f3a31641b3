"""Redraw the parts of a warp render that the warp cannot show: FusionNet's learned half on a CPU.

`Redrawer` works on an engine's face crop after the classical warp (`reenact.warp`):

* mouth — "generator": the mouth region generator (`reenact.model.region`, run by ONNX Runtime)
  redraws the mouth crop and its output replaces the warp inside the target's mouth opening
  (`regions.mouth_mask`) — or, for a model trained with `blend = "area"`, over the whole mouth
  area on every frame (`regions.mouth_area_mask`); "driver": the classical baseline — the
  driver's own mouth interior, mapped onto the target's opening by an affine fit of the inner lip
  contours and colour-matched to the reference's lips; "cavity": the warp's dark cavity, unchanged.
* eyes — "generator": each eye whose lids the warp had to stretch open (`regions.eye_strength`)
  is redrawn by the eye generator and blended in over the lids in proportion; "warp": unchanged.

A region is only computed when it is needed (a mouth opening the reference's mouth does not show
— where the warp draws its cavity —, an eye opening wider than the reference's), so a frame
without one costs nothing extra; so is a reference's appearance code for a region (on the first
frame that redraws it). A video source, whose every frame is a reference, takes every frame's
codes from one of its frames (`Redrawer.appearance_from`, `v2v.appearance_frame`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from reenact import geometry as g
from reenact import parsing, regions, warp
from reenact.errors import MissingWeights, UsageError

MOUTH_MODES = ("generator", "driver", "cavity")
EYE_MODES = ("generator", "warp")
MIN_MOUTH_PIXELS = 4.0  # inner-mouth area (region pixels) below which a mouth counts as closed


@dataclass(frozen=True)
class RegionRef:
    """Per reference: its crop landmarks and face scale; `image` the face crop, or the photo
    when `canvas` (2×3, photo pixels → face-crop pixels) is given. The region generators'
    features of its own mouth and eyes are computed on first use (`Redrawer.appearance`) and
    kept here (several render threads may share one reference)."""

    points: np.ndarray
    scale: float
    image: np.ndarray
    canvas: np.ndarray | None = None
    features: dict = field(default_factory=dict, repr=False, compare=False)  # "mouth" / "right" / "left"
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


@dataclass(frozen=True)
class DriverFace:
    """The driver's frame (RGB uint8) and its (478, 3) landmarks in that frame (driver-mouth
    baseline only)."""

    image: np.ndarray
    points: np.ndarray


PARTS = ("mouth", "eyes")  # what a Redrawer can redraw


class Redrawer:
    """See module doc. `mouth` / `eyes`: the modes; `mouth_model` / `eyes_model`: the loaded
    `runtime.RegionRuntime` of each generator mode in use (None otherwise)."""

    def __init__(self, *, mouth: str = "cavity", eyes: str = "warp", mouth_model=None, eyes_model=None) -> None:
        if mouth not in MOUTH_MODES or eyes not in EYE_MODES:
            raise UsageError(f"unknown --mouth {mouth!r} or --eyes {eyes!r}",
                             f"--mouth: {', '.join(MOUTH_MODES)}; --eyes: {', '.join(EYE_MODES)}")
        if (mouth == "generator") != (mouth_model is not None) or (eyes == "generator") != (eyes_model is not None):
            raise ValueError("a generator mode needs its region model (and only it)")
        self.mouth, self.eyes = mouth, eyes
        self.mouth_model, self.eyes_model = mouth_model, eyes_model
        # Where every reference's region features come from when set (a video source: one of its
        # frames, `v2v`); None: each reference's own.
        self.appearance_from: RegionRef | None = None

    @property
    def generates(self) -> bool:
        """Whether a region generator draws (and so encodes references' appearance)."""
        return self.mouth_model is not None or self.eyes_model is not None

    @property
    def active(self) -> bool:
        return self.mouth != "cavity" or self.eyes != "warp"

    @property
    def needs_driver(self) -> bool:
        return self.mouth == "driver"

    def prepare(self, image: np.ndarray, points: np.ndarray, canvas: np.ndarray | None = None) -> RegionRef:
        """Per reference: `image` its face crop (S×S×3 uint8), `points` its (478, 3) crop landmarks;
        with `canvas` (2×3, image pixels → face-crop pixels) `image` is the photo itself and the
        regions are read from it in one resampling. Cheap: the features come on first use."""
        return RegionRef(np.asarray(points, np.float64), g.face_scale(points), image, canvas)

    def appearance(self, ref: RegionRef, region: str) -> list:
        """The generator's features of `ref`'s own `region` ("mouth", or the eye "right" /
        "left"), computed once per reference — or `appearance_from`'s, when set."""
        ref = self.appearance_from or ref
        with ref.lock:
            if region not in ref.features:
                if region == "mouth":
                    model, box = self.mouth_model, regions.mouth_box(ref.points, self.mouth_model.size, ref.scale)
                else:
                    model = self.eyes_model
                    box = regions.eye_boxes(ref.points, model.size, ref.scale)[region]
                ref.features[region] = model.appearance(box.on(ref.canvas).extract(ref.image))
            return ref.features[region]

    def redraw(self, ref: RegionRef, rgb: np.ndarray, target: np.ndarray,
               driver: DriverFace | None = None, canvas: np.ndarray | None = None, *,
               in_place: bool = False, parts: tuple[str, ...] = PARTS) -> np.ndarray:
        """The warp render `rgb` (face crop, uint8) of target landmarks `target` (478, 3 crop
        coordinates) with its mouth and eyes redrawn as configured. `canvas`: `rgb` is not the
        face crop but an image whose pixels map to face-crop pixels by this 2×3 affine (the
        direct render's patch of the photo); the regions are read from and drawn into it.
        `in_place`: the regions are drawn into `rgb` itself (the caller's own render), else into
        one copy of it. `parts`: which of "mouth" and "eyes" to redraw (a render of which only
        one part is used: the other is not worth its generator)."""
        if not in_place:
            rgb = rgb.copy()
        scale = g.face_scale(target)
        mouth = self.mouth if "mouth" in parts else "cavity"  # cavity: the warp's own, nothing to draw
        if mouth == "generator":
            rgb = self._mouth_generator(ref, rgb, target, scale, canvas)
        elif mouth == "driver":
            if driver is None:
                raise UsageError("--mouth driver needs the driver's frame", "use --mouth generator or cavity")
            rgb = driver_mouth(rgb, target, ref, driver, scale, canvas)
        if self.eyes == "generator" and "eyes" in parts:
            rgb = self._eyes_generator(ref, rgb, target, scale, canvas)
        return rgb

    def _mouth_generator(self, ref: RegionRef, rgb: np.ndarray, target: np.ndarray, scale: float,
                         canvas: np.ndarray | None) -> np.ndarray:
        size, area = self.mouth_model.size, self.mouth_model.blend == "area"
        strength = 1.0 if area else mouth_strength(ref, target, scale, size)
        if strength <= 0:
            return rgb
        box = regions.mouth_box(target, size, scale).on(canvas)
        pts = box.points(target)
        pose, warped = parsing.parsing_map(pts, size), box.extract(rgb)
        out = self.mouth_model.redraw([self.appearance(ref, "mouth")], [pose], [warped])[0]
        if area:  # the whole mouth area, every frame; the warp keeps its detail finer than the crop
            return box.paste(rgb, out, regions.mouth_area_mask(pose), under=warped, in_place=True)
        return box.paste(rgb, out, regions.mouth_mask(pts, size) * strength, in_place=True)

    def _eyes_generator(self, ref: RegionRef, rgb: np.ndarray, target: np.ndarray, scale: float,
                        canvas: np.ndarray | None) -> np.ndarray:
        size = self.eyes_model.size
        todo = []
        for side, box in regions.eye_boxes(target, size, scale).items():
            strength = regions.eye_strength(ref.points, target, side)
            if strength > 0:
                todo.append((side, box.on(canvas), box.points(target), strength))
        if not todo:
            return rgb
        warped = [box.extract(rgb) for _, box, _, _ in todo]
        outs = self.eyes_model.redraw([self.appearance(ref, side) for side, *_ in todo],
                                      [parsing.parsing_map(pts, size) for _, _, pts, _ in todo], warped)
        for (side, box, pts, strength), out, under in zip(todo, outs, warped):
            box.paste(rgb, within_light(out, under), regions.eye_mask(pts, size) * strength, in_place=True)
        return rgb


def within_light(patch: np.ndarray, scene: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """`patch` (a generator's region output, uint8) no brighter, channel by channel, than the
    `percentile` of `scene` (the warp's render of the same crop: the reference's own light). The
    eye generator learnt its sclera from well-lit photos; in a dim frame, or opening a lid the
    reference shows closed, it would otherwise paint a glowing white eye."""
    ceiling = np.percentile(scene.reshape(-1, scene.shape[-1]), percentile, axis=0)
    return np.minimum(patch, np.round(ceiling).astype(np.uint8))


def mouth_strength(ref: RegionRef, target: np.ndarray, scale: float, size: int) -> float:
    """How much of the target's mouth opening must be drawn (0..1): none when the opening is tiny
    or the reference's own mouth shows it; full once ≥ 25 % of it is new (the warp's cavity)."""
    if regions.mouth_opening(target, scale) * (size / regions.MOUTH_SIDE) ** 2 < MIN_MOUTH_PIXELS:
        return 0.0
    new = warp.new_mouth_opening(ref.points, target, scale=scale / max(ref.scale, 1e-6))
    return float(np.clip(new / 0.25, 0.0, 1.0))


def driver_mouth(rgb: np.ndarray, target: np.ndarray, ref: RegionRef, driver: DriverFace,
                 scale: float, canvas: np.ndarray | None = None) -> np.ndarray:
    """The classical baseline: the driver's mouth interior, affinely fitted from the driver's inner
    lip contour onto the target's, its colours matched (mean and spread per channel in Lab) from the
    driver's lips to the reference's lips, blended into the target's mouth opening of `rgb` (drawn
    into it; returned). `canvas`: as for `Redrawer.redraw`."""
    size = 64
    strength = mouth_strength(ref, target, scale, size)
    if strength <= 0:
        return rgb
    box = regions.mouth_box(target, size, scale)
    pts = box.points(target)
    inner = list(g.LIPS_INNER)
    d_box = regions.mouth_box(driver.points, size * 2)
    d_pts = d_box.points(driver.points)
    d_crop = d_box.extract(driver.image)
    fit, _ = cv2.estimateAffine2D(d_pts[inner, :2].astype(np.float32), pts[inner, :2].astype(np.float32),
                                  method=cv2.LMEDS)
    if fit is None:
        return rgb
    mouth = cv2.warpAffine(d_crop, fit, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    r_box = regions.mouth_box(ref.points, size * 2, ref.scale)
    lips = lambda p, n: regions.fill_polygon(n, p[list(g.LIPS_OUTER)]) - regions.fill_polygon(n, p[inner])  # noqa: E731
    mouth = _match_colours(mouth, d_crop, lips(d_pts, size * 2), r_box.on(ref.canvas).extract(ref.image),
                           lips(r_box.points(ref.points), size * 2))
    return box.on(canvas).paste(rgb, mouth, regions.mouth_mask(pts, size) * strength, in_place=True)


def _match_colours(image: np.ndarray, source: np.ndarray, source_mask: np.ndarray, goal: np.ndarray,
                   goal_mask: np.ndarray) -> np.ndarray:
    """`image` with Lab statistics moved from `source`'s masked pixels to `goal`'s."""
    def stats(img, m):
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
        w = m.reshape(-1) > 0.5
        px = lab[w] if w.sum() >= 8 else lab
        return px.mean(0), px.std(0) + 1.0
    (ms, ss), (mg, sg) = stats(source, source_mask), stats(goal, goal_mask)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab = (lab - ms) * np.clip(sg / ss, 0.5, 2.0) + mg
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


REGION_SIZES = {"mouth": 64, "eyes": 48}
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def bundled(region: str) -> Path:
    """Where the shipped region generator of `region` lives (it may be absent)."""
    return WEIGHTS_DIR / f"{region}-{REGION_SIZES[region]}.onnx"


def manifest() -> dict:
    """weights/manifest.json ({"models": {name: entry}}), or an empty one when absent."""
    path = WEIGHTS_DIR / "manifest.json"
    if not path.is_file():
        return {"models": {}}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MissingWeights(f"{path} is unreadable ({e})", "restore it: git checkout weights/") from None


def verify_bundled(path: Path) -> None:
    """Check a shipped model's files (NAME.onnx and NAME.appearance.onnx) against the sha256 in
    weights/manifest.json. Raises MissingWeights on a missing entry or a mismatch."""
    entry = manifest().get("models", {}).get(path.name[: -len(".onnx")])
    if entry is None:
        raise MissingWeights(f"{path} is not listed in weights/manifest.json", "restore weights/ (git checkout weights/)")
    for name, expected in entry["files"].items():
        if not name.endswith(".onnx"):
            continue  # the .pt checkpoint is for training, not inference
        f = path.parent / name
        if not f.is_file():
            raise MissingWeights(f"{f} is missing", "restore weights/ (git checkout weights/)")
        if hashlib.sha256(f.read_bytes()).hexdigest() != expected["sha256"]:
            raise MissingWeights(f"{f} does not match its sha256 in weights/manifest.json (damaged or replaced)",
                                 "restore weights/ (git checkout weights/), or pass your own model with "
                                 "--mouth-weights / --eyes-weights")
