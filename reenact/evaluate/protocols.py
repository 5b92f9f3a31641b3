"""What to evaluate: (reference, driver) pairs, the real photos for FID, and a contact-sheet grid.

A `Protocol` is plain data, deterministic for a given seed, and knows nothing about engines.

* `celeba_id`: the test identities of `../shared/data/celeba-id`. Per identity one reference photo,
  `same` other photos of the same person as drivers (ground truth: the driver photo itself) and
  `cross` photos of other test identities as drivers. FID reals: test photos that are not
  references. With `references=k` (`reenact eval --k`) each identity has a bank of photos: the
  same primary reference and drivers as with one, then k − 1 further photos of the person (never
  a driver) and up to `spares` more, which replace a reference in which no face is found.
* `clips`: self-reenactment on same-speaker VoxCeleb2 clips (`../shared/data/clips/pcavs-vox2`).
  Per clip one source frame; drivers are `frames` later frames of the same clip at `stride`, and
  `frames` frames at `stride` of every *other* clip of the same speaker. Every driver frame is the
  ground truth; each (source, driver clip) run is a sequence for the expression correlation.
  FID reals: frames of all clips at `real_stride`, other than the source frames.
* `folders`: any references × drivers (images; videos sampled at a stride, one sequence per
  video), with same-identity pairs from a CSV. FID reals: all the input images.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from reenact import media
from reenact.errors import MediaError, UsageError, from_os_error

SPLIT_TEST = "test"


@dataclass(frozen=True)
class Item:
    """One picture: an image file (`frame` None) or frame `frame` (0-based) of a video file."""

    path: str
    frame: int | None = None
    identity: str | None = None
    name: str | None = None  # display label (default: the file name, "@frame" for video frames)

    @property
    def key(self) -> str:
        return self.path if self.frame is None else f"{self.path}#{self.frame}"

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        name = Path(self.path).name
        return name if self.frame is None else f"{name}@{self.frame}"


@dataclass(frozen=True)
class Pair:
    """Render `reference` with `driver`'s pose and expression.

    kind: the subset it is reported in ("same-identity", "cross-identity", "same-clip", ...).
    ground_truth: the driver shows the reference's person, so it is the expected output
        (self-reenactment pixel metrics apply).
    sequence: pairs sharing it form an ordered sequence (by `order`) for the correlation metric.
    """

    reference: Item
    driver: Item
    kind: str
    ground_truth: bool
    sequence: str | None = None
    order: int = 0


@dataclass(frozen=True)
class Protocol:
    """Pairs to render, real photos for FID, and the contact-sheet grid (rows × columns).

    `banks`: several photos of one person per reference (primary reference's key → its photos,
    the primary first, in the order to use them; an evaluation with k references uses the first
    k in which a face is found), for k-shot evaluation; a reference without a bank has just
    itself (`bank`)."""

    name: str
    description: str
    pairs: tuple[Pair, ...]
    real: tuple[Item, ...]
    grid_references: tuple[Item, ...] = ()
    grid_drivers: tuple[Item, ...] = ()
    params: dict = field(default_factory=dict)
    banks: dict[str, tuple[Item, ...]] = field(default_factory=dict)

    def bank(self, reference: Item) -> tuple[Item, ...]:
        """Every reference photo of `reference`'s person, the primary (`reference`) first."""
        return self.banks.get(reference.key, (reference,))

    def references(self) -> list[Item]:
        """Distinct references (bank photos included) in first-use order."""
        primary = [p.reference for p in self.pairs] + list(self.grid_references)
        return list(dict.fromkeys(it for r in primary for it in self.bank(r)))

    def drivers(self) -> list[Item]:
        return list(dict.fromkeys([p.driver for p in self.pairs] + list(self.grid_drivers)))


def limit(protocol: Protocol, n: int | None, seed: int = 0) -> Protocol:
    """At most `n` pairs, a seeded random subset kept in protocol order (None/0 = all)."""
    if not n or n >= len(protocol.pairs):
        return protocol
    keep = np.sort(np.random.default_rng(seed).choice(len(protocol.pairs), n, replace=False))
    params = dict(protocol.params, limit=n)
    return replace(protocol, pairs=tuple(protocol.pairs[i] for i in keep), params=params)


# --- celeba-id ----------------------------------------------------------------------------------

