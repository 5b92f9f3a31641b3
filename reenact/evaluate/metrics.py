"""Evaluation metrics: identity, head pose, expression, self-reenactment pixel metrics, FID.

Every function works on one output (or one sequence) and returns plain floats, so the runner can
store per-output records and aggregate them later. Conventions:

* images are RGB uint8 H×W×3; landmarks (478, 3) face-mesh points of the image they belong to;
* identity: SFace cosine of the two faces, each aligned to the 112×112 template by its *own*
  five landmark points (`sface.align_112`); "same person" when the cosine exceeds
  `sface.SAME_PERSON_THRESHOLD` (0.363, OpenCV's threshold for this model);
* pose error: |Δyaw|, |Δpitch|, |Δroll| in degrees between two landmark sets (differences of
  poses, so the canonical face's absolute pitch bias cancels);
* expression error: mean |Δ| over the components of `expression.expression_descriptor`
  (units: outer-eye-corner distance); correlation variant: Pearson r over a sequence;
* pixel metrics (self-reenactment): output and ground truth are each aligned by their own
  landmarks (`align.align(points, size)`), then compared crop to crop; L1 = mean |Δ| of RGB in
  [0, 1], PSNR in dB with peak 1, SSIM on BT.601 luminance (Gaussian window 11, σ = 1.5,
  K1 = 0.01, K2 = 0.03, L = 255, averaged over the window-valid interior), LPIPS (VGG, v0.1,
  whole crop). `_face` variants restrict L1/PSNR/SSIM to the ground truth's parsing face mask
  (mask-weighted means);
* FID (this Inception: the TF-2015 FID Inception-v3 port, see `auxnets.inception`), on whole
  output frames versus a set of real photos.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np

from reenact import align, geometry, parsing
from reenact.auxnets.fetch import REGISTRY, cache_root
from reenact import expression

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
FID_RELIABLE_N = 100  # below this many images per set, an FID is flagged unreliable


# --- identity -----------------------------------------------------------------------------------

class IdentityScorer:
    """SFace embeddings of faces aligned by their own landmarks (the network loads on first use;
    `MissingWeights` when it is neither cached nor downloadable)."""

    def __init__(self, *, threads: int = 0) -> None:
        self._threads = threads
        self._model = None

    def embed(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(128,) L2-normalised embedding of the face with landmarks `points` in `image`."""
        from reenact.auxnets import sface

        if self._model is None:
            self._model = sface.SFaceONNX(device="auto", threads=self._threads)
        aligned = sface.align_112(image, sface.five_points_from_mesh(np.asarray(points)[:, :2]))
        return self._model.embed(aligned)[0]


def identity_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two SFace embeddings (1 = identical, > 0.363 = same person)."""
    from reenact.auxnets import sface

    return float(sface.cosine(a, b))


# --- pose and expression ------------------------------------------------------------------------

def _wrap(deg: np.ndarray) -> np.ndarray:
    return (np.asarray(deg) + 180.0) % 360.0 - 180.0


def pose_error(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(3,) |Δyaw|, |Δpitch|, |Δroll| in degrees between two (478, 3) landmark sets."""
    d = geometry.head_pose(points).as_array() - geometry.head_pose(target).as_array()
    return np.abs(_wrap(d))


