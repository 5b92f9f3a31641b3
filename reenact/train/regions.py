"""Training pairs for the region generators: what the warp lacks, with the truth beside it.

From a prepared face cache (`reenact.train.cache`, train split only) a *region pack* is built once:

* **round trip** (every photo whose mouth / eyes are open): the photo's landmarks are edited to
  close the mouth (or the lids) by a random amount (`reenact.regions.close_mouth/close_eyes`), the
  photo is warped onto them — that is the reference — and the reference is warped back with the
  tool's own warp. The input then carries the warp's real artefact (the dark cavity, the stretched
  lid) and the untouched photo is the ground truth.
* **same person** (a share `identity_pairs` of those photos): the reference is another photo of
  the person, warped onto the photo's landmarks (light and make-up differ: the harder case).
* **same video** (optional, every open-mouth / open-lid frame of a video cache built by
  `cache.prepare_video_cache`): the reference is another frame of the same talking-face video
  (same person, light and camera; video blur and compression), warped onto the frame's landmarks.
  Video frames also give round-trip pairs.

Each pair also carries what the consistency losses need: the reference's own parsing map
(self-consistency: the reference driven by its own pose returns itself) and a third pose C (the
target's mouth/lids closed by another amount) with the warp of the reference to C and the
backward map from C to the target B (triple consistency: A → B → C equals A → C).

A pack is a folder: meta.json + pairs.npz (uint8 images N×S×S×3 and parsing maps N×12×S×S,
float16 grids N×S×S×2, uint8 masks N×S×S). Eyes give two samples per photo (the left eye is
mirrored). `RegionDataset` serves them with horizontal flips (mouth) and colour jitter.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from reenact import __version__, parsing, regions, warp
from reenact import geometry as g
from reenact.errors import OutputError, UsageError
from reenact.train.cache import FaceCache
from reenact.train.data import apply_colour, colour_params, to_tensor_image

FORMAT = "reenact-region-pack"
FORMAT_VERSION = 1
MIN_MOUTH_OPENING = 0.01  # face scales²: below this a mouth counts as closed
MIN_EYE_OPENING = 0.12  # eye widths
CLOSE_RANGE = (0.5, 1.0)  # how much of the opening the reference closes (round trip)
THIRD_RANGE = (0.2, 0.9)  # the third pose's closing (triple consistency)
IMAGE_KEYS = ("reference", "warped", "target", "warped_c")
PARSING_KEYS = ("parsing", "ref_parsing", "parsing_c")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PairSpec:
    region: str
    size: int

    def opened(self, points: np.ndarray) -> bool:
        if self.region == "mouth":
            return regions.mouth_opening(points) > MIN_MOUTH_OPENING
        return min(regions.eye_opening(points, s) for s in ("right", "left")) > MIN_EYE_OPENING

    def close(self, points: np.ndarray, amount: float) -> np.ndarray:
        return (regions.close_mouth if self.region == "mouth" else regions.close_eyes)(points, amount)

    def mask(self, region_points: np.ndarray) -> np.ndarray:
        return (regions.mouth_training_mask if self.region == "mouth" else regions.eye_mask)(region_points, self.size)


def _region_grid(box: regions.RegionBox, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """A face-crop backward map → the same map between two crops of `box`, as a grid_sample grid
    (size×size×2 in [-1, 1], align_corners=False)."""
    mx, my = box.extract(map_x), box.extract(map_y)
    m = box.matrix
    u = mx * m[0, 0] + my * m[0, 1] + m[0, 2]
    v = mx * m[1, 0] + my * m[1, 1] + m[1, 2]
    return warp.normalised_grid(u.astype(np.float32), v.astype(np.float32))


def make_pairs(spec: PairSpec, image: np.ndarray, points: np.ndarray, ref_image: np.ndarray,
               ref_points: np.ndarray, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Region samples (one for the mouth, two for the eyes) where `ref_image`/`ref_points` (a face
    crop and its landmarks) must be turned into the face crop `image` with `points`."""
    ref_src = warp.prepare_source(ref_image, ref_points)
    warped, _ = warp.warp(ref_src, points)
    third = spec.close(points, float(rng.uniform(*THIRD_RANGE)))
    warped_c, _ = warp.warp(ref_src, third)
    map_x, map_y = warp.backward_map(warp.prepare_source(image, points), third)  # C → B
    scale, ref_scale = g.face_scale(points), g.face_scale(ref_points)
    out = []
    for box, ref_box in zip(regions.boxes(spec.region, points, spec.size, scale),
                            regions.boxes(spec.region, ref_points, spec.size, ref_scale)):
        tp, rp, cp = box.points(points), ref_box.points(ref_points), box.points(third)
        out.append({
            "reference": ref_box.extract(ref_image), "warped": box.extract(warped), "target": box.extract(image),
            "warped_c": box.extract(warped_c),
            "parsing": parsing.parsing_map(tp, spec.size), "ref_parsing": parsing.parsing_map(rp, spec.size),
            "parsing_c": parsing.parsing_map(cp, spec.size),
            "mask": spec.mask(tp), "mask_c": spec.mask(cp), "grid_c": _region_grid(box, map_x, map_y),
        })
    return out


