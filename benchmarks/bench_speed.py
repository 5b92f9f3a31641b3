"""Before/after speed of `reenact video` in one run: this checkout against another one.

Usage: python benchmarks/bench_speed.py --baseline DIR [--ref REF] [--driver DRIVER] [--frames 120]
                                        [--scenarios 2mp,4k,256] [--engines fusion,warp] [--rounds 1]

DIR is another checkout of the project (e.g. `git worktree add /tmp/old main`, or `git archive
COMMIT | tar -x -C DIR`). The inputs of each scenario (`reenact.evaluate.bench.SCENARIOS`: a ~2 MP
reference with a 512² driver, a 3840×2160 reference with a 1080p driver, everything at 256²) are
made once from REF and DRIVER (default: the bundled examples); then every (scenario, engine) is
rendered by both checkouts, alternately (the order flips every round), each in a fresh process,
so both see the same machine load. Per run: the stage times (ms per frame, wall), end-to-end fps,
CPU ms per frame of the Python process and of its ffmpeg children, and the peak resident memory
(the Python process plus its largest ffmpeg child). The last column is new / old for fps.

On a shared machine the wall-clock numbers move with the load; the CPU times move much less.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reenact.evaluate import bench  # noqa: E402

# Runs in the checkout under test: only APIs that old checkouts have too.
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from reenact import video
from reenact.config import InferenceConfig
ref, drv, out, engine = sys.argv[1:5]
def cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime, b.ru_utime + b.ru_stime
t0, c0 = time.perf_counter(), cpu()
s = video.reenact_video(ref, drv, out, InferenceConfig(engine=engine), overwrite=True)
wall, c1 = time.perf_counter() - t0, cpu()
n = max(s.frames, 1)
print(json.dumps({"frames": s.frames, "size": list(s.size), "fps": s.frames / wall,
                  "stages": {k: 1000 * v / n for k, v in s.seconds.items()},
                  "cpu_ms": 1000 * (c1[0] - c0[0]) / n, "ffmpeg_cpu_ms": 1000 * (c1[1] - c0[1]) / n,
                  "peak_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                               + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024}))
"""


def measure(checkout: Path, ref: Path, drv: Path, out: Path, engine: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    r = subprocess.run([sys.executable, "-c", CHILD, str(ref), str(drv), str(out), engine], cwd=checkout,
                       env=env, capture_output=True, text=True, check=False)
    if r.returncode:
        raise SystemExit(f"{checkout}: failed\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def inputs(ref: Path, driver: Path, folder: Path, frames: int, name: str) -> tuple[Path, Path]:
    sc = bench.SCENARIOS[name]
    if sc.image:
        ref_png, _, drv_mp4, _ = bench.prepare_inputs(ref, driver, folder, frames)
        return ref_png, drv_mp4
    ref_png, drv_mp4, _ = bench.prepare_scenario(ref, driver, folder, frames, sc)
    return ref_png, drv_mp4


def line(label: str, m: dict, stages: list[str], ratio: str = "") -> str:
    cols = "  ".join(f"{m['stages'].get(s, 0):6.1f}" for s in stages)
    return (f"{label:<22} {cols}  {m['fps']:6.1f}  {m['cpu_ms']:6.0f} + {m['ffmpeg_cpu_ms']:4.0f}"
            f"  {m['peak_mib']:7.0f}  {ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True, help="the other checkout (old code)")
    ap.add_argument("--ref", type=Path, default=REPO / "examples" / "ref.jpg")
    ap.add_argument("--driver", type=Path, default=REPO / "examples" / "drive.mp4")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--scenarios", default="2mp,4k,256")
    ap.add_argument("--engines", default="fusion,warp")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    stages = ["landmarks", "decode", "retarget", "render", "paste", "encode", "join"]
    head = "  ".join(f"{s[:6]:>6}" for s in stages)
    print(f"{'':<22} {head}     fps  CPU ms self+ffmpeg  peak MiB  new/old fps")
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        folder = Path(tmp)
        for name in args.scenarios.split(","):
            ref, drv = inputs(args.ref, args.driver, folder, args.frames, name)
            for engine in args.engines.split(","):
                for rnd in range(args.rounds):
                    order = [("old", args.baseline), ("new", REPO)][:: -1 if rnd % 2 else 1]
                    got = {tag: measure(path, ref, drv, folder / "out.mp4", engine) for tag, path in order}
                    size = "×".join(map(str, got["new"]["size"]))
                    for tag in ("old", "new"):
                        ratio = f"{got['new']['fps'] / got['old']['fps']:.2f}×" if tag == "new" else ""
                        print(line(f"{name} {engine} {tag}", got[tag], stages, ratio), flush=True)
                print(f"{'':<22} ({size} output, {got['new']['frames']} frames)")


if __name__ == "__main__":
    main()
