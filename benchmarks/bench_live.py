"""Capture-to-display latency and sustained fps of `reenact live` (warp engine, headless).

Usage: python benchmarks/bench_live.py [DRIVER.mp4] [--ref REF.jpg] [--engine warp] [--size 256]
       [--record OUT.mp4]

A video file stands in for the camera, through the same library call the CLI makes
(`live.run_live`, no window; no recording unless `--record`: then the camera-paced run is
repeated, recording the result):

* camera-paced: the file is delivered at its own frame rate, like a camera; prints the latency
  from capture to the result being ready (median, p95), the fps rendered and the frames dropped
  because rendering fell behind;
* sustained: the same per-frame work (`Animator.stream`: landmarks, smoothing, retargeting,
  warp, paste-back) on frames decoded beforehand, back to back: the rate this machine can
  sustain, i.e. the camera rate above which frames start to be dropped.

The machine's load average is printed too: the numbers mean little on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import reenact
from reenact import live, media

REPO = Path(__file__).resolve().parents[1]


def paced(anim, driver: Path, record: Path | None = None) -> None:
    s = live.run_live(anim, live.LiveOptions(source=str(driver), window=False, output=record, overwrite=True))
    print(f"camera-paced{' +rec' if record else '     '} {s.rendered:4d} rendered of {s.captured} captured at the file's rate ({s.dropped} dropped)"
          f"  {s.fps:5.1f} fps  latency median {s.latency_median_ms:5.1f} ms  p95 {s.latency_p95_ms:5.1f} ms")


def sustained(anim, driver: Path) -> None:
    with media.VideoReader(driver) as r:
        frames = list(r)  # decoded first: only the per-frame work is timed
    times = []
    with anim.stream(fps=24) as stream:
        for f in frames:
            t0 = time.perf_counter()
            stream(f)
            times.append(1000 * (time.perf_counter() - t0))
    ms = np.asarray(times[5:])  # the first frames warm caches up
    print(f"sustained     {len(ms):4d} frames back to back  {1000 / ms.mean():5.1f} fps  "
          f"per frame median {np.median(ms):5.1f} ms  p95 {np.percentile(ms, 95):5.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("driver", nargs="?", type=Path, default=REPO / "examples" / "drive.mp4")
    ap.add_argument("--ref", type=Path, default=REPO / "examples" / "ref.jpg")
    ap.add_argument("--engine", default="warp")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--record", type=Path, help="camera-paced again, recording the result to this file")
    args = ap.parse_args()
    print(f"reference {args.ref.name}, driver {args.driver.name}, engine {args.engine}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (1 min)")
    with reenact.load(args.ref, engine=args.engine, size=args.size) as anim:
        paced(anim, args.driver)
        if args.record:
            paced(anim, args.driver, args.record)
        sustained(anim, args.driver)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLI does (see cli.main)
    main()