def _test_identities(root: Path) -> dict[str, list[str]]:
    table = root / "identities.csv"
    if not table.is_file():
        raise MediaError(f"{table} not found", "point --data at the folder holding celeba-id/")
    people: dict[str, list[str]] = defaultdict(list)
    with open(table, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["split"] == SPLIT_TEST:
                people[row["identity"]].append(row["file"])
    return {k: sorted(v) for k, v in sorted(people.items(), key=lambda kv: int(kv[0]))}


def celeba_id(root: str | Path, *, seed: int = 0, same: int = 2, cross: int = 2,
              n_real: int = 300, grid: int = 5, references: int = 1, spares: int = 2) -> Protocol:
    """Cross- and same-identity pairs over the celeba-id test identities (see module docstring).
    `references`: photos per identity's bank (k-shot), plus up to `spares` more; the pairs,
    primary references and random draws are the same for every value. UsageError when a person
    has fewer than `same` + `references` photos."""
    root = Path(root)
    people = _test_identities(root)
    ids = list(people)
    if references > 1:
        _enough(people, same + references)
    rng = np.random.default_rng(seed)
    item = lambda pid, f: Item(str(root / "images" / f), identity=pid)  # noqa: E731
    pairs: list[Pair] = []
    refs: dict[str, Item] = {}
    banks: dict[str, tuple[Item, ...]] = {}
    for pid in ids:
        photos = list(rng.permutation(people[pid]))
        refs[pid] = ref = item(pid, photos[0])
        pairs += [Pair(ref, item(pid, f), "same-identity", True) for f in photos[1:1 + same]]
        if references > 1:  # further photos after the drivers: never a driver
            banks[ref.key] = (ref, *(item(pid, f) for f in photos[1 + same:same + references + spares]))
        others = rng.choice([o for o in ids if o != pid], size=min(cross, len(ids) - 1), replace=False)
        pairs += [Pair(ref, item(o, str(rng.choice(people[o]))), "cross-identity", False) for o in others]
    used = {r.path for bank in banks.values() for r in bank} | {r.path for r in refs.values()}
    pool = [item(pid, f) for pid in ids for f in people[pid] if item(pid, f).path not in used]
    real = [pool[i] for i in np.sort(rng.choice(len(pool), min(n_real, len(pool)), replace=False))]
    g_ids = ids[:grid]
    g_drv = [item(o, people[o][-1]) for o in ids[grid:2 * grid]]
    n_refs = "1 reference" if references == 1 else f"{references} reference photos (the first is the primary)"
    return Protocol(
        name="celeba-id",
        description=(f"celeba-id test split: {len(ids)} identities, {n_refs} each, {same} "
                     f"same-identity and {cross} cross-identity driver photos per reference (seed {seed})"),
        pairs=tuple(pairs), real=tuple(real), grid_references=tuple(refs[i] for i in g_ids),
        grid_drivers=tuple(g_drv),
        params=dict(root=str(root), seed=seed, same=same, cross=cross, n_real=n_real,
                    **({"references": references, "spares": spares} if references > 1 else {})),
        banks=banks)


def _enough(people: dict[str, list[str]], need: int) -> None:
    short = {pid: len(photos) for pid, photos in people.items() if len(photos) < need}
    if short:
        pid, n = next(iter(short.items()))
        raise UsageError(f"{len(short)} test identities have fewer than {need} photos (identity {pid}: {n})",
                         "ask for fewer references (--k)")


# --- clips --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clip:
    """A talking-face clip: a video file or a folder of frame images. `speaker` groups clips of
    one person (VoxCeleb ids: the first 4 digits of a 9-digit name)."""

    name: str
    speaker: str
    frames: int
    video: str | None = None
    images: tuple[str, ...] = ()

    def item(self, i: int) -> Item:
        if self.video is not None:
            return Item(self.video, frame=i, identity=self.speaker, name=f"{self.name}@{i}")
        return Item(self.images[i], identity=self.speaker, name=f"{self.name}@{i}")


def _speaker(name: str) -> str:
    return name[:4] if re.fullmatch(r"\d{9}", name) else name


def find_clips(root: str | Path, *, min_frames: int = 2) -> list[Clip]:
    """Videos and frame folders (≥ `min_frames` images) under `root`, sorted by name."""
    clips = []
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and p.suffix.lower() in media.VIDEO_SUFFIXES:
            n = media.probe_video(p).n_frames or 0
            clips.append(Clip(p.stem, _speaker(p.stem), max(0, n - 2), video=str(p)))  # n is an estimate
        elif p.is_dir():
            frames = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in media.IMAGE_SUFFIXES)
            if len(frames) >= min_frames:
                clips.append(Clip(p.name, _speaker(p.name), len(frames), images=tuple(frames)))
    return [c for c in clips if c.frames >= min_frames]


def _run(clip: Clip, start: int, stride: int, count: int) -> list[Item]:
    return [clip.item(i) for i in range(start, clip.frames, stride)][:count]


