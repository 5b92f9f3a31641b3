"""Region generators' cost per frame on the CPU (ONNX Runtime, one thread): F once per reference,
D per frame (the mouth: one 64² crop; the eyes: both 48² crops in one batch), and the whole
redraw step of the fusion engine (crop, parsing map, D, paste) on a real face crop.

    PYTHONPATH=. python benchmarks/bench_regions.py [--repeat 50]

Uses the shipped weights (weights/mouth-64.onnx, weights/eyes-48.onnx); nothing hard-coded.
"""

from __future__ import annotations

import argparse

import numpy as np

from reenact import parsing, redraw, regions
from reenact.runtime import RegionRuntime
from tests import synth
from _timing import timed  # benchmarks/_timing.py (the script folder is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    crop = synth.textured(256, seed=0)
    ref_pts = synth.face(256, scale=0.95)
    target = synth.close_eyes(synth.open_mouth(ref_pts, 0.25), 0.0)
    half_closed = synth.close_eyes(ref_pts, 0.6)
    print("| net | crops per frame | F per reference (ms) | D per frame (ms) | redraw step per frame (ms) |")
    print("|---|---|---|---|---|")
    for region in ("mouth", "eyes"):
        rt = RegionRuntime(redraw.bundled(region), expect=region, threads=1)
        boxes = regions.boxes(region, target, rt.size)
        feats = [rt.appearance(b.extract(crop)) for b in boxes]
        pms = [parsing.parsing_map(b.points(target), rt.size) for b in boxes]
        warped = [b.extract(crop) for b in boxes]
        f_ms = timed(lambda: rt.appearance(warped[0]), args.repeat, warmup=3)
        d_ms = timed(lambda: rt.redraw(feats, pms, warped), args.repeat, warmup=3)
        kw = {"mouth": "generator", "eyes": "warp"} if region == "mouth" else {"mouth": "cavity", "eyes": "generator"}
        r = redraw.Redrawer(mouth_model=rt if region == "mouth" else None,
                            eyes_model=rt if region == "eyes" else None, **kw)
        ref = r.prepare(crop, half_closed if region == "eyes" else ref_pts)
        step_ms = timed(lambda: r.redraw(ref, crop, target), args.repeat, warmup=3)
        print(f"| {region} ({rt.size}²) | {len(boxes)} | {f_ms:.2f} | {d_ms:.2f} | {step_ms:.2f} |")


if __name__ == "__main__":
    main()
