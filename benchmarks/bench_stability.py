"""Temporal stability and expression fidelity of `reenact video`, smoothing on vs off.

Usage: python benchmarks/bench_stability.py [--ref REF] [--frames 250] [--motion relative] [CLIP ...]

For each driver clip (default: five shared talking-face clips, first --frames frames) the
reference is rendered (relative motion unless --motion absolute), with smoothing on and off. The output face is
re-detected in every frame with the video landmarker, and reported next to the driver's own:

* jitter: mean |p(t+1) − 2p(t) + p(t−1)| of the 478 landmarks (`reenact.temporal.stability`),
  and displacement: mean |p(t) − p(t−1)|; both in % of the face's eye-corner distance;
* expression error: mean |Δ| between the output's and the driver's `reenact.expression.expression_descriptor`
  (lid openings per eye width; mouth opening and width, brow heights per eye-corner distance),
  each mean-centred over the clip so that the constant difference between the two faces
  (identity, and the anchor offset of relative motion) drops out; in %.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _clips import REPO, SHARED, cut, detect_all, render  # noqa: E402

from reenact import temporal  # noqa: E402
from reenact.expression import expression_descriptor  # noqa: E402

CLIPS = [SHARED / "clips/tpsmm/driving.mp4", SHARED / "clips/lia-vox/driving2.mp4",
         SHARED / "clips/pcavs-vox2/Audio_Source/741400104.mp4",
         SHARED / "samples/pyfeat/WolfgangLanger_Pexels.mp4", REPO / "examples/drive.mp4"]
GROUPS = {"eyes": [0, 1], "mouth": [2, 3], "brows": [4, 5]}


def expression_error(out: list, drv: list) -> dict[str, float]:
    pairs = [(o, d) for o, d in zip(out, drv) if o is not None and d is not None]
    fo = np.array([expression_descriptor(o) for o, _ in pairs])
    fd = np.array([expression_descriptor(d) for _, d in pairs])
    diff = np.abs((fo - fo.mean(0)) - (fd - fd.mean(0)))
    return {"all": 100 * diff.mean(), **{k: 100 * diff[:, v].mean() for k, v in GROUPS.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", type=Path, default=CLIPS)
    ap.add_argument("--ref", type=Path, default=SHARED / "clips/lia-vox/macron.png")
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--motion", default="relative", choices=("relative", "absolute"))
    args = ap.parse_args()
    print(f"reference {args.ref.name}; {args.motion} motion; values in % of the eye-corner distance")
    print(f"{'clip':<28}{'frames':>7} | {'jitter: driver':>14} {'off':>6} {'on':>6} | "
          f"{'displ.: driver':>14} {'off':>6} {'on':>6} | {'expr. err off':>13} {'on':>6} "
          f"| mouth off/on | eyes off/on")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in args.clips:
            driver = cut(clip, Path(tmp) / f"{clip.stem}.mp4", args.frames)
            drv = detect_all(driver)
            res = {}
            for smooth in (False, True):
                out = Path(tmp) / f"{clip.stem}-{smooth}.mp4"
                render(args.ref, driver, out, mode=args.motion, smooth=smooth)
                o = detect_all(out)
                res[smooth] = (temporal.stability(o), expression_error(o, drv), sum(x is None for x in o))
            sd = temporal.stability(drv)
            (s0, e0, m0), (s1, e1, m1) = res[False], res[True]
            rows.append((sd.jitter, s0.jitter, s1.jitter, sd.displacement, s0.displacement, s1.displacement,
                         e0["all"], e1["all"], e0["mouth"], e1["mouth"], e0["eyes"], e1["eyes"]))
            r = rows[-1]
            print(f"{clip.name:<28}{len(drv):>7} | {r[0]:>14.2f} {r[1]:>6.2f} {r[2]:>6.2f} | {r[3]:>14.2f} "
                  f"{r[4]:>6.2f} {r[5]:>6.2f} | {r[6]:>13.2f} {r[7]:>6.2f} | {r[8]:5.2f}/{r[9]:5.2f} | "
                  f"{r[10]:5.2f}/{r[11]:5.2f}" + (f"  (output face lost in {m0}/{m1} frames)" if m0 or m1 else ""),
                  flush=True)
    m = np.mean(rows, axis=0)
    print(f"{'mean':<35} | {m[0]:>14.2f} {m[1]:>6.2f} {m[2]:>6.2f} | {m[3]:>14.2f} {m[4]:>6.2f} {m[5]:>6.2f} | "
          f"{m[6]:>13.2f} {m[7]:>6.2f} | {m[8]:5.2f}/{m[9]:5.2f} | {m[10]:5.2f}/{m[11]:5.2f}")


if __name__ == "__main__":
    main()
