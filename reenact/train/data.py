"""Training samples from a prepared cache: boundary resampling, same-identity pairs, augmentation.

A sample is (reference, pose guide, target) where the generator must turn the reference's
appearance into the target given the target's parsing map (the pose guide):

* "resample" (the thesis): target landmarks = the reference's with the face contour (FACE_OVAL)
  replaced by another random sample's contour — fitted onto the reference by a 3-D similarity on
  the rigid inner points (eye corners, nose), so only the contour's *shape* transfers — and the
  contour displacement spread smoothly to nearby cheek points (a Gaussian interpolation on the
  canonical face, as `reenact.motion` spreads expression displacements); eyes, brows, irises, nose
  and lips keep their places. The target image is the reference warped onto those landmarks with
  the classical landmark warp (`reenact.warp`).
* "identity": reference and target are two photos of the same person; backgrounds differ, so
  the losses are masked to the target's head region.
* "mixed": each sample picks one of the two (identity only where the person has ≥ 2 photos).

Augmentation: horizontal flips (landmarks re-indexed with `geometry.mirror_points`), mild
similarity jitter (scale, shift) and colour jitter (brightness, contrast, saturation; the same
draw for reference and target, so the target stays reachable).

Every sample's randomness comes from `numpy.random.default_rng([seed, 1, key])` where `key` is the
sample's global position in the stream (`StepBatchSampler`), so a run resumed at step t sees the
very batches an uninterrupted run would have seen, with any number of workers.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from reenact import geometry as g
from reenact import parsing, warp
from reenact.auxnets.sface import five_points_from_mesh
from reenact.train.cache import FaceCache
from reenact.train.config import DataConfig

# Rigid points that are not on the contour: the fit that carries another face's contour over.
INNER_RIGID = tuple(i for i in g.RIGID if i not in set(g.FACE_OVAL))
# Points that must not move when the contour changes.
PROTECTED = frozenset(g.RIGHT_EYE + g.LEFT_EYE + g.RIGHT_IRIS + g.LEFT_IRIS + g.RIGHT_BROW + g.LEFT_BROW
                      + g.NOSE + g.LIPS_OUTER + g.LIPS_INNER + INNER_RIGID)
CONTOUR_SIGMA = 0.15  # canonical units (outer eye corners 1 apart)


@functools.lru_cache(maxsize=1)
def contour_spread() -> np.ndarray:
    """(478, 36) weights spreading FACE_OVAL displacements over the face (oval rows one-hot,
    protected inner features zero, others a normalised Gaussian of canonical distance)."""
    canon = g.canonical().points[:, :2]
    oval = list(g.FACE_OVAL)
    d2 = ((canon[:, None, :] - canon[None, oval, :]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * CONTOUR_SIGMA ** 2))
    w = k / k.sum(1, keepdims=True) * k.max(1, keepdims=True)
    w[list(PROTECTED)] = 0.0
    for j, m in enumerate(oval):
        w[m] = 0.0
        w[m, j] = 1.0
    return w


def resample_boundary(ref: np.ndarray, other: np.ndarray) -> np.ndarray:
    """(478, 3) target landmarks: `ref` with `other`'s face contour (see module doc). Both in
    the same crop frame; the result is float64."""
    ref, other = np.asarray(ref, np.float64), np.asarray(other, np.float64)
    idx, oval = list(INNER_RIGID), list(g.FACE_OVAL)
    fit = g.fit_similarity(other[idx], ref[idx])
    delta = fit.apply(other[oval]) - ref[oval]  # 36×3
    return ref + contour_spread() @ delta


def flip(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an S×S×3 crop and its landmarks."""
    return np.ascontiguousarray(image[:, ::-1]), g.mirror_points(points, image.shape[1])


def jitter_geometry(image: np.ndarray, points: np.ndarray, rng: np.random.Generator,
                    amount: float) -> tuple[np.ndarray, np.ndarray]:
    """Random scale (1 ± amount) about the centre and shift (± amount/2 of the side)."""
    if amount <= 0:
        return image, points
    size = image.shape[0]
    s = 1.0 + rng.uniform(-amount, amount)
    t = rng.uniform(-amount / 2, amount / 2, 2) * size
    c = (size - 1) / 2
    m = np.array([[s, 0, c - s * c + t[0]], [0, s, c - s * c + t[1]]])
    out = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    pts = np.asarray(points, np.float64).copy()
    pts[:, :2] = pts[:, :2] * s + m[:, 2]
    pts[:, 2] *= s
    return out, pts


def colour_params(rng: np.random.Generator, amount: float) -> np.ndarray:
    """(brightness, contrast, saturation) offsets in ±amount."""
    return rng.uniform(-amount, amount, 3) if amount > 0 else np.zeros(3)


