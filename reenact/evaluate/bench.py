"""Speed: per-stage latency and end-to-end fps of the real pipeline, image and video, at 256².

The inputs are brought to 256×256 first (centre square, resized): the reference photo, one
driver frame (image mode) and the first `frames` frames of the driver video, re-encoded to a
temporary 256² mp4 (video mode), so every engine sees the same inputs. Then, per engine that
can be built and per execution provider:

* image: `pipeline.reenact_image` `repeats` times (after one warm-up call). "end-to-end" is the
  wall time of the call (decode, landmarker start-up, landmarks of both photos, retarget, render,
  paste-back); "warm" is the sum of the per-image stages (landmarks, retarget, render, paste),
  the cost per image once the models are loaded;
* video: `video.reenact_video` on the 256² clip. Stages are per frame (decode, landmarks in
  tracking mode, retarget, render, paste, encode); "end-to-end fps" = frames / wall time of the
  whole call (start-up, reference, audio mux included), "warm fps" = frames / sum of the stages.

Execution providers: the ONNX Runtime providers that can run here (CUDA only where an NVIDIA
driver is present). The warp engine runs no ONNX graph (NumPy/OpenCV), so it has one row; an
engine whose `InferenceConfig` has a `provider` field is measured once per provider.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from reenact import media, pipeline, video
from reenact.config import ENGINES, InferenceConfig
from reenact.engines import build_engine
from reenact.errors import MissingWeights, OutputError, UsageError

SIZE = 256


@dataclass
class BenchRow:
    """One (engine, provider, mode) measurement; `stages_ms` per image or per frame."""

    engine: str
    provider: str
    mode: str
    stages_ms: dict[str, float] = field(default_factory=dict)
    warm_ms: float = 0.0
    end_to_end_ms: float = 0.0
    fps_warm: float = 0.0
    fps_end_to_end: float = 0.0
    samples: int = 0
    status: str = "ok"


def write_json(path: str | Path, result: dict) -> Path:
    """Write the benchmark dict as JSON, atomically (temp file beside it, then rename)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e}") from None
    return path


def ort_providers() -> list[str]:
    """ONNX Runtime providers usable on this machine (CPU always; CUDA only with a driver)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    has_driver = Path("/proc/driver/nvidia/version").exists() or os.name == "nt"
    gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"} if has_driver else set()
    usable = {"CPUExecutionProvider"} | gpu
    return [p for p in ort.get_available_providers() if p in usable]


def machine() -> dict[str, object]:
    import onnxruntime as ort
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "onnxruntime": ort.__version__,
            "ort_providers_available": ort.get_available_providers(), "ort_providers_usable": ort_providers()}


def square(image: np.ndarray, side: int = SIZE) -> np.ndarray:
    """Centre square of `image`, resized to side×side."""
    h, w = image.shape[:2]
    s = min(h, w)
    crop = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    interp = cv2.INTER_AREA if s > side else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(crop, (side, side), interpolation=interp))


def prepare_inputs(ref: Path, driver: Path, folder: Path, frames: int) -> tuple[Path, Path, Path, int]:
    """256² reference PNG, driver-frame PNG and driver mp4 (≤ `frames` frames) in `folder`."""
    ref_png, drv_png, drv_mp4 = folder / "ref.png", folder / "driver.png", folder / "driver.mp4"
    media.write_image(ref_png, square(media.read_image(ref)))
    n = 0
    with media.VideoReader(driver) as video, \
            media.VideoWriter(drv_mp4, fps=video.info.fps, size=(SIZE, SIZE)) as out:
        for n, rgb in enumerate(video, 1):
            frame = square(rgb)
            if n == 1:
                media.write_image(drv_png, frame)
            out.write(frame)
            if n >= frames:
                break
    return ref_png, drv_png, drv_mp4, n


def _configs(engine: str) -> list[tuple[str, InferenceConfig]]:
    cfg = InferenceConfig(engine=engine, size=SIZE)
    if engine == "warp":
        return [("none (NumPy/OpenCV)", cfg)]
    if "provider" in {f.name for f in fields(InferenceConfig)}:
        return [(p, cfg.replace(provider=p)) for p in ort_providers()]
    return [("engine default", cfg)]


def bench_image(ref: Path, drv: Path, cfg: InferenceConfig, repeats: int) -> BenchRow:
    pipeline.reenact_image(ref, drv, cfg)  # warm-up: imports, caches
    stages: dict[str, float] = {}
    wall = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = pipeline.reenact_image(ref, drv, cfg)
        wall += time.perf_counter() - t0
        for k, v in result.seconds.items():
            stages[k] = stages.get(k, 0.0) + v
    ms = {k: 1000 * v / repeats for k, v in stages.items()}
    warm, e2e = sum(ms.values()), 1000 * wall / repeats
    return BenchRow(cfg.engine, "", "image", ms, warm, e2e, 1000 / warm, 1000 / e2e, repeats)


def bench_video(ref: Path, drv: Path, cfg: InferenceConfig, folder: Path) -> BenchRow:
    t0 = time.perf_counter()
    s = video.reenact_video(ref, drv, folder / "out.mp4", cfg, overwrite=True)
    wall = time.perf_counter() - t0
    ms = {k: 1000 * v / max(s.frames, 1) for k, v in s.seconds.items()}
    warm = sum(ms.values())
    return BenchRow(cfg.engine, "", "video", ms, warm, 1000 * wall / max(s.frames, 1),
                    1000 / warm, s.frames / wall, s.frames)


def run_bench(ref: str | Path, driver: str | Path, *, engines: tuple[str, ...] = ENGINES,
              repeats: int = 10, frames: int = 100,
              progress: Callable[[str], None] | None = None) -> dict:
    """Measure every buildable engine (see module docstring). Returns a JSON-ready dict:
    {"size", "machine", "inputs", "rows": [BenchRow as dict]}."""
    for name, value in (("--repeats", repeats), ("--frames", frames)):
        if value < 1:
            raise UsageError(f"{name} {value} must be at least 1", "give a positive number")
    say = progress or (lambda msg: None)
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="reenact-bench-") as tmp:
        folder = Path(tmp)
        ref_png, drv_png, drv_mp4, n = prepare_inputs(Path(ref), Path(driver), folder, frames)
        for engine in engines:
            try:
                build_engine(InferenceConfig(engine=engine, size=SIZE))
            except MissingWeights:
                rows.append(BenchRow(engine, "—", "—", status="unavailable: no weights"))
                continue
            for provider, cfg in _configs(engine):
                say(f"{engine} / {provider}: image")
                img = bench_image(ref_png, drv_png, cfg, repeats)
                say(f"{engine} / {provider}: video ({n} frames)")
                vid = bench_video(ref_png, drv_mp4, cfg, folder)
                for row in (img, vid):
                    row.provider = provider
                    rows.append(row)
    return {"size": SIZE, "machine": machine(), "inputs": {"reference": str(ref), "driver": str(driver),
            "frames": n, "repeats": repeats}, "rows": [vars(r) for r in rows]}