def clips(root: str | Path, *, seed: int = 0, frames: int = 8, stride: int = 10,
          real_stride: int = 8, n_real: int = 300, grid: int = 5) -> Protocol:
    """Same-clip and cross-clip self-reenactment over the same-speaker clips (module docstring)."""
    found = find_clips(root, min_frames=frames + 1)
    rng = np.random.default_rng(seed)
    pairs: list[Pair] = []
    sources: dict[str, Item] = {}
    for clip in found:
        step = max(1, min(stride, (clip.frames - 1) // frames))
        start = int(rng.integers(0, clip.frames - step * frames))
        sources[clip.name] = src = clip.item(start)
        runs = [("same-clip", clip, start + step, step)]
        runs += [("cross-clip", o, int(rng.integers(0, max(1, o.frames - stride * frames))), stride)
                 for o in found if o.speaker == clip.speaker and o.name != clip.name]
        for kind, drv_clip, first, st in runs:
            seq = f"{clip.name}<-{drv_clip.name}"
            pairs += [Pair(src, d, kind, True, seq, k) for k, d in enumerate(_run(drv_clip, first, st, frames))]
    used = {s.key for s in sources.values()}
    pool = [it for c in found for it in _run(c, 0, real_stride, c.frames) if it.key not in used]
    real = [pool[i] for i in np.sort(rng.choice(len(pool), min(n_real, len(pool)), replace=False))]
    g_clips = found[:grid]
    return Protocol(
        name="clips",
        description=(f"self-reenactment on {len(found)} clips of {len({c.speaker for c in found})} speakers "
                     f"under {root}: 1 source frame per clip, {frames} driver frames at stride {stride} "
                     f"from the same clip and from each other clip of the same speaker (seed {seed})"),
        pairs=tuple(pairs), real=tuple(real),
        grid_references=tuple(sources[c.name] for c in g_clips),
        grid_drivers=tuple(c.item(c.frames // 2) for c in found[-grid:]),
        params=dict(root=str(root), seed=seed, frames=frames, stride=stride, real_stride=real_stride,
                    n_real=n_real, clips=[c.name for c in found]))


# --- folders ------------------------------------------------------------------------------------

def _expand(paths: list[str | Path]) -> list[Path]:
    """Files as given; folders → their image and video files, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file()
                          and f.suffix.lower() in media.IMAGE_SUFFIXES | media.VIDEO_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise MediaError(f"{p} does not exist")
    return out


def _items(path: Path, stride: int, max_frames: int) -> list[Item]:
    if media.media_kind(path) == "image":
        return [Item(str(path))]
    n = media.probe_video(path).n_frames or 1
    return [Item(str(path), frame=i) for i in range(0, max(1, n - 2), stride)][:max_frames]


def read_same_identity(path: str | Path) -> set[tuple[str, str]] | dict[str, str]:
    """A same-identity CSV: columns `reference,driver` (listed pairs show one person; names are
    file names or paths) or `file,identity` (same identity ⇔ same label). Returns the set of
    (reference, driver) names or the {file name: identity} map."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise from_os_error(e, "input") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise MediaError(f"{path} is not a readable CSV file ({e})", "give a UTF-8 CSV with a header row") from None
    cols = set(rows[0]) if rows else set()
    if {"reference", "driver"} <= cols:
        return {(Path(r["reference"] or "").name, Path(r["driver"] or "").name) for r in rows}
    if {"file", "identity"} <= cols:
        return {Path(r["file"] or "").name: r["identity"] for r in rows}
    raise UsageError(f"{path}: expected columns reference,driver or file,identity, found {sorted(cols)}")


def _same(table, ref: Item, drv: Item) -> bool:
    a, b = Path(ref.path).name, Path(drv.path).name
    if isinstance(table, set):
        return (a, b) in table
    return a in table and table.get(a) == table.get(b)


def folders(refs: list[str | Path], drivers: list[str | Path], *, pairs_csv: str | Path | None = None,
            stride: int = 10, max_frames: int = 30, grid: int = 6) -> Protocol:
    """Every reference × every driver item (videos: frames at `stride`, at most `max_frames`)."""
    ref_items = [_items(p, 1, 1)[0] for p in _expand(refs)]
    drv_items = [it for p in _expand(drivers) for it in _items(p, stride, max_frames)]
    if not ref_items or not drv_items:
        raise UsageError("no references or no drivers found", "give image files or folders holding them")
    table = read_same_identity(pairs_csv) if pairs_csv else set()
    pairs = []
    for r in ref_items:
        for d in drv_items:
            same = _same(table, r, d) or r.key == d.key
            seq = d.path if d.frame is not None else None
            pairs.append(Pair(r, d, "same-identity" if same else "cross-identity", same, seq and f"{r.path}<-{seq}",
                              d.frame or 0))
    stills = list(dict.fromkeys(ref_items + drv_items))
    return Protocol(name="folders", description=f"{len(ref_items)} references × {len(drv_items)} driver images/frames",
                    pairs=tuple(pairs), real=tuple(stills), grid_references=tuple(ref_items[:grid]),
                    grid_drivers=tuple(drv_items[:grid]),
                    params=dict(refs=[str(p) for p in refs], drivers=[str(p) for p in drivers],
                                pairs_csv=str(pairs_csv) if pairs_csv else None, stride=stride,
                                max_frames=max_frames))
