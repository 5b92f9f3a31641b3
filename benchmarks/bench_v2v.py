"""Speed of video-to-video (`reenact video SOURCE.mp4 DRIVER.mp4`) next to the photo-reference path.

Usage: PYTHONPATH=. python benchmarks/bench_v2v.py [--source CLIP] [--driver DRIVER.mp4]
       [--height 720] [--engine fusion] [--repeat 2]

The source: the first frames of CLIP (default: the Pexels clip in ../shared/data/samples/pyfeat,
640×360, scaled to --height, i.e. 1280×720 — upscaled, so the face is as large as in a 720p
shot), as many as the driver has (nothing plays backward). The photo path: frame 0 of that
720p source as the reference photo. Both are driven by the same driver (default
examples/drive.mp4, 120 frames) with the same engine, through the library call the CLI makes,
and write a 720p video. Prints ms per frame per stage and end-to-end fps (including start-up
and both passes); each configuration runs --repeat times, alternating, and the best run counts
(the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from reenact import media, video
from reenact.config import InferenceConfig
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


def run(reference: Path, driver: Path, cfg: InferenceConfig, folder: Path) -> tuple[float, video.VideoSummary]:
    t0 = time.perf_counter()
    s = video.reenact_video(reference, driver, folder / "out.mp4", cfg, overwrite=True)
    return time.perf_counter() - t0, s


def report(label: str, wall: float, s: video.VideoSummary) -> float:
    n = max(s.frames, 1)
    stages = "  ".join(f"{k} {1000 * v / n:.1f}" for k, v in sorted(s.seconds.items(), key=lambda kv: -kv[1]))
    print(f"{label:<22} {s.frames} frames {s.size[0]}x{s.size[1]}: {n / wall:5.1f} fps end to end "
          f"({wall:.1f} s)\n{'':<22} ms/frame: {stages}")
    return n / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=PEXELS)
    ap.add_argument("--driver", type=Path, default=REPO / "examples" / "drive.mp4")
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--engine", default=default_engine())
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    cfg = InferenceConfig(engine=args.engine)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source, photo = prepare(args.source, args.driver, args.height, folder)
        best: dict[str, tuple[float, video.VideoSummary]] = {}
        for _ in range(args.repeat):
            for label, ref in (("photo reference", photo), ("video source (v2v)", source)):
                wall, s = run(ref, args.driver, cfg, folder)
                if label not in best or wall < best[label][0]:
                    best[label] = (wall, s)
    print(f"engine {args.engine}, driver {args.driver.name}, source {args.source.name} at {args.height}p; "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at the start")
    fps = {label: report(label, *best[label]) for label in best}
    print(f"video source / photo reference: {fps['video source (v2v)'] / fps['photo reference']:.0%} of the speed")


if __name__ == "__main__":
    main()
