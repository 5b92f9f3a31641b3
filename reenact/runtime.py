"""ONNX Runtime sessions for the exported generator (no torch import).

`GeneratorRuntime(path)` opens NAME.onnx (D, per frame) and the appearance graph NAME.appearance.onnx
(F, per reference) that its metadata names, and talks to both by input/output *name* (see
`reenact.export` for the graphs). Images cross this boundary as RGB uint8 S×S×3; the [-1, 1]
scaling and NCHW layout are handled here.

Provider choice (`providers`): CUDA only where an NVIDIA driver is actually present —
onnxruntime-gpu lists CUDAExecutionProvider even on machines without a GPU and then fails
noisily on every session — otherwise CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from reenact.errors import MissingWeights, ReenactError


def providers(available: list[str], device: str = "auto") -> list[str]:
    """Execution providers for `device` ("auto", "cpu", "cuda"), given ORT's available ones."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    has_driver = Path("/proc/driver/nvidia/version").exists() or os.name == "nt"
    want_cuda = device == "cuda" or (device == "auto" and has_driver)
    if want_cuda and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _session(path: Path, device: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), opts, providers=providers(ort.get_available_providers(), device))
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        raise MissingWeights(f"cannot load {path}: {str(e).splitlines()[0][:200]}",
                             "export it again with `reenact export`") from None


class GeneratorRuntime:
    """The exported generator. Attributes: size (crop side), config (model config dict),
    feature_warp (needs a warp grid per frame), providers (what ORT started), metadata.

    Raises MissingWeights when either file is missing, unreadable or not a reenact generator.
    """

    def __init__(self, path: str | os.PathLike, *, device: str = "auto", threads: int = 0) -> None:
        path = Path(path)
        if not path.is_file():
            raise MissingWeights(f"generator weights {path} not found", "export a checkpoint with `reenact export`")
        self.path = path
        self._gen = _session(path, device, threads)
        meta = dict(self._gen.get_modelmeta().custom_metadata_map)
        if meta.get("reenact.kind") != "generator" or "reenact.appearance" not in meta:
            raise MissingWeights(f"{path} is not a reenact generator (no reenact.* metadata)",
                                 "pass the NAME.onnx written by `reenact export`, not NAME.appearance.onnx")
        self.metadata = meta
        self.config = json.loads(meta["reenact.model_config"])
        self.size = int(self.config["size"])
        self.feature_warp = bool(self.config["feature_warp"])
        app_path = path.with_name(meta["reenact.appearance"])
        if not app_path.is_file():
            raise MissingWeights(f"{path} needs its appearance graph {app_path}, which is missing",
                                 "keep NAME.onnx and NAME.appearance.onnx together")
        self._app = _session(app_path, device, threads)
        self.feature_names = [o.name for o in self._app.get_outputs()]
        self._gen_inputs = {i.name for i in self._gen.get_inputs()}
        self.providers = self._gen.get_providers()

    def appearance(self, reference: np.ndarray) -> list[np.ndarray]:
        """F on one reference crop (S×S×3 RGB uint8) → its features (1×C×r×r float32 each)."""
        self._check_image(reference)
        x = reference.transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1.0
        return self._app.run(self.feature_names, {"reference": x})

    def generate(self, features: list[np.ndarray], pose_parsing: np.ndarray,
                 warp_grid: np.ndarray | None = None) -> np.ndarray:
        """D for one frame. pose_parsing: (12, S, S) float32 in [0, 1]; warp_grid: (S, S, 2)
        normalised backward map (required iff `feature_warp`). Returns S×S×3 RGB uint8."""
        feed = dict(zip(self.feature_names, features))
        feed["pose_parsing"] = np.ascontiguousarray(pose_parsing, np.float32)[None]
        if "warp_grid" in self._gen_inputs:
            if warp_grid is None:
                raise ReenactError("this generator warps appearance features: a warp grid is required")
            feed["warp_grid"] = np.ascontiguousarray(warp_grid, np.float32)[None]
        image = self._gen.run(["image"], feed)[0][0]  # 3×S×S in [-1, 1]
        return np.clip((image.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)

    def _check_image(self, image: np.ndarray) -> None:
        if image.shape != (self.size, self.size, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected a {self.size}×{self.size}×3 uint8 crop, got {image.dtype} {image.shape}")
