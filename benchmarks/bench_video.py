"""Per-stage time and end-to-end fps of `reenact video` (warp engine) on this machine.

Usage: python benchmarks/bench_video.py [DRIVER.mp4] [--ref REF.jpg] [--size 256] [--repeat 1]

Runs the same library call the CLI makes (default options: relative motion, smoothing) and prints
seconds per stage (decode, landmarks, smooth, retarget, render, paste, encode, join) per frame,
and end-to-end fps including start-up. Two
configurations: the model crop at --size (the warp rendered at that size too) and the default
(warp rendered at the face's native resolution, up to 1024).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from reenact import media, video
from reenact.config import InferenceConfig

REPO = Path(__file__).resolve().parents[1]


def run(ref: Path, driver: Path, cfg: InferenceConfig, label: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = video.reenact_video(ref, driver, Path(tmp) / "out.mp4", cfg)
        wall = time.perf_counter() - t0
    n = max(s.frames, 1)
    stages = "  ".join(f"{k} {1000 * v / n:6.1f}" for k, v in s.seconds.items())
    print(f"{label:<34} {s.frames} frames {s.size[0]}x{s.size[1]}  ms/frame: {stages}")
    print(f"{'':<34} end-to-end {wall:6.2f} s  = {s.frames / wall:5.1f} fps (incl. start-up)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("driver", nargs="?", type=Path, default=REPO / "examples" / "drive.mp4")
    ap.add_argument("--ref", type=Path, default=REPO / "examples" / "ref.jpg")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    info = media.probe_video(args.driver)
    print(f"driver {args.driver.name}: {info.width}x{info.height} {info.fps:.2f} fps ~{info.n_frames} frames; "
          f"cpus={os.cpu_count()}")
    run(args.ref, args.driver, InferenceConfig(size=args.size, max_warp_size=args.size),
        f"warp @ {args.size}² crop")
    run(args.ref, args.driver, InferenceConfig(size=args.size), "warp @ native crop (default)")
    run(args.ref, args.driver, InferenceConfig(size=args.size, max_warp_size=args.size, crop=True),
        f"warp @ {args.size}², --crop output")


if __name__ == "__main__":
    main()
