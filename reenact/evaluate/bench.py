"""Speed: per-stage latency, end-to-end fps, CPU time and peak memory of the real pipeline.

Scenarios (`SCENARIOS`), each made from the given reference photo and driver video in a
temporary folder:

* "256": everything at 256² (below); image and video;
* "2mp": the reference resized to about 2 MP (1920×1080 for a 16:9 photo), a 512² driver —
  the face rendered at its native resolution (up to 1024²) and pasted into the full photo;
* "4k": the reference at 3840×2160 (downscaled to `max_side` 1920 on loading, as `reenact video`
  does) and a 1920×1080 driver.

For "256" the inputs are brought to 256×256 first (centre square, resized): the reference photo, one
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
  Frames render in several threads (`video.render_workers`: large ones, and any with learned
  regions): their render and paste columns add up the threads' times (CPU-like), and count
  1 / threads of that in "warm".

Every video row also has the CPU time per frame of this process and of its ffmpeg children (the
machine may be shared: CPU time is steadier than wall time) and the peak memory (resident set of
this process plus its children, sampled every 20 ms; Linux only, else 0).

Execution providers: the ONNX Runtime providers that can run here (CUDA only where an NVIDIA
driver is present). The warp engine runs no ONNX graph (NumPy/OpenCV), so it has one row; an
engine whose `InferenceConfig` has a `provider` field is measured once per provider.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
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
    scenario: str = "256"
    size: str = ""  # reference (output) and driver frame sizes, "W×H / W×H"
    cpu_ms: float = 0.0  # per frame (video): this process
    ffmpeg_cpu_ms: float = 0.0  # per frame (video): ffmpeg (decoding, encoding, joining)
    peak_mib: float = 0.0  # peak resident memory of the process and its children


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


PARALLEL_STAGES = ("render", "paste")  # timed in each render thread (`video.write_chunks`)


def bench_video(ref: Path, drv: Path, cfg: InferenceConfig, folder: Path) -> BenchRow:
    with PeakMemory() as peak:
        t0, c0 = time.perf_counter(), _cpu()
        s = video.reenact_video(ref, drv, folder / "out.mp4", cfg, overwrite=True)
        wall, c1 = time.perf_counter() - t0, _cpu()
    n = max(s.frames, 1)
    ms = {k: 1000 * v / n for k, v in s.seconds.items()}
    # render and paste ran in s.workers threads at once: their wall share is their sum / workers
    warm = sum(v / s.workers if k in PARALLEL_STAGES else v for k, v in ms.items())
    d = media.probe_video(drv)
    return BenchRow(cfg.engine, "", "video", ms, warm, 1000 * wall / n, 1000 / warm, s.frames / wall, s.frames,
                    size=f"{s.size[0]}×{s.size[1]} / {d.width}×{d.height}",
                    cpu_ms=1000 * (c1[0] - c0[0]) / n, ffmpeg_cpu_ms=1000 * (c1[1] - c0[1]) / n, peak_mib=peak.mib)


def _cpu() -> tuple[float, float]:
    """(this process, its waited-for children): user + system CPU seconds so far (children: 0
    where `resource` is missing, i.e. Windows)."""
    try:
        import resource
    except ImportError:
        return time.process_time(), 0.0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


class PeakMemory:
    """Context manager: the peak resident memory (MiB, `mib`) of this process plus its child
    processes while inside, sampled every `interval` s from /proc (0 where there is none)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.mib = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="PeakMemory", daemon=True)

    def __enter__(self) -> PeakMemory:
        if Path("/proc/self/statm").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE") / 2 ** 20
        while True:
            self.mib = max(self.mib, page * sum(_resident_pages(p) for p in ["self", *_children()]))
            if self._stop.wait(self.interval):
                return


def _resident_pages(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):  # the process just ended
        return 0


def _children() -> list[str]:
    found = []
    for task in Path("/proc/self/task").iterdir():
        try:
            found += (task / "children").read_text().split()
        except OSError:
            continue
    return found


@dataclass(frozen=True)
class Scenario:
    """How a scenario shapes its inputs: the reference ("square": centre square at `ref_side`²;
    "area": resized to about `ref_area` pixels, aspect kept; "16:9": centre 16:9 crop at
    `ref_side` wide) and the driver (`driver`: (w, h), centre-cropped to that aspect)."""

    name: str
    ref: str
    ref_side: int
    driver: tuple[int, int]
    ref_area: int = 0
    image: bool = False  # also the image benchmark


