"""k reference photos per identity (`reenact eval --k 1,3,5`): which outputs to render, and how.

Per engine and k, the outputs ("variants") are:

    single  k = 1: the one-shot baseline (the primary reference alone)
    select  k > 1: each pair rendered from the reference nearest in head pose and expression to
            the retargeted driver (`Reenactor(multi="select")`); the output is still pasted into
            the primary's frame
    fuse    k > 1: a k-shot generator fuses all k references (`Reenactor(multi="fuse")`); only
            engines with `bank` (a k-shot model): otherwise the row says "not available"

The `reference` baseline outputs the primary photo (single) or the selected photo itself
(select): how close the nearest photo alone already is to the driver.

Pairs are unrelated photos, so every pair's selection starts afresh (no hysteresis carried from
the previous pair). Each reference is prepared once per engine; every k reuses those states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from reenact import motion
from reenact import references as refs
from reenact.config import InferenceConfig
from reenact.engines import Engine
from reenact.errors import NoFaceFound, UsageError
from reenact.landmarks import Face
from reenact.pipeline import Reenactor, Reference, StageTimer

MODES = ("single", "select", "fuse")
NO_FUSION = "not available: fusion needs a k-shot model (--weights of a kshot export)"

# driver face → (output frame, index of the reference that rendered it; None when fused)
KRender = Callable[[Face], tuple[np.ndarray, "int | None"]]


@dataclass(frozen=True)
class Variant:
    """One output per pair: an engine and, in a k-shot evaluation, how many references it gets
    and how it uses them (`multi`: one of `MODES`); k None = an ordinary one-reference run."""

    engine: str
    k: int | None = None
    multi: str | None = None

    @property
    def label(self) -> str:
        return self.engine if self.k is None else f"{self.engine} k={self.k} {self.multi}"

    @property
    def folder(self) -> str:
        """File-name-safe label (thumbnail folders)."""
        return self.engine if self.k is None else f"{self.engine}-k{self.k}-{self.multi}"

    @property
    def one_shot(self) -> bool:
        """The output of an ordinary evaluation (what the summary table and FID use)."""
        return self.k is None or self.k == 1


def parse_ks(text: str) -> tuple[int, ...]:
    """"1,3,5" → (1, 3, 5): sorted, without duplicates, 1 (the one-shot baseline) always in."""
    try:
        ks = {int(v) for v in text.split(",") if v.strip()}
    except ValueError:
        raise UsageError(f"--k {text!r} is not a list of numbers", "e.g. --k 1,3,5") from None
    if not ks or min(ks) < 1:
        raise UsageError(f"--k {text!r}: give numbers of references ≥ 1", "e.g. --k 1,3,5")
    return tuple(sorted(ks | {1}))


def plan(engine_name: str, engine: Engine | None, status: str, ks: tuple[int, ...]) -> list[tuple[Variant, str]]:
    """Every variant of one engine with its status: "ok", the engine's own status when it cannot
    be built, or why fusion is not available. `engine` None with status "ok" is the reference
    baseline (single and select; fusing photos is no baseline). Without `ks`: the ordinary
    one-reference variant."""
    if not ks:
        return [(Variant(engine_name), status)]
    out = [(Variant(engine_name, 1, "single"), status)]
    if status != "ok":
        return out
    out += [(Variant(engine_name, k, "select"), "ok") for k in ks[1:]]
    if engine is None:
        return out
    fuse = "ok" if hasattr(engine, "bank") else NO_FUSION
    return out + [(Variant(engine_name, k, "fuse"), fuse) for k in ks[1:]]


def renderers(references: list[Reference], engine: Engine | None, config: InferenceConfig | None,
              variants: list[Variant], timer: StageTimer | None = None) -> dict[Variant, KRender]:
    """Render functions of one identity for `variants` (all of one engine; status "ok").

    `references`: the identity's photos with a face, the primary first. Each is prepared once
    (the largest k's Reenactor); a variant asking for more references than there are raises
    NoFaceFound when rendering (recorded as that pair's status, not fatal). `engine` None: the
    reference baseline (outputs the primary photo, or the selected one)."""
    if engine is None:
        return {v: _photo(references, v.k or 1) for v in variants}
    timer = timer or StageTimer()
    need = min(len(references), max(v.k or 1 for v in variants))
    full = Reenactor(references[:need], config, engine=engine, timer=timer, multi="select")
    return {v: _renderer(full, v) for v in variants}


def _renderer(full: Reenactor, v: Variant) -> KRender:
    k = v.k or 1

    def render(driver: Face) -> tuple[np.ndarray, int | None]:
        if k > len(full.references):
            raise NoFaceFound(f"only {len(full.references)} of the identity's reference photos have a face; k = {k}")
        r = Reenactor(full.references[:k], full.config, engine=full.engine, timer=full.timer,
                      retarget=full.retarget, multi="fuse" if v.multi == "fuse" else "select",
                      states=full.states[:k])  # a new Reenactor per pair: a fresh selection
        out = r.render(driver)
        return out, served(r)

    return render


def _photo(references: list[Reference], k: int) -> KRender:
    """The reference baseline: the photo that selection among the first k would render from
    (the same choice as `Reenactor` makes for a fresh pair: the nearest to the retargeted driver)."""
    retarget = motion.Retargeter(references[0].face.points)
    candidates = [refs.candidate(r.face.points) for r in references[:k]]

    def render(driver: Face) -> tuple[np.ndarray, int | None]:
        if k > len(references):
            raise NoFaceFound(f"only {len(references)} of the identity's reference photos have a face; k = {k}")
        j = 0 if k == 1 else refs.nearest(candidates, refs.candidate(retarget(driver.points)))
        return references[j].image, j

    return render


def served(r: Reenactor) -> int | None:
    """Index of the reference that rendered `r`'s last frame (0 = the primary; None = fused)."""
    if r.mode == "fuse":
        return None
    if r.mode == "single":
        return 0
    return r.selector.current or 0