def round_trip(spec: PairSpec, image: np.ndarray, points: np.ndarray, amount: float) -> tuple[np.ndarray, np.ndarray]:
    """The reference of a round-trip pair: `image` warped onto its landmarks with the mouth (lids)
    closed by `amount` → (reference face crop, its landmarks)."""
    closed = spec.close(points, amount)
    ref_image, _ = warp.warp(warp.prepare_source(image, points), closed)
    return ref_image, closed


ROUND_TRIP, SAME_PERSON, SAME_VIDEO = 0, 1, 2  # pair kinds
KIND_NAMES = {ROUND_TRIP: "round_trip", SAME_PERSON: "same_person", SAME_VIDEO: "same_video"}
MIN_VIDEO_GAP = 5  # same-video references are at least this many cached frames away from the target


def _photo_pairs(cache: FaceCache, i: int, spec: PairSpec, partners: dict[int, list[int]],
                 identity_pairs: float, seed: int, other_kind: int) -> list[tuple[int, dict]]:
    rng = np.random.default_rng([seed, i] if other_kind == SAME_PERSON else [seed, other_kind, i])
    image, points = cache.image(i), cache.points(i).astype(np.float64)
    if not spec.opened(points):
        return []
    ref_image, ref_points = round_trip(spec, image, points, float(rng.uniform(*CLOSE_RANGE)))
    samples = [(ROUND_TRIP, s) for s in make_pairs(spec, image, points, ref_image, ref_points, rng)]
    gap = MIN_VIDEO_GAP if other_kind == SAME_VIDEO else 1
    others = [j for j in partners.get(int(cache.identity[i]), []) if abs(j - i) >= gap]
    if others and rng.random() < identity_pairs:
        j = others[int(rng.integers(len(others)))]
        samples += [(other_kind, s) for s in make_pairs(spec, image, points, cache.image(j),
                                                         cache.points(j).astype(np.float64), rng)]
    return samples


def _to_storage(key: str, value: np.ndarray) -> np.ndarray:
    if key in PARSING_KEYS or key in ("mask", "mask_c"):
        return np.round(np.clip(value, 0, 1) * 255).astype(np.uint8)
    if key == "grid_c":
        return value.astype(np.float16)
    return value


VIDEO_IDENTITY_OFFSET = 10_000_000  # pack identities of video caches (one per video) start here