SCENARIOS = {"256": Scenario("256", "square", SIZE, (SIZE, SIZE), image=True),
             "2mp": Scenario("2mp", "area", 0, (512, 512), ref_area=1920 * 1080),
             "4k": Scenario("4k", "16:9", 3840, (1920, 1080))}


def fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre crop of `image` to the aspect of `size` (w, h), resized to it."""
    h, w = image.shape[:2]
    tw, th = size
    cw, ch = (w, round(w * th / tw)) if w * th <= h * tw else (round(h * tw / th), h)
    crop = image[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
    interp = cv2.INTER_AREA if cw > tw else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(crop, size, interpolation=interp))


def scenario_reference(image: np.ndarray, sc: Scenario) -> np.ndarray:
    if sc.ref == "square":
        return fit(image, (sc.ref_side, sc.ref_side))
    if sc.ref == "16:9":
        return fit(image, (sc.ref_side, sc.ref_side * 9 // 16))
    h, w = image.shape[:2]
    f = (sc.ref_area / (h * w)) ** 0.5
    return fit(image, (2 * round(w * f / 2), 2 * round(h * f / 2)))


def prepare_scenario(ref: Path, driver: Path, folder: Path, frames: int, sc: Scenario) -> tuple[Path, Path, int]:
    """The scenario's reference PNG and driver mp4 (≤ `frames` frames) in `folder`."""
    ref_png, drv_mp4 = folder / f"ref-{sc.name}.png", folder / f"driver-{sc.name}.mp4"
    media.write_image(ref_png, scenario_reference(media.read_image(ref), sc), overwrite=True)
    n = 0
    with media.VideoReader(driver) as clip, \
            media.VideoWriter(drv_mp4, fps=clip.info.fps, size=sc.driver, preset="veryfast", overwrite=True) as out:
        for n, rgb in enumerate(clip, 1):
            out.write(fit(rgb, sc.driver))
            if n >= frames:
                break
    return ref_png, drv_mp4, n


def run_bench(ref: str | Path, driver: str | Path, *, engines: tuple[str, ...] = ENGINES,
              repeats: int = 10, frames: int = 100, scenarios: tuple[str, ...] = ("256",),
              progress: Callable[[str], None] | None = None) -> dict:
    """Measure every buildable engine in every scenario (see module docstring). Returns a
    JSON-ready dict: {"size", "machine", "inputs", "scenarios", "rows": [BenchRow as dict]}."""
    for name, value in (("--repeats", repeats), ("--frames", frames)):
        if value < 1:
            raise UsageError(f"{name} {value} must be at least 1", "give a positive number")
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        raise UsageError(f"unknown scenario {', '.join(unknown) or '(none)'}", f"choose from {', '.join(SCENARIOS)}")
    say = progress or (lambda msg: None)
    rows: list[BenchRow] = []
    n = 0
    with tempfile.TemporaryDirectory(prefix="reenact-bench-") as tmp:
        folder = Path(tmp)
        for name in scenarios:
            sc = SCENARIOS[name]
            say(f"{name}: preparing inputs")
            if sc.image:
                ref_png, drv_png, drv_mp4, n = prepare_inputs(Path(ref), Path(driver), folder, frames)
            else:
                (ref_png, drv_mp4, n), drv_png = prepare_scenario(Path(ref), Path(driver), folder, frames, sc), None
            rows += _bench_engines(engines, ref_png, drv_png, drv_mp4, n, repeats, folder, sc, say)
    return {"size": SIZE, "machine": machine(), "inputs": {"reference": str(ref), "driver": str(driver),
            "frames": n, "repeats": repeats}, "scenarios": list(scenarios), "rows": [vars(r) for r in rows]}


def _bench_engines(engines: tuple[str, ...], ref_png: Path, drv_png: Path | None, drv_mp4: Path, n: int,
                   repeats: int, folder: Path, sc: Scenario, say: Callable[[str], None]) -> list[BenchRow]:
    rows: list[BenchRow] = []
    for engine in engines:
        try:
            build_engine(InferenceConfig(engine=engine, size=SIZE))
        except MissingWeights:
            rows.append(BenchRow(engine, "—", "—", status="unavailable: no weights", scenario=sc.name))
            continue
        for provider, cfg in _configs(engine):
            measured = []
            if drv_png is not None:
                say(f"{sc.name} {engine} / {provider}: image")
                measured.append(bench_image(ref_png, drv_png, cfg, repeats))
            say(f"{sc.name} {engine} / {provider}: video ({n} frames)")
            measured.append(bench_video(ref_png, drv_mp4, cfg, folder))
            for row in measured:
                row.provider, row.scenario = provider, sc.name
                rows.append(row)
    return rows
