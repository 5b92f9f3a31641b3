"""Render every pair of a protocol with every engine and measure each output.

Outputs go through the real pipeline (`pipeline.Reenactor`: retarget → engine → paste-back), as
full frames in the reference's framing. The `reference` baseline outputs the reference photo
itself. Engines that cannot be built (no trained weights) are reported, not fatal.

Each output is measured against its pair (see `metrics` for the definitions): landmarks are found
on the output with the image-mode landmarker; an output without a face counts against the
detection rate and gets no landmark-based metric (pose, expression, identity, pixel metrics).

With `EvalSettings.ks` (`reenact eval --k`) every pair is rendered once per k and mode from the
reference's bank of photos (`kshot`): records then carry `k`, `multi` and `served`.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol as TypingProtocol

import numpy as np

from reenact.auxnets.sface import SAME_PERSON_THRESHOLD
from reenact import warp
from reenact.config import ENGINES, InferenceConfig
from reenact.engines import Engine, build_engine
from reenact.errors import MissingWeights, ReenactError, UsageError
from reenact.evaluate import kshot, sheet
from reenact.evaluate import metrics as M
from reenact.expression import expression_descriptor
from reenact.evaluate.pictures import Pictures, read_items
from reenact.evaluate.protocols import Item, Pair, Protocol
from reenact.landmarks import Face, Landmarker
from reenact.pipeline import Reenactor, Reference, StageTimer

REFERENCE_ENGINE = "reference"
DRIVER_MOUTH = "driver-mouth"  # the classical baseline: warp + the driver's own mouth (--mouth driver)
ENGINE_CHOICES = (REFERENCE_ENGINE, *ENGINES, DRIVER_MOUTH)
OPEN_MOUTH = 0.02  # driver mouth opening (face scales²) above which its mouth crop counts as open (KID)
MOUTH_NEW = 0.25  # share of the driver's mouth opening the reference does not show: the "mouth opens" subset
SHEET_ROWS = 12  # pairs in the mouth-crop sheet

Progress = Callable[[str, int, "int | None"], None]
Render = Callable[[Face], "tuple[np.ndarray, int | None]"]  # driver → (output, served reference)


class ImageSink(TypingProtocol):
    def save(self, name: str, rgb: np.ndarray) -> str:
        """Store a picture under the relative `name`; returns the relative path to link to."""
        ...


@dataclass(frozen=True)
class EvalSettings:
    """What to measure. `size`: the engines' crop side and the aligned-crop side for pixel
    metrics; `threshold`: SFace cosine above which two faces are the same person; `thumb`: side
    of the report's thumbnails; `ks`: numbers of references per identity to compare (k-shot,
    `kshot.parse_ks`; empty = one reference, the ordinary evaluation)."""

    engines: tuple[str, ...] = ENGINE_CHOICES
    size: int = 256
    identity: bool = True
    lpips: bool = True
    fid: bool = True
    threshold: float = SAME_PERSON_THRESHOLD
    thumb: int = 128
    weights: str | None = None  # exported generator for gan/fusion (None: the bundled default)
    mouth_weights: str | None = None  # exported region generators for fusion (None: the bundled ones)
    eyes_weights: str | None = None
    ks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.ks and (1 not in self.ks or list(self.ks) != sorted(set(self.ks))):
            raise UsageError(f"k values {self.ks} must be ascending, distinct and include 1")
        bad = [e for e in self.engines if e not in ENGINE_CHOICES]
        if bad or not self.engines:
            raise UsageError(f"unknown engine(s) {', '.join(bad) or '(none given)'}",
                             f"choose from {', '.join(ENGINE_CHOICES)}")
        InferenceConfig(size=self.size)  # validates the size


@dataclass
class Record:
    """Measurements of one output. `status` is "ok" or why there is no output; None = not
    measured (no face on the output, or the metric does not apply / is switched off).
    k-shot runs: `k` references, used as `multi` ("single", "select", "fuse"); `served`: index
    of the reference that rendered it (0 = the primary; None = fused or not a k-shot run)."""

    engine: str
    pair: int
    reference: str
    driver: str
    kind: str
    ground_truth: bool
    sequence: str | None
    order: int
    status: str = "ok"
    k: int | None = None
    multi: str | None = None
    served: int | None = None
    mouth_opens: bool | None = None  # the driver opens the mouth ≥ MOUTH_NEW wider than the reference
    detected: bool | None = None
    identity: float | None = None
    identity_truth: float | None = None  # output ↔ driver photo, ground-truth pairs only
    pose_error: list[float] | None = None  # |Δyaw|, |Δpitch|, |Δroll| in degrees
    expression: list[float] | None = None  # output descriptor (expression.COMPONENTS)
    expression_driver: list[float] | None = None
    expression_error: float | None = None
    pixel: dict[str, float] = field(default_factory=dict)
    image: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def variant(self) -> kshot.Variant:
        return kshot.Variant(self.engine, self.k, self.multi)


@dataclass
class EvalResult:
    """Everything the report needs. `engines`: name → "ok" or "unavailable: …"; k-shot runs:
    `variants`, the outputs per pair with their status (`kshot.plan`), and `banks`, the reference
    photos used per primary reference (label → labels; `Record.served` indexes them)."""

    protocol: Protocol
    settings: EvalSettings
    engines: dict[str, str]
    records: list[Record]
    sequences: list[dict]
    fid: dict[str, M.FidResult]
    sheets: dict[str, np.ndarray]
    thumbs: dict[str, str]
    seconds: dict[str, float]
    variants: list[tuple[kshot.Variant, str]] = field(default_factory=list)
    banks: dict[str, list[str]] = field(default_factory=dict)
    mouth_kid: dict[str, dict] = field(default_factory=dict)  # engine → value (KID ×1000), n_outputs, n_real


def engine_config(name: str, settings: EvalSettings) -> InferenceConfig:
    """The inference config of an evaluated engine name (the driver-mouth baseline is the warp
    engine with `--mouth driver`; the whole-face and region weights only apply to gan/fusion)."""
    if name == DRIVER_MOUTH:
        return InferenceConfig(engine="warp", size=settings.size, mouth="driver")
    if name not in ("gan", "fusion"):
        return InferenceConfig(engine=name, size=settings.size)
    return InferenceConfig(engine=name, size=settings.size, weights=settings.weights,
                           mouth_weights=settings.mouth_weights, eyes_weights=settings.eyes_weights)


def build(name: str, settings: EvalSettings) -> tuple[Engine | None, str]:
    """(engine, "ok"), or (None, "unavailable: …") when its weights are missing."""
    if name == REFERENCE_ENGINE:
        return None, "ok"
    try:
        return build_engine(engine_config(name, settings)), "ok"
    except MissingWeights as e:
        # The user named weights this engine uses (gan: the whole-face model only): they must work.
        named = settings.weights or (name == "fusion" and (settings.mouth_weights or settings.eyes_weights))
        if named and name in ("gan", "fusion"):
            raise
        return None, f"unavailable: no weights ({e.message})"


class Evaluation:
    """One evaluation run (use `run`). Keeps the landmarker, loaded pictures and caches."""

    def __init__(self, protocol: Protocol, settings: EvalSettings, *, sink: ImageSink | None = None,
                 progress: Progress | None = None, landmarker: Landmarker | None = None) -> None:
        self.protocol, self.settings = protocol, settings
        self._landmarker = landmarker  # injected (tests); else an image-mode one per run
        self.sink, self.progress = sink, progress or (lambda *a: None)
        self.timer = StageTimer()
        self.identity = M.IdentityScorer() if settings.identity else None
        self.lpips = M.LPIPSMetric() if settings.lpips else None
        self._embeddings: dict[Item, np.ndarray] = {}
        self._banks: dict[str, M.FeatureBank] = {}
        self._truth_regions: dict[int, dict[str, np.ndarray]] = {}  # pair → truth's region crops
        self._out_regions: dict[tuple, dict[str, np.ndarray]] = {}  # (pair, variant) → output's
        self._mouth_banks: dict[str, M.FeatureBank] = {}  # engine → open-mouth output crops
        self._mouth_real, self._real_mouths = M.FeatureBank(), set()
        self._sheet: dict[int, dict[str, np.ndarray]] = {}
        self._used: dict[str, list[str]] = {}  # k-shot: reference photos used per primary

    def run(self) -> EvalResult:
        t0 = time.perf_counter()
        self._fetch_aux()
        with contextlib.ExitStack() as stack:
            lm = self._landmarker or stack.enter_context(Landmarker(mode="image"))
            self.lm, self.pics = lm, Pictures(lm)
            statuses, engines = {}, {}
            for name in self.settings.engines:  # before the pictures: bad --weights fail at once
                engine, statuses[name] = build(name, self.settings)
                if statuses[name] == "ok":
                    engines[name] = engine
            items = list(dict.fromkeys(self.protocol.references() + self.protocol.drivers()))
            with self.timer("load"):
                self.pics.load(items, lambda n: self.progress("loading pictures", n, len(items)))
            thumbs = self._input_thumbs(items)
            variants = [vs for n in statuses for vs in kshot.plan(n, engines.get(n), statuses[n], self.settings.ks)]
            records = self._evaluate(engines, [v for v, status in variants if status == "ok"])
            sheets = {n: g for n, e in engines.items() if (g := self._grid(n, e)) is not None}
        fid = self._fid() if self.settings.fid else {}
        mouth_kid = self._mouth_kid() if self.settings.fid else {}
        if self._sheet:
            columns = [("reference", "reference"), *((e, e) for e in engines if e != REFERENCE_ENGINE),
                       ("driver", "driver = truth" if self.protocol.pairs[0].ground_truth else "driver")]
            sheets["mouths"] = sheet.crop_rows([r for _, r in sorted(self._sheet.items())], columns)
        seconds = dict(self.timer.seconds, total=time.perf_counter() - t0)
        return EvalResult(self.protocol, self.settings, statuses, records, sequences(records), fid,
                          sheets, thumbs, seconds, variants if self.settings.ks else [], self._used, mouth_kid)

    def _mouth_kid(self) -> dict[str, dict]:
        """KID (×1000) of each engine's open-mouth output crops against the drivers' real ones."""
        real = self._mouth_real.features()
        out = {}
        for engine, bank in self._mouth_banks.items():
            feats = bank.features()
            if len(feats) >= 2 and len(real) >= 2:
                out[engine] = {"value": 1000 * M.kid(feats, real), "n_outputs": len(feats), "n_real": len(real)}
        return out

    def _fetch_aux(self) -> None:
        """Obtain the auxiliary networks the chosen metrics need before any work is done, so an
        offline machine fails at once (MissingWeights) instead of after the rendering."""
        from reenact.auxnets.fetch import fetch

        wanted = {"sface": (self.settings.identity, "--no-identity"),
                  "lpips-vgg16": (self.settings.lpips, "--no-lpips"),
                  "fid-inception": (self.settings.fid, "--no-fid")}
        for name, (needed, switch) in wanted.items():
            try:
                if needed:
                    fetch(name)
            except MissingWeights as e:
                e.hint = f"{e.hint}; or leave this metric out ({switch})" if e.hint else f"or use {switch}"
                raise

    # --- rendering --------------------------------------------------------------------------

    def _renderers(self, engines: dict[str, Engine | None], ref_item: Item) -> dict[str, Render] | None:
        """Per engine, driver face → (output frame, None) for one reference (None: no face in
        it). The reference baseline returns the reference photo itself."""
        image, face = self.pics.image(ref_item), self.pics.face(ref_item)
        if face is None:
            return None
        ref = Reference(image, face, 1, ref_item.label)
        out: dict[str, Render] = {}
        for name, engine in engines.items():
            if engine is None:
                out[name] = lambda driver, driver_image=None, im=image: (im, None)
            else:
                cfg = engine_config(name, self.settings)
                r = Reenactor(ref, cfg, engine=engine, timer=self.timer)
                out[name] = lambda driver, image=None, r=r: (r.render(driver, image), None)
        return out

    def _bank_renderers(self, engines: dict[str, Engine | None], variants: list[kshot.Variant],
                        ref_item: Item) -> dict[kshot.Variant, Render] | None:
        """k-shot runs: per variant, driver face → (output, served) for one reference's bank of
        photos (the first max k with a face; None when the primary has none)."""
        if self.pics.face(ref_item) is None:
            return None
        bank = [Reference(self.pics.image(it), f, 1, it.label) for it in self.protocol.bank(ref_item)
                if (f := self.pics.face(it)) is not None][:max(self.settings.ks)]
        self._used[ref_item.label] = [r.name for r in bank]
        out: dict[kshot.Variant, Render] = {}
        for name, engine in engines.items():
            cfg = None if engine is None else engine_config(name, self.settings)
            out |= kshot.renderers(bank, engine, cfg, [v for v in variants if v.engine == name], self.timer)
        return out

    def _render(self, name: str, render: Render, driver: Face,
                driver_image: np.ndarray | None = None) -> tuple[np.ndarray | None, str, int | None]:
        """(output, status, served index). `driver_image`: the driver photo (one-shot runs: the
        driver-mouth baseline needs it)."""
        try:
            with self.timer(f"render:{name}"):
                image, served = render(driver) if driver_image is None else render(driver, driver_image)
        except ReenactError as e:  # an engine's user-facing failure on this pair: recorded, not fatal
            return None, f"error: {e.message}", None
        return image, "ok", served

    def _evaluate(self, engines: dict[str, Engine | None], variants: list[kshot.Variant]) -> list[Record]:
        """All pairs × variants, reference by reference (each engine prepares a reference once)."""
        by_ref: dict[Item, list[tuple[int, Pair]]] = defaultdict(list)
        for i, p in enumerate(self.protocol.pairs):
            by_ref[p.reference].append((i, p))
        records: list[Record] = []
        total = len(self.protocol.pairs) * len(variants)
        for ref_item, group in by_ref.items():
            if not engines:
                renders = {}
            elif self.settings.ks:
                renders = self._bank_renderers(engines, variants, ref_item)
            else:
                renders = self._renderers(engines, ref_item)
                renders = renders and {kshot.Variant(n): r for n, r in renders.items()}
            for i, p in group:
                records += self._evaluate_pair(i, p, variants, renders)
                self.progress("evaluating", len(records), total)
        return records

    def _evaluate_pair(self, i: int, p: Pair, variants: list[kshot.Variant], renders: dict | None) -> list[Record]:
        """One record per variant (engine; k-shot runs: engine × k × mode) for pair `i`; LPIPS of
        all outputs against the ground truth in one batch (the truth's features once)."""
        driver = self.pics.face(p.driver)
        status = "no face in the reference" if renders is None else "ok" if driver else "no face in the driver"
        ref = self.pics.face(p.reference)
        opens = None if ref is None or driver is None else \
            warp.new_mouth_opening(ref.points, driver.points) >= MOUTH_NEW
        recs, crops = [], []
        for v in variants:
            rec = Record(v.engine, i, p.reference.label, p.driver.label, p.kind, p.ground_truth,
                         p.sequence, p.order, status=status, k=v.k, multi=v.multi, mouth_opens=opens)
            out = None
            if status == "ok":
                image = None if self.settings.ks else self.pics.image(p.driver)
                out, rec.status, rec.served = self._render(v.engine, renders[v], driver, image)
            if out is not None:
                with self.timer("measure:landmarks"):
                    faces = self.lm.detect(out)
                pts = faces[0].points if faces else None
                if (aligned := self._measure(rec, out, pts, p)) is not None:
                    crops.append((rec, aligned))
                if v.one_shot and pts is not None:
                    self._mouths(i, p, v.engine, out, pts)
                if self.settings.fid and v.one_shot:
                    with self.timer("fid"):
                        self._banks.setdefault(v.engine, M.FeatureBank()).add(out)
                rec.image = self._save(f"out/{v.folder}/{i:05d}.jpg", out, self._box(p.reference, out))
            recs.append(rec)
        if self.lpips is not None and crops:
            with self.timer("measure:lpips"):
                dists = self.lpips.against(crops[0][1].truth, [a.output for _, a in crops])
                for (rec, _), d in zip(crops, dists, strict=True):
                    rec.pixel["lpips"] = d
                self._region_lpips(i, [rec for rec, _ in crops])
        return recs

    def _region_lpips(self, i: int, recs: list[Record]) -> None:
        """LPIPS of the mouth crop and of the eye crops (mean of both) against the truth's."""
        truth = self._truth_regions.get(i)
        outs = [(rec, self._out_regions.pop((i, rec.engine, rec.k, rec.multi), None)) for rec in recs]
        outs = [(rec, o) for rec, o in outs if o is not None]
        if truth is None or not outs:
            return
        for key, parts in (("mouth_lpips", ("mouth",)), ("eyes_lpips", ("eye_right", "eye_left"))):
            per_part = [self.lpips.against(truth[part], [o[part] for _, o in outs]) for part in parts]
            for j, (rec, _) in enumerate(outs):
                rec.pixel[key] = float(np.mean([d[j] for d in per_part]))

    # --- measuring --------------------------------------------------------------------------

    def _measure(self, rec: Record, out: np.ndarray, pts: np.ndarray | None, pair: Pair) -> M.AlignedPair | None:
        """Landmark metrics and pixel metrics (LPIPS aside) of one output with its landmarks `pts`
        (None: no face found on it); returns the aligned output/truth crops of a ground-truth pair
        whose output has a face."""
        rec.detected = pts is not None
        if pts is None:
            return None
        drv = self.pics.face(pair.driver).points
        rec.pose_error = [float(v) for v in M.pose_error(pts, drv)]
        d_out, d_drv = expression_descriptor(pts), expression_descriptor(drv)
        rec.expression, rec.expression_driver = d_out.tolist(), d_drv.tolist()
        rec.expression_error = M.expression_error(d_out, d_drv)
        if self.identity is not None:
            with self.timer("measure:identity"):
                emb = self.identity.embed(out, pts)
                rec.identity = M.identity_similarity(emb, self._embedding(pair.reference))
                if pair.ground_truth and self.pics.face(pair.driver) is not None:
                    rec.identity_truth = M.identity_similarity(emb, self._embedding(pair.driver))
        if not pair.ground_truth:
            return None
        with self.timer("measure:pixels"):
            aligned = M.aligned_pair(out, pts, self.pics.image(pair.driver), drv, self.settings.size)
            rec.pixel = M.pixel_metrics(aligned)
            truth = self._truth_regions.setdefault(rec.pair, M.region_crops(self.pics.image(pair.driver), drv))
            mine = M.region_crops(out, pts)
            rec.pixel.update(M.region_metrics(mine, truth))
            self._out_regions[(rec.pair, rec.engine, rec.k, rec.multi)] = mine
        return aligned

    def _mouths(self, i: int, pair: Pair, engine: str, out: np.ndarray, pts: np.ndarray) -> None:
        """Mouth crops of outputs (landmarks `pts`) whose driver's mouth is open: the KID banks (and
        the real open-mouth crops of those drivers) and the first SHEET_ROWS pairs' sheet row."""
        from reenact import regions

        drv = self.pics.face(pair.driver)
        if regions.mouth_opening(drv.points) < OPEN_MOUTH:
            return
        crop = M.region_crops(out, pts)["mouth"]
        if self.settings.fid:
            with self.timer("kid"):
                self._mouth_banks.setdefault(engine, M.FeatureBank()).add(crop)
                if pair.driver not in self._real_mouths:
                    self._real_mouths.add(pair.driver)
                    self._mouth_real.add(M.region_crops(self.pics.image(pair.driver), drv.points)["mouth"])
        if i in self._sheet or len(self._sheet) < SHEET_ROWS:
            row = self._sheet.setdefault(i, {})
            if not row:
                ref = self.pics.face(pair.reference)
                row["reference"] = M.region_crops(self.pics.image(pair.reference), ref.points)["mouth"]
                row["driver"] = M.region_crops(self.pics.image(pair.driver), drv.points)["mouth"]
            row[engine] = crop

    def _embedding(self, item: Item) -> np.ndarray:
        if item not in self._embeddings:
            self._embeddings[item] = self.identity.embed(self.pics.image(item), self.pics.face(item).points)
        return self._embeddings[item]

    def _fid(self) -> dict[str, M.FidResult]:
        """FID of each engine's outputs against the protocol's real photos (whose features are
        cached on disk: they are the same for every run of a protocol)."""
        banks = {k: b for k, b in self._banks.items() if len(b) >= 2}
        if not banks or len(self.protocol.real) < 2:
            return {}
        with self.timer("fid"):
            feats = M.cached_features(self.protocol.real, self._real_features)
            return {k: M.fid_from_features(b.features(), feats) for k, b in banks.items()}

    def _real_features(self) -> np.ndarray:
        real = M.FeatureBank()
        for n, (_, rgb) in enumerate(read_items(self.protocol.real), 1):
            if rgb is not None:
                real.add(rgb)
            self.progress("FID real photos", n, len(self.protocol.real))
        return real.features()

    # --- pictures ---------------------------------------------------------------------------

    def _box(self, item: Item, image: np.ndarray) -> tuple[float, float, float]:
        face = self.pics.face(item)
        return sheet.face_box(None if face is None else face.points, image.shape)

    def _save(self, name: str, image: np.ndarray | None, box) -> str | None:
        if self.sink is None or image is None:
            return None
        return self.sink.save(name, sheet.thumbnail(image, box, self.settings.thumb))

    def _input_thumbs(self, items: list[Item]) -> dict[str, str]:
        out = {}
        for n, it in enumerate(dict.fromkeys(items)):
            img = self.pics.image(it)
            path = self._save(f"in/{n:05d}.jpg", img, self._box(it, img)) if img is not None else None
            if path:
                out[it.key] = path
        return out

    def _grid(self, name: str, engine: Engine | None) -> np.ndarray | None:
        """Contact sheet of the protocol's grid for one engine (None for the reference baseline)."""
        refs, drvs = list(self.protocol.grid_references), list(self.protocol.grid_drivers)
        if engine is None or not refs or not drvs:
            return None
        tile = lambda it, img: sheet.thumbnail(img, self._box(it, img), self.settings.thumb)  # noqa: E731
        cells = {}
        for c, ref in enumerate(refs):
            renders = self._renderers({name: engine}, ref)
            for r, drv in enumerate(drvs):
                face = self.pics.face(drv)
                out = self._render(name, renders[name], face)[0] if renders and face else None
                if out is not None:
                    cells[(r, c)] = tile(ref, out)
        blank = np.zeros((self.settings.thumb,) * 2 + (3,), np.uint8)
        img = lambda it: tile(it, self.pics.image(it)) if self.pics.image(it) is not None else blank  # noqa: E731
        return sheet.contact_sheet([img(r) for r in refs], [img(d) for d in drvs], cells,
                                   ref_labels=[r.label for r in refs], drv_labels=[d.label for d in drvs],
                                   title=f"{self.protocol.name}: engine {name}")


def sequences(records: list[Record]) -> list[dict]:
    """Expression correlation per (engine, sequence) over the one-shot outputs with a detected face."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        if r.sequence is not None and r.detected and r.variant.one_shot:
            groups[(r.engine, r.sequence)].append(r)
    out = []
    for (engine, seq), recs in groups.items():
        recs.sort(key=lambda r: r.order)
        mean_r, per = M.sequence_correlation(np.array([r.expression for r in recs]),
                                             np.array([r.expression_driver for r in recs]))
        out.append(dict(engine=engine, sequence=seq, kind=recs[0].kind, n=len(recs),
                        expr_corr=mean_r, per_component=per))
    return out


def run(protocol: Protocol, settings: EvalSettings, *, sink: ImageSink | None = None,
        progress: Progress | None = None, landmarker: Landmarker | None = None) -> EvalResult:
    """Evaluate `protocol` (see module docstring). `landmarker`: anything with `detect(rgb) ->
    [Face]` (default: an image-mode `Landmarker`). Raises MissingWeights when a metric's
    auxiliary network cannot be obtained (offline and not cached)."""
    return Evaluation(protocol, settings, sink=sink, progress=progress, landmarker=landmarker).run()
