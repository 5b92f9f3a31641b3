"""Prepared cache, boundary resampling, samples and the step sampler (reenact.train.cache/data)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reenact import geometry as g
from reenact.errors import OutputError
from reenact.train.cache import CacheWriter, FaceCache, prepare_cache
from reenact.train.config import DataConfig
from reenact.train.data import PROTECTED, ReenactDataset, StepBatchSampler, collate, flip, resample_boundary
from tests.gen_helpers import synthetic_cache, synthetic_face


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> FaceCache:
    return synthetic_cache(tmp_path_factory.mktemp("gen-data") / "cache", n=6, size=64)


def test_cache_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    faces = [synthetic_face(64, rng) for _ in range(5)]
    writer = CacheWriter(tmp_path / "c", size=64, quality=95, shard_mib=3000 / 2**20)  # tiny shards
    for i, (img, pts) in enumerate(faces):
        writer.add(f"f{i}.png", 10 + i, img, pts)
    writer.finish({"source": "test"})
    c = FaceCache(tmp_path / "c")
    assert len(c) == 5 and c.meta["shards"] > 1 and c.meta["source"] == "test"
    for i, (img, pts) in enumerate(faces):
        assert np.array_equal(c.image(i), _jpeg(img, 95))  # exactly the JPEG of the crop
        assert np.abs(c.points(i) - pts).max() <= 1 / 64 + 1e-4  # 1/32-px fixed point
        assert c.identity[i] == 10 + i
    with pytest.raises(OutputError):
        CacheWriter(tmp_path / "c", size=64)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def test_prepare_cache_on_real_photos(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "celeba-id"
    summary = prepare_cache(src / "images", tmp_path / "c", identities=src / "identities.csv", split="train",
                            size=128, limit=4)
    c = FaceCache(tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert summary.count == len(c) == meta["count"] and summary.count + meta["no_face"] == 4
    with open(src / "identities.csv") as fh:
        train = {r["file"]: int(r["identity"]) for r in csv.DictReader(fh) if r["split"] == "train"}
    for i in range(len(c)):
        assert c.identity[i] == train[c.names[i]]
        eyes = c.points(i)[[33, 263], :2]
        assert 0.25 * 128 < np.linalg.norm(eyes[0] - eyes[1]) < 0.4 * 128  # aligned like inference crops


def test_resample_boundary_moves_the_contour_only() -> None:
    rng = np.random.default_rng(3)
    (_, ref), (_, other) = synthetic_face(256, rng), synthetic_face(256, rng)
    out = resample_boundary(ref, other)
    oval = list(g.FACE_OVAL)
    protected = sorted(PROTECTED)
    assert np.array_equal(out[protected], ref[protected])
    moved = np.linalg.norm(out[oval, :2] - ref[oval, :2], axis=1)
    assert moved.mean() > 1.0  # another person's contour
    cheeks = [i for i in range(468) if i not in PROTECTED and i not in oval]
    cheek_moved = np.linalg.norm(out[cheeks, :2] - ref[cheeks, :2], axis=1)
    assert 0 < cheek_moved.mean() < moved.mean()  # spread, attenuated
    assert np.allclose(resample_boundary(ref, ref), ref, atol=1e-6)  # own contour: no change


def test_flip_twice_is_identity() -> None:
    img, pts = synthetic_face(64, np.random.default_rng(0))
    img2, pts2 = flip(*flip(img, pts))
    assert np.array_equal(img2, img) and np.allclose(pts2, pts)


def test_samples_are_deterministic_and_well_formed(cache: FaceCache) -> None:
    ds = ReenactDataset(cache, DataConfig(pairing="resample"), seed=0, grid=True)
    a, b, c = ds[(1, 7)], ds[(1, 7)], ds[(1, 8)]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["reference"], c["reference"])
    assert a["reference"].shape == a["target"].shape == (3, 64, 64) and a["parsing"].shape == (12, 64, 64)
    assert a["grid"].shape == (64, 64, 2) and a["masked"] == 0 and a["ref_five"].shape == (5, 2)
    assert -1 <= a["reference"].min() and a["reference"].max() <= 1
    # The grid is the warp that made the target: sampling the reference with it reproduces the target.
    batch = collate([a])
    resampled = F.grid_sample(batch["reference"], batch["grid"], align_corners=False, padding_mode="border")
    assert (resampled - batch["target"]).abs().mean() < 0.02


def test_identity_pairs_are_masked(cache: FaceCache) -> None:
    ds = ReenactDataset(cache, DataConfig(pairing="identity", flip=0, scale=0, colour=0), seed=0)
    s = ds[(0, 0)]
    assert s["masked"] == 1 and 0 < s["mask"].mean() < 1
    assert not np.allclose(s["reference"], s["target"])  # another photo of identity 0
    mixed = ReenactDataset(cache, DataConfig(pairing="mixed"), seed=0)
    assert {float(mixed[(0, k)]["masked"]) for k in range(12)} == {0.0, 1.0}


def test_step_sampler_resumes_and_splits_ranks() -> None:
    s = StepBatchSampler(10, 3, seed=5)
    it = iter(s)
    first = [next(it) for _ in range(5)]
    assert [s.batch_at(k) for k in range(5)] == first
    assert next(iter(StepBatchSampler(10, 3, seed=5, start_step=3))) == first[3]
    r0, r1 = (StepBatchSampler(10, 2, seed=5, rank=r, world=2).batch_at(0) for r in (0, 1))
    assert not {k for _, k in r0} & {k for _, k in r1}
    epoch = [i for k in range(5) for i, _ in s.batch_at(k)][:10]
    assert sorted(epoch) == list(range(10))  # each epoch is a permutation


def test_test_split_is_refused() -> None:
    from reenact.errors import UsageError

    with pytest.raises(UsageError, match="test split"):
        DataConfig(split="test")


def test_collate_stacks_tensors(cache: FaceCache) -> None:
    ds = ReenactDataset(cache, DataConfig(), seed=0)
    batch = collate([ds[(i, i)] for i in range(2)])
    assert batch["reference"].shape == (2, 3, 64, 64) and batch["masked"].dtype == torch.float32