def expression_error(descriptor: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute difference of two expression descriptors (eye-span units)."""
    return float(np.mean(np.abs(np.asarray(descriptor) - np.asarray(target))))


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two 1-D series; None when either is (numerically) constant or
    shorter than 3 samples (r is undefined there)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or len(a) != len(b):
        return None
    a, b = a - a.mean(), b - b.mean()
    na, nb = np.sqrt((a * a).sum()), np.sqrt((b * b).sum())
    if na < 1e-9 or nb < 1e-9:
        return None
    return float(np.clip((a * b).sum() / (na * nb), -1.0, 1.0))


def sequence_correlation(outputs: np.ndarray, drivers: np.ndarray) -> tuple[float | None, dict]:
    """Expression correlation over a sequence.

    Args:
        outputs, drivers: (T, 6) expression descriptors of the output and driver frames, in order.
    Returns:
        (mean r over the components where r is defined, or None; {component: r | None}).
    """
    per = {name: pearson(outputs[:, i], drivers[:, i]) for i, name in enumerate(expression.COMPONENTS)}
    defined = [r for r in per.values() if r is not None]
    return (float(np.mean(defined)) if defined else None), per


# --- pixel metrics (self-reenactment) -----------------------------------------------------------

def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma Y of RGB uint8 → float64 in 0..255."""
    x = np.asarray(rgb, np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def _weighted_mean(values: np.ndarray, mask: np.ndarray | None) -> float:
    if mask is None:
        return float(values.mean())
    w = np.broadcast_to(mask.reshape(mask.shape + (1,) * (values.ndim - mask.ndim)), values.shape)
    total = float(w.sum())
    if total <= 0:
        raise ValueError("empty mask")
    return float((values * w).sum() / total)


def l1(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute RGB difference in [0, 1] (mask: H×W weights in [0, 1])."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)) / 255.0
    return _weighted_mean(d, mask)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of RGB images scaled to [0, 1] (peak 1); capped at 100 dB for identical images."""
    mse = _weighted_mean(((a.astype(np.float64) - b.astype(np.float64)) / 255.0) ** 2, mask)
    return 100.0 if mse <= 1e-10 else float(10.0 * np.log10(1.0 / mse))


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map (Wang et al. 2004) of the luminance of two same-size RGB uint8 images.

    Gaussian window 11×11, σ = 1.5, C1 = (0.01·255)², C2 = (0.03·255)², population statistics.
    The map has the input's size (reflected borders); `ssim` averages its valid interior.
    """
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs same-size images, got {a.shape} and {b.shape}")
    x, y = luminance(a), luminance(b)
    c1, c2 = (SSIM_K1 * 255) ** 2, (SSIM_K2 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM over the window-valid interior (a 5-pixel border is dropped, as skimage does);
    with a mask, the mask-weighted mean over the same interior."""
    pad = SSIM_WINDOW // 2
    m = ssim_map(a, b)[pad:-pad, pad:-pad]
    return _weighted_mean(m, None if mask is None else mask[pad:-pad, pad:-pad])


class LPIPSMetric:
    """LPIPS (VGG16, v0.1) for RGB uint8 crops; the network loads on first use."""

    def __init__(self) -> None:
        self._net = None

    def _taps(self, images: list[np.ndarray]) -> list:
        import torch

        from reenact.auxnets.vgg import LPIPS

        if self._net is None:
            self._net = LPIPS().eval()
        x = torch.stack([torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1) for im in images])
        with torch.inference_mode():
            return self._net.features(x.float() / 127.5 - 1)  # N×3×H×W in [-1, 1] → 5 taps

    def against(self, truth: np.ndarray, outputs: list[np.ndarray]) -> list[float]:
        """LPIPS of each output against one truth (same size), one forward pass for all: the
        formula of `auxnets.vgg.LPIPS.forward` (unit-normalised taps, squared difference,
        linear heads, spatial mean, sum over taps)."""
        import torch

        from reenact.auxnets.vgg import _unit  # the exact epsilon handling of LPIPS

        total = torch.zeros(len(outputs))
        with torch.inference_mode():
            for j, f in enumerate(self._taps([truth, *outputs])):
                u = _unit(f)
                d = ((u[1:] - u[:1]) ** 2 * getattr(self._net, f"lin{j}")).sum(dim=1)  # N×h×w
                total += d.mean(dim=(1, 2))
        return [float(v) for v in total]

    def __call__(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
        """Distances for a list of (a, b) same-size RGB uint8 pairs."""
        return [self.against(b, [a])[0] for a, b in pairs]


@dataclass(frozen=True)
class AlignedPair:
    """Output and ground truth, each aligned by its own landmarks; `mask`: the ground truth's
    parsing face mask (size×size float32 in [0, 1])."""

    output: np.ndarray
    truth: np.ndarray
    mask: np.ndarray


def aligned_pair(output: np.ndarray, output_points: np.ndarray, truth: np.ndarray,
                 truth_points: np.ndarray, size: int = 256) -> AlignedPair:
    """Crop both faces with `align.align(own points, size)` and render the truth's face mask."""
    crop_o, crop_t = align.align(output_points, size), align.align(truth_points, size)
    mask = parsing.face_mask(parsing.parsing_map(crop_t.points_to_crop(truth_points), size))
    return AlignedPair(output=crop_o.extract(output), truth=crop_t.extract(truth), mask=mask)


def pixel_metrics(pair: AlignedPair) -> dict[str, float]:
    """L1, PSNR, SSIM on the whole aligned crops and inside the face mask (LPIPS: `LPIPSMetric`)."""
    o, t, m = pair.output, pair.truth, pair.mask
    return {"l1": l1(o, t), "psnr": psnr(o, t), "ssim": ssim(o, t),
            "l1_face": l1(o, t, m), "psnr_face": psnr(o, t, m), "ssim_face": ssim(o, t, m)}


# --- mouth and eyes -----------------------------------------------------------------------------

REGION_SIZE = 64  # side of the region crops compared (the mouth generator's resolution)


def region_crops(image: np.ndarray, points: np.ndarray) -> dict[str, np.ndarray]:
    """The mouth and both eye crops (`reenact.regions` geometry, left eye mirrored) of a frame,
    located by its own (478, 3) landmarks, each REGION_SIZE² RGB uint8."""
    from reenact import regions

    scale = geometry.face_scale(points)
    out = {"mouth": regions.mouth_box(points, REGION_SIZE, scale).extract(image)}
    for side, box in regions.eye_boxes(points, REGION_SIZE, scale).items():
        out[f"eye_{side}"] = box.extract(image)
    return out


def region_metrics(output: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, float]:
    """PSNR and SSIM of the mouth crop and of the eye crops (mean of both eyes); LPIPS separately."""
    eyes = ("eye_right", "eye_left")
    return {"mouth_psnr": psnr(output["mouth"], truth["mouth"]), "mouth_ssim": ssim(output["mouth"], truth["mouth"]),
            "eyes_psnr": float(np.mean([psnr(output[e], truth[e]) for e in eyes])),
            "eyes_ssim": float(np.mean([ssim(output[e], truth[e]) for e in eyes]))}


def kid(a: np.ndarray, b: np.ndarray) -> float:
    """Kernel Inception Distance: the unbiased MMD² between two (N, d) feature sets with the cubic
    polynomial kernel k(x, y) = (x·y / d + 1)³ (Bińkowski et al. 2018). Needs ≥ 2 rows each."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d, m, n = a.shape[1], len(a), len(b)
    kaa, kbb, kab = ((x @ y.T / d + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


# --- FID ----------------------------------------------------------------------------------------

class FeatureBank:
    """Streams images through the FID Inception in batches and keeps only the (N, 2048) pool3
    features. The network loads on the first full batch (or at `features()`)."""

    def __init__(self, *, batch_size: int = 16) -> None:
        self.batch_size = batch_size
        self._pending: list[np.ndarray] = []
        self._feats: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._pending) + sum(len(f) for f in self._feats)

    def add(self, image: np.ndarray) -> None:
        self._pending.append(np.ascontiguousarray(image))
        if len(self._pending) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            from reenact.auxnets import inception

            self._feats.append(inception.activations(self._pending, batch_size=self.batch_size))
            self._pending = []

    def features(self) -> np.ndarray:
        self._flush()
        return np.concatenate(self._feats) if self._feats else np.zeros((0, 2048), np.float32)


def _feature_key(items: list) -> str:
    """Digest of the FID model pin and the items (paths, frames, sizes, mtimes)."""
    h = hashlib.sha256(REGISTRY["fid-inception"].sha256.encode())
    for it in items:
        st = os.stat(it.path)
        h.update(f"{os.path.abspath(it.path)}|{it.frame}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def cached_features(items: list, compute, *, cache_dir: str | None = None) -> np.ndarray:
    """FID features of a fixed set of real pictures, computed once by `compute()` and kept in
    `<cache>/eval/fid-real-<digest>.npy` (the aux cache's sibling); any change of a file, of the
    list or of the model's pin changes the digest. An unwritable cache is not an error."""
    path = cache_root(cache_dir).parent / "eval" / f"fid-real-{_feature_key(items)}.npy"
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
    feats = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".fid-", suffix=".npy", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.save(f, feats)
        os.replace(tmp, path)
    except OSError:
        pass
    return feats


@dataclass(frozen=True)
class FidResult:
    """FID (this Inception) between `n_outputs` output frames and `n_real` real photos."""

    value: float
    n_outputs: int
    n_real: int

    @property
    def reliable(self) -> bool:
        return min(self.n_outputs, self.n_real) >= FID_RELIABLE_N


def fid_from_features(outputs: np.ndarray, real: np.ndarray) -> FidResult:
    """Fréchet distance of two feature sets (each needs ≥ 2 rows)."""
    from reenact.auxnets import inception

    mu_a, s_a = inception.statistics(outputs)
    mu_b, s_b = inception.statistics(real)
    return FidResult(value=inception.frechet_distance(mu_a, s_a, mu_b, s_b),
                     n_outputs=len(outputs), n_real=len(real))


def rate(flags: list[bool]) -> float | None:
    """Fraction of True (e.g. the face-detected rate); None for an empty list."""
    return float(np.mean(flags)) if flags else None