def apply_colour(image: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Brightness/contrast/saturation jitter of an RGB uint8 image."""
    if not np.any(params):
        return image
    x = image.astype(np.float32) / 255.0
    grey = x.mean(2, keepdims=True)
    x = grey + (x - grey) * (1 + params[2])  # saturation
    x = (x - x.mean()) * (1 + params[1]) + x.mean() + params[0]  # contrast, brightness
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def to_tensor_image(image: np.ndarray) -> np.ndarray:
    """S×S×3 uint8 → 3×S×S float32 in [-1, 1]."""
    return image.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0


class ReenactDataset(Dataset):
    """Samples for `Generator` training. Items are (index, key) pairs from `StepBatchSampler`.

    Each sample is a dict of float32 arrays: reference, target (3×S×S in [-1, 1]), parsing
    (12×S×S, the target's pose guide), mask (1×S×S, the target's head region), masked (scalar:
    1 where losses must be masked, i.e. identity pairs), ref_five, target_five (5×2 SFace points)
    and, with `grid=True`, grid (S×S×2: where each target pixel samples the reference).
    """

    def __init__(self, cache: FaceCache, config: DataConfig, *, seed: int, grid: bool = False) -> None:
        self.cache, self.config, self.seed, self.grid = cache, config, seed, grid
        groups: dict[int, list[int]] = defaultdict(list)
        for i, ident in enumerate(cache.identity.tolist()):
            if ident >= 0:
                groups[ident].append(i)
        self.partners = {i: members for members in groups.values() if len(members) > 1 for i in members}
        if config.pairing == "identity" and not self.partners:
            raise ValueError("pairing = \"identity\" needs an identity file with ≥ 2 photos per person")
        if len(cache) < 2:
            raise ValueError("the cache needs at least 2 faces")

    def __len__(self) -> int:
        return len(self.cache)

    def _load(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image, points = self.cache.image(i), self.cache.points(i).astype(np.float64)
        if rng.random() < self.config.flip:
            image, points = flip(image, points)
        return jitter_geometry(image, points, rng, self.config.scale)

    def _pairing(self, i: int, rng: np.random.Generator) -> str:
        mode = self.config.pairing
        if mode == "mixed":
            mode = "identity" if rng.random() < 0.5 else "resample"
        return mode if (mode == "resample" or i in self.partners) else "resample"

    def __getitem__(self, item: tuple[int, int]) -> dict[str, np.ndarray]:
        i, key = item
        rng = np.random.default_rng([self.seed, 1, key])
        mode = self._pairing(i, rng)
        colour = colour_params(rng, self.config.colour)
        ref_img, ref_pts = self._load(i, rng)
        ref_img = apply_colour(ref_img, colour)
        source = warp.prepare_source(ref_img, ref_pts)
        if mode == "resample":
            other = int(rng.integers(len(self.cache) - 1))
            other += other >= i
            tgt_pts = resample_boundary(ref_pts, self.cache.points(other))
            map_x, map_y = warp.backward_map(source, tgt_pts)
            tgt_img = cv2.remap(ref_img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        else:
            partners = [j for j in self.partners[i] if j != i]
            tgt_img, tgt_pts = self._load(partners[int(rng.integers(len(partners)))], rng)
            tgt_img = apply_colour(tgt_img, colour)
            map_x = map_y = None
        return self._assemble(ref_img, ref_pts, tgt_img, tgt_pts, source, (map_x, map_y), mode != "resample")

    def _assemble(self, ref_img, ref_pts, tgt_img, tgt_pts, source, maps, masked: bool) -> dict[str, np.ndarray]:
        size = ref_img.shape[0]
        sample = {
            "reference": to_tensor_image(ref_img), "target": to_tensor_image(tgt_img),
            "parsing": parsing.parsing_map(tgt_pts, size),
            "mask": warp.head_mask(tgt_pts, size)[None].astype(np.float32),
            "masked": np.float32(masked),
            "ref_five": five_points_from_mesh(ref_pts), "target_five": five_points_from_mesh(tgt_pts),
        }
        if self.grid:
            if maps[0] is None:
                maps = warp.backward_map(source, tgt_pts)
            sample["grid"] = warp.normalised_grid(*maps)
        return sample


class StepBatchSampler(Sampler):
    """Infinite batches of (index, key) pairs, a pure function of (seed, step, rank).

    Global sample position p = (step·world + rank)·batch + j; epoch e = p // n uses the
    permutation `default_rng([seed, 0, e])`; key = p seeds that sample's augmentation. Starting at
    `start_step` reproduces an uninterrupted run exactly; ranks see disjoint samples.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, start_step: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        self.n, self.batch, self.seed = n, batch_size, seed
        self.start, self.rank, self.world = start_step, rank, world
        self._perm: tuple[int, np.ndarray] | None = None

    def _index(self, p: int) -> int:
        epoch = p // self.n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 0, epoch]).permutation(self.n))
        return int(self._perm[1][p % self.n])

    def batch_at(self, step: int) -> list[tuple[int, int]]:
        first = (step * self.world + self.rank) * self.batch
        return [(self._index(p), p) for p in range(first, first + self.batch)]

    def __iter__(self):
        step = self.start
        while True:
            yield self.batch_at(step)
            step += 1


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack a list of samples into a batch of tensors."""
    return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}
