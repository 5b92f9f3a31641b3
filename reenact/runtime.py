"""ONNX Runtime sessions for the exported generator (no torch import).

`GeneratorRuntime(path)` opens NAME.onnx (D, per frame) and the per-reference graph its metadata
names — the appearance graph NAME.appearance.onnx (F), or for the k-shot variant the embedder
NAME.embedder.onnx (E_k) — and talks to both by input/output *name* (see `reenact.export` for the
graphs). Images cross this boundary as RGB uint8 S×S×3; the [-1, 1] scaling and NCHW layout are
handled here.

One reference (thesis variant): `features = rt.appearance(crop)` once, then
`rt.generate(features, pose_parsing)` per frame. K references (k-shot variant, `rt.variant ==
"kshot"`): `e = rt.embed(crop, parsing_map(crop_points))` once per reference, then
`rt.generate_k([e1, …, eK], pose_parsing)` per frame (any K ≥ 1; the fusion weights are computed
inside the graph). With a targeted embedder (`rt.targeted`) `embed` only prepares the inputs and
`generate_k` runs the embedder on all K references every frame (K embedder runs per frame).

Provider choice (`providers`): CUDA only where an NVIDIA driver is actually present —
onnxruntime-gpu lists CUDAExecutionProvider even on machines without a GPU and then fails
noisily on every session — otherwise CPU.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reenact.errors import MissingWeights, ReenactError


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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


def _model_config(path: Path, meta: dict) -> dict:
    """The model config of the ONNX metadata, checked for what the runtime uses; MissingWeights
    "not a reenact model (…)" when it is malformed."""
    try:
        cfg = json.loads(meta.get("reenact.model_config", ""))
    except ValueError:
        cfg = None
    types = {"size": int, "feature_warp": bool, "variant": str, "targeted_embedder": bool, "blend": str}
    problem = "its model config is not a JSON object" if not isinstance(cfg, dict) else next(
        (f"model_config.{k} is {cfg.get(k)!r}" for k, t in types.items()
         if (k in cfg or k in ("size", "feature_warp")) and (type(cfg.get(k)) is not t)), None)
    if problem is None and (cfg["size"] < 16 or cfg.get("variant", "thesis") not in ("thesis", "kshot", "region")):
        problem = f"model_config has size {cfg['size']} and variant {cfg.get('variant')!r}"
    if problem is None and cfg.get("blend", "opening") not in ("opening", "area"):
        problem = f"model_config.blend is {cfg['blend']!r}"
    if problem:
        raise MissingWeights(f"{path} is not a reenact model ({problem})", "export it again with `reenact export`")
    return cfg


@dataclass(frozen=True)
class ReferenceEmbedding:
    """What the k-shot generator keeps of one reference (from `GeneratorRuntime.embed`): the
    embedder's outputs by name (1×C×r×r features, 1×1×r×r responsibility logits), or with a
    targeted embedder, whose outputs depend on the pose, its prepared inputs by name."""

    outputs: dict[str, np.ndarray] | None
    inputs: dict[str, np.ndarray] | None


def _to_input(image: np.ndarray) -> np.ndarray:
    """S×S×3 uint8 → 1×3×S×S float32 in [-1, 1]."""
    return image.transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1.0


def _to_image(output: np.ndarray) -> np.ndarray:
    """3×S×S float in [-1, 1] → S×S×3 uint8."""
    return np.clip((output.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


class GeneratorRuntime:
    """The exported generator. Attributes: size (crop side), config (model config dict), variant
    ("thesis" | "kshot"), targeted (k-shot embedder needs the pose), feature_warp (needs a warp grid
    per frame), providers (what ORT started), metadata.

    Raises MissingWeights when either file is missing, unreadable or not a reenact generator.
    """

    def __init__(self, path: str | os.PathLike, *, device: str = "auto", threads: int = 0) -> None:
        path = Path(path)
        if not path.is_file():
            raise MissingWeights(f"generator weights {path} not found", "export a checkpoint with `reenact export`")
        self.path = path
        self._gen = _session(path, device, threads)
        meta = dict(self._gen.get_modelmeta().custom_metadata_map)
        companion = "embedder" if meta.get("reenact.variant") == "kshot" else "appearance"
        if meta.get("reenact.kind") != "generator" or f"reenact.{companion}" not in meta:
            raise MissingWeights(f"{path} is not a reenact generator (no reenact.* metadata)",
                                 f"pass the NAME.onnx written by `reenact export`, not NAME.{companion}.onnx")
        self.metadata = meta
        self.config = _model_config(path, meta)
        self.size = self.config["size"]
        self.variant = self.config.get("variant", "thesis")
        self.targeted = bool(self.config.get("targeted_embedder", False))
        self.feature_warp = bool(self.config["feature_warp"])
        app_path = path.with_name(Path(str(meta[f"reenact.{companion}"])).name)  # always beside NAME.onnx
        if not app_path.is_file():
            raise MissingWeights(f"{path} needs its {companion} graph {app_path}, which is missing",
                                 f"keep NAME.onnx and NAME.{companion}.onnx together")
        self._app = _session(app_path, device, threads)
        self.feature_names = [o.name for o in self._app.get_outputs()]  # k-shot: embedding_*, responsibility_*
        self._gen_inputs = {i.name for i in self._gen.get_inputs()}
        self.providers = self._gen.get_providers()
        problem = self._interface_problem()
        if problem:
            raise MissingWeights(f"{path} is not a reenact model ({problem})", "export it again with `reenact export`")

    def _interface_problem(self) -> str | None:
        """What the graphs lack of the inputs and outputs this class feeds and reads (the
        metadata may lie), or None."""
        app_in = {i.name: i.shape for i in self._app.get_inputs()}
        want_app = {"reference"} | ({"reference_parsing"} if self.variant == "kshot" else set()) | \
            ({"pose_parsing"} if self.targeted else set())
        want_gen = set(self.feature_names) | {"pose_parsing"} | ({"warp_grid"} if self.feature_warp else set()) | \
            ({"warped"} if self.variant == "region" else set())
        gen_out = {o.name for o in self._gen.get_outputs()}
        for graph, missing in (("appearance/embedder", want_app - set(app_in)), ("generator", want_gen - self._gen_inputs)):
            if missing:
                return f"its {graph} graph has no input {', '.join(sorted(missing))}"
        if "image" not in gen_out or not self.feature_names:
            return "its graphs lack the image or feature outputs"
        side = [d for d in app_in["reference"][-2:] if isinstance(d, int)]
        if any(d != self.size for d in side):
            return f"its metadata says {self.size}² but the graph takes {app_in['reference'][-2:]}"
        return None

    def appearance(self, reference: np.ndarray) -> list[np.ndarray]:
        """F on one reference crop (S×S×3 RGB uint8) → its features (1×C×r×r float32 each)."""
        if self.variant != "region":
            self._need("thesis", "appearance")
        self._check_image(reference)
        return self._app.run(self.feature_names, {"reference": _to_input(reference)})

    def generate(self, features: list[np.ndarray], pose_parsing: np.ndarray,
                 warp_grid: np.ndarray | None = None) -> np.ndarray:
        """D for one frame. pose_parsing: (12, S, S) float32 in [0, 1]; warp_grid: (S, S, 2)
        normalised backward map (required iff `feature_warp`). Returns S×S×3 RGB uint8."""
        self._need("thesis", "generate")
        if self.variant == "region" or "warped" in self._gen_inputs:
            raise ReenactError(f"{self.path.name} is a region generator", "use RegionRuntime.redraw()")
        feed = dict(zip(self.feature_names, features))
        feed["pose_parsing"] = np.ascontiguousarray(pose_parsing, np.float32)[None]
        if "warp_grid" in self._gen_inputs:
            if warp_grid is None:
                raise ReenactError("this generator warps appearance features: a warp grid is required")
            feed["warp_grid"] = np.ascontiguousarray(warp_grid, np.float32)[None]
        return _to_image(self._gen.run(["image"], feed)[0][0])

    def embed(self, reference: np.ndarray, reference_parsing: np.ndarray) -> ReferenceEmbedding:
        """k-shot: E_k on one reference crop (S×S×3 RGB uint8) and its own parsing map ((12, S, S)
        float32 in [0, 1], `parsing.parsing_map` of its crop landmarks). Cache the result per
        reference; with a targeted embedder only the inputs are prepared here."""
        self._need("kshot", "embed")
        self._check_image(reference)
        inputs = {"reference": _to_input(reference),
                  "reference_parsing": np.ascontiguousarray(reference_parsing, np.float32)[None]}
        if self.targeted:
            return ReferenceEmbedding(outputs=None, inputs=inputs)
        return ReferenceEmbedding(outputs=dict(zip(self.feature_names, self._app.run(self.feature_names, inputs))),
                                  inputs=None)

    def generate_k(self, embeddings: Sequence[ReferenceEmbedding], pose_parsing: np.ndarray) -> np.ndarray:
        """k-shot: fuse K ≥ 1 references (`embed` results, any order) and render one frame.
        pose_parsing: (12, S, S) float32 in [0, 1]. Returns S×S×3 RGB uint8."""
        self._need("kshot", "generate_k")
        if not embeddings:
            raise ValueError("generate_k needs at least one reference embedding")
        pose = np.ascontiguousarray(pose_parsing, np.float32)[None]
        if self.targeted:  # the embedder sees the pose: run it on all K references now (batch K)
            feed = {name: np.concatenate([e.inputs[name] for e in embeddings]) for name in embeddings[0].inputs}
            feed["pose_parsing"] = np.repeat(pose, len(embeddings), axis=0)
            stacked = dict(zip(self.feature_names, (o[None] for o in self._app.run(self.feature_names, feed))))
        else:
            stacked = {name: np.stack([e.outputs[name][0] for e in embeddings])[None] for name in self.feature_names}
        return _to_image(self._gen.run(["image"], {**stacked, "pose_parsing": pose})[0][0])

    def _need(self, variant: str, method: str) -> None:
        if self.variant != variant:
            use = "embed() and generate_k()" if self.variant == "kshot" else "appearance() and generate()"
            raise ReenactError(f"{method}() is for {variant} generators; {self.path.name} is a {self.variant} "
                               f"generator", f"use {use}")

    def _check_image(self, image: np.ndarray) -> None:
        if image.shape != (self.size, self.size, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected a {self.size}×{self.size}×3 uint8 crop, got {image.dtype} {image.shape}")


class RegionRuntime(GeneratorRuntime):
    """An exported region generator (mouth or eyes; `reenact.model.region`). `region` names the
    part, `size` its crop side. `features = rt.appearance(reference_region)` once per reference
    (and per eye), then `rt.redraw(features, parsings, warped)` per frame for a batch of crops.

    Raises MissingWeights when the file is not a region generator (or not the `expect`ed one)."""

    def __init__(self, path: str | os.PathLike, *, expect: str | None = None, device: str = "auto",
                 threads: int = 0) -> None:
        super().__init__(path, device=device, threads=threads)
        self.region = self.config.get("region", "")
        self.blend = self.config.get("blend", "opening")  # models exported before blend existed
        if self.variant != "region" or (expect is not None and self.region != expect):
            what = f"the {expect} region model" if expect else "a region model"
            raise MissingWeights(f"{self.path} is not {what} (it is a {self.variant} {self.region} generator)".replace("  ", " "),
                                 "pass the NAME.onnx exported from a region config (configs/mouth-*.toml, configs/eyes-*.toml)")

    def redraw(self, features: Sequence[list[np.ndarray]], parsings: Sequence[np.ndarray],
               warped: Sequence[np.ndarray]) -> list[np.ndarray]:
        """D on a batch of crops: per crop its reference's features (`appearance`), the target's
        parsing map ((12, S, S) float32) and the warp's render (S×S×3 uint8). → S×S×3 uint8 each."""
        for image in warped:
            self._check_image(image)
        feed = {name: np.concatenate([f[k] for f in features]) for k, name in enumerate(self.feature_names)}
        feed["pose_parsing"] = np.ascontiguousarray(np.stack(parsings), np.float32)
        feed["warped"] = np.concatenate([_to_input(w) for w in warped])
        return [_to_image(o) for o in self._gen.run(["image"], feed)[0]]