def build_pack(cache_dir: str | os.PathLike, out_dir: str | os.PathLike, *, region: str, size: int,
               identity_pairs: float = 0.3, seed: int = 0, limit: int | None = None, allow_test: bool = False,
               video_cache: str | os.PathLike | None = None, progress: Progress | None = None) -> Path:
    """Build a region pack from a prepared face cache (see module doc) and, optionally, a video
    cache (`cache.prepare_video_cache`), whose open-mouth (open-lid) frames each give a round-trip
    pair and a same-video pair. `allow_test`: a cache of the test split is accepted (validation
    pairs, never trained on). Raises OutputError when `out_dir` exists, UsageError when no photo
    has the region open."""
    out = Path(out_dir)
    if out.exists():
        raise OutputError(f"{out} already exists", "delete it to build the region pack again")
    spec, t0 = PairSpec(region, size), time.perf_counter()
    sources = [(FaceCache(cache_dir), identity_pairs, SAME_PERSON, 0)]
    if video_cache:
        sources.append((FaceCache(video_cache), 1.0, SAME_VIDEO, VIDEO_IDENTITY_OFFSET))
    if sources[0][0].meta.get("split") == "test" and not allow_test:
        raise UsageError("refusing to build training pairs from the test split")
    columns: dict[str, list[np.ndarray]] = defaultdict(list)
    counts = [len(c) if limit is None else min(limit, len(c)) for c, *_ in sources]
    done, total = 0, sum(counts)
    for (cache, share, other_kind, id_offset), n in zip(sources, counts):
        partners: dict[int, list[int]] = defaultdict(list)
        for j, ident in enumerate(cache.identity.tolist()):
            if ident >= 0:
                partners[ident].append(j)
        for i in range(n):
            for kind, sample in _photo_pairs(cache, i, spec, partners, share, seed, other_kind):
                for k, v in sample.items():
                    columns[k].append(_to_storage(k, v))
                columns["kind"].append(np.int8(kind))
                columns["identity"].append(np.int64(cache.identity[i] + id_offset))
            done += 1
            if progress:
                progress(done, total)
    if not columns:
        raise UsageError(f"no face in {cache_dir} has its {region} open: nothing to learn from")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        np.savez_compressed(tmp / "pairs.npz", **{k: np.stack(v) for k, v in columns.items()})
        kinds = np.array(columns["kind"])
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "region": region, "size": size, "count": len(kinds),
                **{name: int((kinds == k).sum()) for k, name in KIND_NAMES.items()},
                "photos": counts[0], "cache": str(cache_dir), "split": sources[0][0].meta.get("split"),
                "video_frames": counts[1] if video_cache else 0, "video_cache": str(video_cache or ""),
                "seed": seed, "identity_pairs": identity_pairs, "seconds": round(time.perf_counter() - t0, 1),
                "reenact_version": __version__}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class RegionPack:
    """A built region pack in memory (arrays as stored)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise UsageError(f"{self.path} is not a region pack (no meta.json)",
                             "build it with `reenact train` (data.region_pack and data.cache in the config)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT or self.meta.get("version") != FORMAT_VERSION:
            raise UsageError(f"{self.path} has an unknown region pack format", "build it again")
        with np.load(self.path / "pairs.npz", allow_pickle=False) as z:
            self.arrays = {k: z[k] for k in z.files}
        self.size, self.region = int(self.meta["size"]), self.meta["region"]

    def __len__(self) -> int:
        return len(self.arrays["kind"])


def _mirrored_channel(name: str) -> str:
    side = {"r": "l", "l": "r"}
    stem, _, suffix = name.rpartition("_")
    return f"{stem}_{side[suffix]}" if suffix in side else name


_SWAP = [parsing.INDEX[_mirrored_channel(n)] for n in parsing.CHANNELS]


def _flip(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mirror a sample left-right: images, masks, parsing maps (r/l channels swapped), the grid."""
    out = {}
    for k, v in sample.items():
        if k in PARSING_KEYS:
            out[k] = np.ascontiguousarray(v[_SWAP, :, ::-1])
        elif k == "grid_c":
            grid = np.ascontiguousarray(v[:, ::-1])
            grid[..., 0] *= -1
            out[k] = grid
        elif v.ndim >= 2:
            out[k] = np.ascontiguousarray(v[:, ::-1])
        else:
            out[k] = v
    return out


class RegionDataset(Dataset):
    """Samples of a region pack for `RegionGenerator` training; items are (index, key) pairs from
    `StepBatchSampler` (the key seeds the sample's augmentation, as in `ReenactDataset`).

    A sample: reference, warped, target, warped_c (3×S×S in [-1, 1]); parsing, ref_parsing,
    parsing_c (12×S×S in [0, 1]); mask, mask_c (1×S×S loss weights: the blend region, with a floor
    of `MASK_FLOOR` elsewhere); masked = 1; grid_c (S×S×2). `blend` (the model's): "opening" uses
    the pack's masks, "area" the whole mouth area of the parsing maps (`regions.mouth_area_mask`)."""

    MASK_FLOOR = 0.1

    def __init__(self, pack: RegionPack, *, flip: float, colour: float, seed: int, blend: str = "opening") -> None:
        if len(pack) < 2:
            raise UsageError("the region pack needs at least 2 samples")
        self.pack, self.flip, self.colour, self.seed, self.blend = pack, flip, colour, seed, blend
        self.identity = pack.arrays["identity"]

    def __len__(self) -> int:
        return len(self.pack)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, np.ndarray]:
        i, key = item[0], item[1]
        rng = np.random.default_rng([self.seed, 1, key])
        a = self.pack.arrays
        raw = {k: a[k][i] for k in (*IMAGE_KEYS, *PARSING_KEYS, "mask", "mask_c", "grid_c")}
        if self.pack.region == "mouth" and rng.random() < self.flip:  # eyes are all right-eye shaped
            raw = _flip(raw)
        jitter = colour_params(rng, self.colour)
        sample = {k: to_tensor_image(apply_colour(raw[k], jitter)) for k in IMAGE_KEYS}
        sample.update({k: raw[k].astype(np.float32) / 255.0 for k in PARSING_KEYS})
        for k, parsing_key in (("mask", "parsing"), ("mask_c", "parsing_c")):
            mask = (regions.mouth_area_mask(sample[parsing_key]) if self.blend == "area"
                    else raw[k].astype(np.float32) / 255.0)
            sample[k] = (self.MASK_FLOOR + (1 - self.MASK_FLOOR) * mask)[None]
        sample["grid_c"] = raw["grid_c"].astype(np.float32)
        sample["masked"] = np.float32(1.0)
        return sample
