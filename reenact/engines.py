"""Rendering engines: given a prepared reference and target landmarks, produce a face crop.

Engines: "warp" (classical landmark warp, no weights), "gan" (generator F + D, exported to ONNX,
run by ONNX Runtime) and "fusion" (FusionNet: the warp where it can show the reference, a
generator where it cannot — by default the shipped mouth and eye region generators redraw the
mouth interior and opening lids (`reenact.redraw`); with a whole-face F + D (`--weights`) the
GAN output with the warp blended in where the reference shows the face, `reenact.fusion`). With a k-shot generator (`variant = "kshot"`)
"gan" and "fusion" are `KShotEngine` / `KShotFusionEngine`: the same rendering, but the generator
fuses every reference of a bank (`KShotEngine.bank`).

An engine works in its own crop of the reference frame (`RefState.crop`). `prepare` runs once per
reference; `render` runs per frame and returns the rendered crop and the paste-back mask (float
in [0, 1], zero at the crop border so the paste is seamless). Targets arrive in the reference
*frame's* pixel coordinates; each engine maps them into its crop. The warp engines also render a
native-resolution state straight into the photo (`WarpEngine.direct` / `render_patch`: one
resampling, no crop), which `pipeline.Reenactor` prefers where an engine offers it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from reenact import align, fusion, parsing, redraw, warp
from reenact import geometry as g
from reenact.config import InferenceConfig
from reenact.errors import MissingWeights
from reenact.landmarks import Face
from reenact.redraw import DriverFace, RegionRef, Redrawer
from reenact.runtime import GeneratorRuntime, RegionRuntime


@dataclass(frozen=True)
class RefState:
    """An engine's per-reference cache. `crop`: the engine's crop of the reference frame;
    `image`: the reference crop (size×size×3 uint8); `points`: its (478, 3) crop landmarks;
    `head`: the reference's head region in the crop (`warp.head_mask`), part of every paste mask.
    A state that renders straight into the photo (`WarpEngine.direct`) has neither crop image
    nor crop-sized head mask (None): its renders sample the photo."""

    crop: align.Crop
    image: np.ndarray | None
    points: np.ndarray
    head: np.ndarray | None
    extra: Any = None

    @property
    def size(self) -> int:
        """The crop's side."""
        return self.crop.size


