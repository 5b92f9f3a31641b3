"""Speed of video-to-video (`reenact video SOURCE.mp4 DRIVER.mp4`) next to the photo-reference path.

Usage: PYTHONPATH=. python benchmarks/bench_v2v.py [--source CLIP] [--driver DRIVER.mp4]
       [--height 720] [--engine fusion] [--repeat 2] [--baseline DIR]

The source: the first frames of CLIP (default: the Pexels clip in ../shared/data/samples/pyfeat,
640×360, scaled to --height, i.e. 1280×720 — upscaled, so the face is as large as in a 720p
shot), as many as the driver has (nothing plays backward). The photo path: frame 0 of that
720p source as the reference photo. Both are driven by the same driver (default
examples/drive.mp4, 120 frames) with the same engine, through the library call the CLI makes,
and write a 720p video. Prints ms per frame per stage, end-to-end fps (including start-up
and both passes) and CPU ms per frame (the Python process, its ffmpeg children); each
configuration runs --repeat times in a fresh process (`bench_speed.measure`), alternating, and
the best run counts (the machine is shared). The speed share is also given per round — the
video-source run divided by the photo run just before it — and their median: on a machine
whose load changes from minute to minute that is steadier than the ratio of two best runs.
With --baseline DIR (another checkout, e.g. a `git worktree` of the old commit) both checkouts
are measured, alternately, and compared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from bench_speed import measure

from reenact import media
from reenact.engines import default_engine

REPO = Path(__file__).resolve().parents[1]
PEXELS = REPO.parent / "shared" / "data" / "samples" / "pyfeat" / "WolfgangLanger_Pexels.mp4"


def prepare(clip: Path, driver: Path, height: int, folder: Path) -> tuple[Path, Path]:
    """(the source video at `height`, as long as the driver; its first frame as a PNG photo)."""
    n = sum(1 for _ in media.VideoReader(driver))
    source, photo = folder / f"source-{height}p.mp4", folder / f"photo-{height}p.png"
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-i", str(clip), "-frames:v", str(n),
                    "-vf", f"scale=-2:{height}", "-c:v", "libx264", "-crf", "14", "-preset", "veryfast",
                    "-c:a", "aac", str(source)], check=True)
    media.write_image(photo, next(iter(media.VideoReader(source))))
    return source, photo


def report(label: str, m: dict) -> None:
    stages = "  ".join(f"{k} {v:.1f}" for k, v in sorted(m["stages"].items(), key=lambda kv: -kv[1]))
    print(f"{label:<26} {m['frames']} frames {m['size'][0]}x{m['size'][1]}: {m['fps']:5.1f} fps end to end, "
          f"CPU {m['cpu_ms']:.0f} + {m['ffmpeg_cpu_ms']:.0f} ms/frame (self + ffmpeg)\n"
          f"{'':<26} wall ms/frame: {stages}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=PEXELS)
    ap.add_argument("--driver", type=Path, default=REPO / "examples" / "drive.mp4")
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--engine", default=default_engine())
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--baseline", type=Path, help="another checkout (old code) to measure alongside")
    args = ap.parse_args()
    checkouts = [("new", REPO)] + ([("old", args.baseline)] if args.baseline else [])
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source, photo = prepare(args.source, args.driver, args.height, folder)
        best: dict[tuple[str, str], dict] = {}
        shares: dict[str, list[float]] = {tag: [] for tag, _ in checkouts}  # per round: v2v fps / photo fps
        for rnd in range(args.repeat):
            for tag, checkout in checkouts[:: -1 if rnd % 2 else 1]:
                fps = {}
                for label, ref in (("photo reference", photo), ("video source (v2v)", source)):
                    m = measure(checkout, ref, args.driver, folder / "out.mp4", args.engine)
                    fps[label] = m["fps"]
                    if (tag, label) not in best or m["fps"] > best[tag, label]["fps"]:
                        best[tag, label] = m
                shares[tag].append(fps["video source (v2v)"] / fps["photo reference"])
    print(f"engine {args.engine}, driver {args.driver.name}, source {args.source.name} at {args.height}p; "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at the start; best of {args.repeat}, each run a "
          "fresh process")
    for tag, _ in checkouts:
        for label in ("photo reference", "video source (v2v)"):
            report(f"{label}{' (' + tag + ')' if args.baseline else ''}", best[tag, label])
        share = best[tag, "video source (v2v)"]["fps"] / best[tag, "photo reference"]["fps"]
        rounds = ", ".join(f"{r:.0%}" for r in shares[tag])
        print(f"{'':<26} video source / photo reference: {share:.0%} of the speed (best runs); per round, "
              f"each pair run back to back: {rounds} (median {np.median(shares[tag]):.0%})")
    if args.baseline:
        for label in ("photo reference", "video source (v2v)"):
            print(f"{label}: new / old fps {best['new', label]['fps'] / best['old', label]['fps']:.2f}×, "
                  f"CPU ms/frame {best['old', label]['cpu_ms'] + best['old', label]['ffmpeg_cpu_ms']:.0f} → "
                  f"{best['new', label]['cpu_ms'] + best['new', label]['ffmpeg_cpu_ms']:.0f}")


if __name__ == "__main__":
    main()
