"""Peak memory of `reenact video` versus video length (it must not grow with length).

Usage: python benchmarks/bench_memory.py DRIVER.mp4 [--ref REF.jpg|SOURCE.mp4] [--seconds 10 120] [-- OPTIONS]

Cuts the driver to each length with ffmpeg (looping it when it is shorter; stream copy is not
frame-exact, so it re-encodes), runs `python -m reenact video` (two passes, chunks, relative
motion and smoothing by default; extra OPTIONS after `--` are passed on) in a fresh process for
each and reports the child's peak resident memory (ru_maxrss), wall time, and the difference
between the largest and the smallest peak. A video as --ref (video-to-video) is cut to each
length the same way, so both inputs grow.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reenact import media

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """Run `cmd` in a child process; return (its peak RSS in MiB, wall seconds)."""
    script = ("import resource,subprocess,sys,json;"
              "r=subprocess.run(sys.argv[1:],capture_output=True);"
              "print(json.dumps([r.returncode,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]));"
              "sys.stderr.write(r.stderr.decode()[-500:] if r.returncode else '')")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script, *cmd], capture_output=True, text=True, check=True)
    code, kib = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 (our own json list)
    if code:
        raise SystemExit(f"reenact failed: {out.stderr}")
    return kib / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("driver", type=Path)
    ap.add_argument("--ref", type=Path, default=REPO / "examples" / "ref.jpg")
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 120])
    ap.add_argument("options", nargs="*", help="extra `reenact video` options (after --)")
    args = ap.parse_args()
    info = media.probe_video(args.driver)
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        for sec in args.seconds:
            cut = Path(tmp) / f"cut{sec:g}.mp4"
            subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(args.driver),
                            "-t", str(sec), "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", str(cut)],
                           check=True)
            frames = sum(1 for _ in media.VideoReader(cut))
            ref = args.ref
            if media.media_kind(ref) == "video":
                ref = Path(tmp) / f"source{sec:g}.mp4"
                subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(args.ref),
                                "-t", str(sec), "-c:v", "libx264", "-preset", "veryfast", "-an", str(ref)], check=True)
            mb, wall = peak_rss_mb([sys.executable, "-m", "reenact", "video", str(ref), str(cut),
                                    "-o", str(Path(tmp) / f"out{sec:g}.mp4"), *args.options])
            peaks.append(mb)
            print(f"{sec:6.1f} s  {frames:5d} frames ({info.width}x{info.height})  peak RSS {mb:7.1f} MiB  "
                  f"wall {wall:6.1f} s", flush=True)
    print(f"largest vs smallest peak: {100 * (max(peaks) - min(peaks)) / min(peaks):+.1f} %")


if __name__ == "__main__":
    main()