class Engine(Protocol):
    name: str

    def prepare(self, frame: np.ndarray, face: Face, size: int | None = None) -> RefState:
        """Per-reference work, once. `size`: the crop side to use (several references must share
        one); None = the engine's choice. Engines with a fixed model resolution ignore it."""
        ...

    def render(self, state: RefState, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """target: (478, 3) reference-frame landmarks → (crop uint8 S×S×3, mask float32 S×S)."""
        ...


def native_size(points: np.ndarray, lo: int, hi: int) -> int:
    """Crop side at which one crop pixel ≈ one frame pixel, clamped to [lo, hi], multiple of 16."""
    unit = align.align(points, 256).scale  # crop px per frame px at side 256
    side = 256 / max(unit, 1e-6)
    return int(np.clip(round(side / 16) * 16, lo, hi))


def paste_mask(head: np.ndarray, size: int) -> np.ndarray:
    """Paste-back mask: the moved head region grown and feathered, forced to 0 at the crop border."""
    grown = align.feathered_mask((head > 0.05).astype(np.float32), feather=size / 24)
    grown *= 2.0  # in place (a new array each time): one full-size temporary less per step
    np.clip(grown, 0.0, 1.0, out=grown)
    grown *= align.edge_falloff(size, margin=size / 16)
    return grown


DIRECT_FACTOR = 2  # crops larger than this × the model crop render straight into the photo
MASK_SIDE = 256  # the direct render's paste mask: evaluated on a grid of about this side


def mask_factor(size: int) -> int:
    """Crop pixels per node of the direct render's mask grid: a power of two dividing `size`,
    bringing the grid to no less than MASK_SIDE a side (the mask is smooth at that scale)."""
    factor = 1
    while size // (2 * factor) >= MASK_SIDE and size % (2 * factor) == 0:
        factor *= 2
    return factor


def mask_grid(size: int) -> int:
    """The side of the direct render's mask grid for a size² crop (`mask_factor`)."""
    return size // mask_factor(size)


def to_mask_grid(size: int) -> np.ndarray:
    """2×3: crop pixels → the mask grid's (`mask_factor`) pixels (centres to centres)."""
    f = mask_factor(size)
    return np.array([[1.0 / f, 0.0, 0.5 / f - 0.5], [0.0, 1.0 / f, 0.5 / f - 0.5]])


@dataclass(frozen=True)
class WarpRef:
    """`RefState.extra` of the warp engines: the warp source and the redrawer's per-reference
    state (None when nothing is redrawn). A native-resolution state renders straight into the
    photo (`WarpEngine.render_patch`): `photo` is the reference frame it samples, `head` the
    reference's head region on the mask grid (`to_mask_grid`); both None for a model crop."""

    source: warp.WarpSource
    regions: RegionRef | None
    photo: np.ndarray | None = None
    head: np.ndarray | None = None


class WarpEngine:
    """Classical piecewise-affine landmark warp. Renders at the face's native resolution (at least
    `config.size`), so the paste-back keeps the reference's detail. With a `Redrawer` it redraws
    what the warp cannot show (mouth interior, opening lids): learned region generators — the
    "fusion" engine when no whole-face generator is given — or the driver's mouth (baseline)."""

    name = "warp"

    def __init__(self, config: InferenceConfig, redrawer: Redrawer | None = None, *, name: str = "warp") -> None:
        self.config, self.name = config, name
        self.redrawer = redrawer if redrawer is not None and redrawer.active else None

    @property
    def needs_driver(self) -> bool:
        """Whether `render` needs the driver's frame (the driver-mouth baseline)."""
        return self.redrawer is not None and self.redrawer.needs_driver

    def prepare(self, frame: np.ndarray, face: Face, size: int | None = None) -> RefState:
        if size is None:
            size = native_size(face.points, self.config.size, self.config.max_warp_size)
        crop = align.align(face.points, size)
        points = crop.points_to_crop(face.points)
        if size > DIRECT_FACTOR * self.config.size:  # renders sample the photo (see `direct`): no crop
            regions_ref = self.redrawer.prepare(frame, points, canvas=crop.matrix) if self.redrawer else None
            head = self._grid_mask(warp.head_ring(warp.control_points(points, size)), size)
            return RefState(crop=crop, image=None, points=points, head=None,
                            extra=WarpRef(warp.prepare_source(None, points, size), regions_ref, frame, head))
        image = crop.extract(frame)
        regions_ref = self.redrawer.prepare(image, points) if self.redrawer else None
        return RefState(crop=crop, image=image, points=points, head=warp.head_mask(points, size),
                        extra=WarpRef(warp.prepare_source(image, points), regions_ref))

    @staticmethod
    def _grid_mask(ring: np.ndarray, size: int) -> np.ndarray:
        """`warp.hull_mask` of a head ring (crop coordinates) on the mask grid of a size² crop."""
        return warp.hull_mask(align.apply_affine(to_mask_grid(size), ring), size // mask_factor(size))

    @staticmethod
    def direct(state: RefState) -> bool:
        """Whether `state` renders straight into the photo (`render_patch`) rather than into its
        crop (`render`, then `align.paste_back`): a native-resolution crop more than DIRECT_FACTOR
        times the model crop's side does (a face in a real photo); smaller ones keep the crop
        render + paste-back, bit for bit as before — among them the model crop and the faces of
        `reenact eval`'s pictures (celeba-id and clips: native crops of 256–288)."""
        return state.extra.photo is not None

    def render(self, state: RefState, target: np.ndarray, driver: DriverFace | None = None, *,
               parts: tuple[str, ...] = redraw.PARTS) -> tuple[np.ndarray, np.ndarray]:
        """`driver`: the driver's frame and landmarks, only for `needs_driver`; `parts`: the
        regions to redraw (`Redrawer.redraw`)."""
        points = state.crop.points_to_crop(target)
        rgb, head = warp.warp(state.extra.source, points)
        if self.redrawer is not None:
            rgb = self.redrawer.redraw(state.extra.regions, rgb, points, driver, in_place=True, parts=parts)
        return rgb, paste_mask(np.maximum(head, state.head), state.size)

    def render_patch(self, state: RefState, target: np.ndarray, shape: tuple[int, ...], at: align.Crop,
                     driver: DriverFace | None = None, limit: np.ndarray | None = None, *,
                     parts: tuple[str, ...] = redraw.PARTS) -> align.Patch:
        """The direct render (`direct` states): the rectangle of a frame of `shape` that the
        paste mask reaches, rendered from the reference photo in one resampling (the crop's
        backward map composed with the crop ↔ photo affines, `warp.View`), the regions redrawn
        in it, with its blend weight: what `render` + `align.paste_back` give, without the crop.

        `target`: (478, 3) landmarks in the state's reference frame; `at`: the crop of the frame
        the patch lands in (the primary reference's: the same crop coordinates as `state.crop`);
        `limit`: a square crop-space mask the paste is limited to (as `render`'s mask would be),
        best at the mask grid's side (`mask_grid`: no resampling);
        `parts`: as for `render`."""
        points = state.crop.points_to_crop(target)
        src = state.extra.source
        size = src.size
        fit = g.fit_head(points)
        dst = warp.target_controls(src, points, fit)
        grid = mask_grid(size)
        mask = paste_mask(np.maximum(self._grid_mask(warp.head_ring(dst), size), state.extra.head), grid)
        if limit is not None:  # best drawn on the grid already (`mask_grid`)
            limit = np.asarray(limit, np.float32)
            mask *= limit if limit.shape == mask.shape else cv2.resize(limit, (grid, grid), interpolation=cv2.INTER_AREA)
        x, y, w, h = cv2.boundingRect((mask > 0).astype(np.uint8))
        f = mask_factor(size)  # mask grid pixel g is crop pixel (g + 0.5)·f − 0.5; alpha > 0 within one of it
        rect = ((x - 0.5) * f - 0.5, (y - 0.5) * f - 0.5, (x + w + 0.5) * f - 0.5, (y + h + 0.5) * f - 0.5)
        x0, y0, x1, y1 = align.frame_box(at, shape, rect) if w and h else (0, 0, 0, 0)
        if x1 <= x0 or y1 <= y0:
            return align.Patch(np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.float32), 0, 0)
        to_crop = align.translated(at.matrix, x0, y0)
        view = warp.View((y1 - y0, x1 - x0), to_crop, state.extra.photo, state.crop.inverse)
        rgb = warp.render(src, points, dst, fit, view)
        if self.redrawer is not None:
            rgb = self.redrawer.redraw(state.extra.regions, rgb, points, driver, canvas=to_crop, in_place=True,
                                       parts=parts)
        # The mask is smooth at its grid's scale: resampled at that spacing and upsampled.
        step = max(1, int(f * view.scale))
        alpha = align.mask_in_frame(mask, align.compose(to_mask_grid(size), at.matrix), (x0, y0, x1, y1), step)
        return align.Patch(rgb, alpha, x0, y0)


# The bundled whole-face generator, once trained weights ship with the project (absent until then).
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "reenact-256.onnx"


def default_engine() -> str:
    """"fusion" when a bundled generator exists (whole-face or the mouth region generator), else
    "warp" (no weights needed)."""
    return "fusion" if DEFAULT_WEIGHTS.is_file() or redraw.bundled("mouth").is_file() else "warp"


@dataclass(frozen=True)
class GanRef:
    """`RefState.extra` of the gan/fusion engines: F's features of the reference (computed once),
    the warp source (fusion, feature_warp) and the reference's face region (fusion)."""

    features: list
    source: warp.WarpSource | None
    region: np.ndarray | None


class GanEngine:
    """Generator F + D through ONNX Runtime. Renders at the model's resolution (the exported
    config's size, not `--size`): target landmarks → crop → parsing map (E) → D → face crop."""

    name = "gan"

    def __init__(self, config: InferenceConfig, runtime: GeneratorRuntime) -> None:
        self.config, self.runtime = config, runtime

    def _needs_source(self) -> bool:
        return self.runtime.feature_warp

    def prepare(self, frame: np.ndarray, face: Face, size: int | None = None) -> RefState:
        size = self.runtime.size  # the model's resolution, whatever is asked
        crop = align.align(face.points, size)
        image = crop.extract(frame)
        points = crop.points_to_crop(face.points)
        source = warp.prepare_source(image, points) if self._needs_source() else None
        region = fusion.face_region(parsing.parsing_map(points, size)) if self.name == "fusion" else None
        return RefState(crop=crop, image=image, points=points, head=warp.head_mask(points, size),
                        extra=self._extra(image, points, source, region))

    def _extra(self, image: np.ndarray, points: np.ndarray, source, region) -> GanRef:
        return GanRef(self.runtime.appearance(image), source, region)

    def _generate(self, state: RefState, points: np.ndarray, maps) -> np.ndarray:
        grid = warp.normalised_grid(*maps) if self.runtime.feature_warp else None
        return self.runtime.generate(state.extra.features, parsing.parsing_map(points, self.runtime.size), grid)

    def _paste(self, state: RefState, points: np.ndarray) -> np.ndarray:
        return paste_mask(np.maximum(warp.head_mask(points, self.runtime.size), state.head), self.runtime.size)

    def render(self, state: RefState, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = state.crop.points_to_crop(target)
        maps = warp.backward_map(state.extra.source, points) if self.runtime.feature_warp else None
        return self._generate(state, points, maps), self._paste(state, points)


class FusionEngine(GanEngine):
    """FusionNet (`reenact.fusion`): the generator's output, with the classical warp inside the
    face region that both the reference and the target show."""

    name = "fusion"

    def _needs_source(self) -> bool:
        return True

    def render(self, state: RefState, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = state.crop.points_to_crop(target)
        src = state.extra.source
        map_x, map_y = warp.backward_map(src, points)
        gan = self._generate(state, points, (map_x, map_y))
        warped = cv2.remap(src.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        warped = warp.mouth_cavity(warped, src.points, points)
        mask = fusion.fusion_mask(state.extra.region, points, map_x, map_y)
        return fusion.blend(gan, warped, mask), self._paste(state, points)


@dataclass(frozen=True)
class KShotRef:
    """`RefState.extra` of the k-shot engines: the embeddings of every reference the generator
    fuses (one after `prepare`, all of a bank after `KShotEngine.bank`), and the warp source and
    face region of the reference the output is rendered for (fusion)."""

    embeddings: tuple
    source: warp.WarpSource | None
    region: np.ndarray | None


class KShotEngine(GanEngine):
    """A k-shot generator (CainGAN-style fusion) through ONNX Runtime.

    `prepare` embeds one reference (cache the state per reference); `bank(states, primary)` makes
    the state that renders in the primary reference's crop (targets in its frame's coordinates,
    pasted back into its frame) from the fused embeddings of all of them — cheap, so a video can
    change its primary reference per frame. `render` of a single prepared state is the one-shot
    result of the same network (K = 1)."""

    name = "gan"

    def _extra(self, image: np.ndarray, points: np.ndarray, source, region) -> KShotRef:
        embedding = self.runtime.embed(image, parsing.parsing_map(points, self.runtime.size))
        return KShotRef((embedding,), source, region)

    def _generate(self, state: RefState, points: np.ndarray, maps) -> np.ndarray:
        return self.runtime.generate_k(state.extra.embeddings, parsing.parsing_map(points, self.runtime.size))

    @staticmethod
    def bank(states: list[RefState], primary: int = 0) -> RefState:
        """One state fusing the embeddings of all `states` (each from `prepare`), rendered for
        `states[primary]`. Raises ValueError on an empty list or a bad index."""
        if not states or not 0 <= primary < len(states):
            raise ValueError(f"bank needs ≥ 1 prepared reference and 0 ≤ primary < {len(states)}")
        main = states[primary]
        embeddings = tuple(e for s in states for e in s.extra.embeddings)
        return replace(main, extra=replace(main.extra, embeddings=embeddings))


class KShotFusionEngine(KShotEngine, FusionEngine):
    """FusionNet with a k-shot generator: the fused generator output, with the primary reference's
    classical warp inside the face region that it and the target both show."""

    name = "fusion"


def resolve_weights(config: InferenceConfig) -> Path:
    """The generator file for gan/fusion: `config.weights`, else the bundled default."""
    if config.weights:
        return Path(config.weights)
    if DEFAULT_WEIGHTS.is_file():
        return DEFAULT_WEIGHTS
    raise MissingWeights(f"engine {config.engine!r} needs trained generator weights, none are installed",
                         "no whole-face generator ships yet: use --engine fusion (warp + the shipped mouth "
                         "and eye generators) or warp, or pass --weights NAME.onnx from `reenact export`")


def region_model(region: str, path: str | None) -> RegionRuntime:
    """The region generator of `region`: `path`, else the bundled one. Raises MissingWeights."""
    where = Path(path) if path else redraw.bundled(region)
    if not path:
        if not where.is_file():
            raise MissingWeights(f"the {region} generator is not installed ({where} is missing)",
                                 f"use --{region} {'cavity' if region == 'mouth' else 'warp'}, or pass "
                                 f"--{region}-weights NAME.onnx from `reenact export`")
        redraw.verify_bundled(where)
    return RegionRuntime(where, expect=region, threads=1)


def build_redrawer(config: InferenceConfig) -> Redrawer:
    """The mouth/eye redrawing of `config` (modes resolved: "auto" = the generators for fusion)."""
    mouth, eyes = config.resolved_regions()
    return Redrawer(mouth=mouth, eyes=eyes,
                    mouth_model=region_model("mouth", config.mouth_weights) if mouth == "generator" else None,
                    eyes_model=region_model("eyes", config.eyes_weights) if eyes == "generator" else None)


# Engines built for earlier configs, kept for reuse (`keep_engines`); None: not kept.
_kept: OrderedDict[InferenceConfig, Engine] | None = None
_keep_limit = 0


def keep_engines(limit: int = 4) -> int:
    """From now on in this process, `build_engine` returns the engine it built before for an
    equal config — up to `limit` engines, the least recently used dropped; 0 builds every time
    (the default). For a process that renders many jobs (a Ray worker of `reenact batch --ray`):
    each model is loaded once. Engines keep no per-reference state (that is `RefState`), so the
    pixels do not change. Returns the previous limit."""
    global _kept, _keep_limit
    previous, _keep_limit = _keep_limit, max(0, limit)
    if not _keep_limit:
        _kept = None
    else:
        _kept = _kept if _kept is not None else OrderedDict()
        _trim_kept()
    return previous


def _trim_kept() -> None:
    """Drop the least recently used kept engines beyond the limit."""
    while len(_kept) > _keep_limit:
        _kept.popitem(last=False)


def build_engine(config: InferenceConfig) -> Engine:
    """The engine named by `config.engine`: warp; fusion = the warp with the region generators
    (or, with `--weights` or a bundled whole-face model, FusionNet over F + D); gan = F + D.
    Raises MissingWeights. With `keep_engines`, an engine built before for this config."""
    if _kept is None:
        return _build_engine(config)
    if config not in _kept:
        _kept[config] = _build_engine(config)
        _trim_kept()
    _kept.move_to_end(config)
    return _kept[config]


def _build_engine(config: InferenceConfig) -> Engine:
    if config.engine == "warp" or (config.engine == "fusion" and not config.weights and not DEFAULT_WEIGHTS.is_file()):
        return WarpEngine(config, build_redrawer(config), name=config.engine)
    runtime = GeneratorRuntime(resolve_weights(config))
    if runtime.variant == "region":
        raise MissingWeights(f"{runtime.path} is a {runtime.config.get('region')} region generator, not a whole-face one",
                             f"pass it as --{runtime.config.get('region')}-weights")
    if runtime.variant == "kshot":
        return KShotEngine(config, runtime) if config.engine == "gan" else KShotFusionEngine(config, runtime)
    return GanEngine(config, runtime) if config.engine == "gan" else FusionEngine(config, runtime)
