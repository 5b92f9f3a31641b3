"""Quality of video-to-video (`reenact video SOURCE.mp4 DRIVER.mp4`) on the shared talking-face clips.

Usage: PYTHONPATH=. python benchmarks/v2v_quality.py [--frames 100] [--variants replace,keep,resting,photo]
       [--engine fusion] [--mouth-weights M.onnx] [--eyes-weights E.onnx] [--preset P] [--json OUT.json]

Pairs (../shared/data/clips/pcavs-vox2, 224×224 at 25 fps): *self-reenactment* — a speaker's
clip driven by the same speaker's other clip (speakers 7414… and 5176…, both directions) — and
*cross-identity* pairs of different speakers; `--pairs heldout`: 7 cross pairs of 7 other people
(a ring), kept out of every choice of settings. Each driver is cut to its first `--frames` frames
(every source is longer, so nothing plays backward). Variants: `replace` and `keep`
(`--source-expression`), `resting` (`replace --resting`), and `photo`: the photo-reference path with the source's first frame as
the photo (a baseline for identity and mouth correlation; its pose follows the driver, so its
pose error and background are not comparable). Per pair, on the rendered video:

  identity   SFace cosine of output frame i to the source frame it was made from (every 5th frame)
  mouth r    Pearson correlation of the output's mouth opening with the driver's, over the frames
             (landmarks detected afresh on the output); `src r`: the same for the unchanged
             source (what the correlation is without any transfer)
  pose err   mean |Δyaw|, |Δpitch|, |Δroll| (degrees) of the output's head against the SOURCE frame's
  bg PSNR    dB between output and source frame outside the source face's crop square (the area
             the engine renders into; nothing outside it may change), mean over frames; `codec`:
             the same for the source merely re-encoded as the output is (H.264 at the writer's
             settings), i.e. what the encoding alone costs
  jitter     landmark jitter (`temporal.stability`, % of the eye-corner distance) of the output,
             and of the source's own frames in the same order
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _clips import SHARED, cut, detect_all  # noqa: E402

from reenact import align, media, temporal, video  # noqa: E402
from reenact import geometry as g  # noqa: E402
from reenact.config import InferenceConfig, MotionConfig, VideoOptions  # noqa: E402
from reenact.engines import default_engine  # noqa: E402
from reenact.evaluate.metrics import IdentityScorer, identity_similarity, pearson, pose_error, psnr  # noqa: E402
from reenact.expression import expression_descriptor  # noqa: E402
from reenact.v2v import Downscaled, Timeline  # noqa: E402

VOX = SHARED / "clips" / "pcavs-vox2"
SELF = [("Audio_Source/741400104.mp4", "Pose_Source/741400163.mp4"),
        ("Pose_Source/741400163.mp4", "Audio_Source/741400104.mp4"),
        ("Pose_Source/517600055.mp4", "Pose_Source/517600078"),
        ("Pose_Source/517600078", "Pose_Source/517600055.mp4")]
CROSS = [("Audio_Source/741400104.mp4", "Pose_Source/517600055.mp4"),
         ("Pose_Source/517600055.mp4", "Audio_Source/741400104.mp4"),
         ("Input/00098.mp4", "Audio_Source/681100216.mp4"),
         ("Audio_Source/681100216.mp4", "Input/00098.mp4"),
         ("Pose_Source/796100172.mp4", "Pose_Source/00473.mp4"),
         ("Pose_Source/00473.mp4", "Pose_Source/796100172.mp4")]
# Held out: clips of 7 other people that no setting was chosen on, a ring of cross pairs (for
# checking that a change measured on the pairs above generalises; `--pairs heldout`).
_RING = ["Audio_Source/00015.mp4", "Audio_Source/00086.mp4", "Audio_Source/00373.mp4", "Input/00002.mp4",
         "Input/00010.mp4", "Pose_Source/620900105.mp4", "Pose_Source/731200067.mp4"]
HELDOUT = [(s, _RING[(k + 1) % len(_RING)]) for k, s in enumerate(_RING)]
MOUTH = 2  # mouth_open in expression_descriptor


def frames_of(path: Path, fps: float | None = None) -> list[np.ndarray]:
    with Downscaled(path, fps, InferenceConfig().max_side) as src:
        return list(src)


def landmarks(frames: list[np.ndarray]) -> list[np.ndarray | None]:
    from reenact.landmarks import Landmarker

    with Landmarker(mode="video", max_faces=1) as lm:
        return [(f[0].points.astype(np.float64) if (f := lm.detect(x)) else None) for x in frames]


def measure(source: Path, driver: Path, out: Path, scorer: IdentityScorer) -> dict:
    """The metrics of one render; `source` may be a photo (the photo-reference path, a baseline)."""
    outs = frames_of(out)
    srcs = [media.read_image(source)] if source.suffix == ".png" else frames_of(source, 25.0 if source.is_dir() else None)
    out_pts, src_pts, drv_pts = detect_all(out), landmarks(srcs), detect_all(driver)
    fps = 25.0
    tl = Timeline.build(len(srcs), fps, len(drv_pts), fps, "driver")
    n = min(len(outs), tl.frames)
    ok = [i for i in range(n) if out_pts[i] is not None and src_pts[tl.source(i)] is not None
          and drv_pts[tl.driver(i)] is not None]
    ident = [identity_similarity(scorer.embed(outs[i], out_pts[i]),
                                 scorer.embed(srcs[tl.source(i)], src_pts[tl.source(i)])) for i in ok[::5]]
    mouth = lambda p: expression_descriptor(p)[MOUTH]  # noqa: E731
    m_out = [mouth(out_pts[i]) for i in ok]
    m_drv = [mouth(drv_pts[tl.driver(i)]) for i in ok]
    m_src = [mouth(src_pts[tl.source(i)]) for i in ok]
    pose = np.mean([pose_error(out_pts[i], src_pts[tl.source(i)]) for i in ok], axis=0)
    coded = reencoded(srcs, out.parent / "control.mp4")  # the source through the output's encoder only
    bg, bg_control = [], []
    for i in range(n):
        p = src_pts[tl.source(i)]
        if p is None:
            continue
        mask = np.ones(outs[i].shape[:2], np.float32)
        corners = align.align(p, 256).points_to_frame(np.array([[0, 0], [256, 0], [0, 256], [256, 256]], float))
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
        x1, y1 = np.maximum(np.ceil(corners.max(0)).astype(int), 0)
        mask[y0:y1, x0:x1] = 0
        if mask.sum() > 0:
            bg.append(psnr(outs[i], srcs[tl.source(i)], mask))
            bg_control.append(psnr(coded[tl.source(i)], srcs[tl.source(i)], mask))
    return {"frames": n, "measured": len(ok), "identity": float(np.mean(ident)),
            "mouth_r": pearson(m_out, m_drv), "source_mouth_r": pearson(m_src, m_drv),
            "pose_err": [round(float(v), 3) for v in pose], "bg_psnr": float(np.mean(bg)) if bg else None,
            "bg_frames": len(bg), "bg_psnr_codec_only": float(np.mean(bg_control)) if bg_control else None,
            "jitter": temporal.stability(out_pts[:n]).jitter,
            "source_jitter": temporal.stability([src_pts[tl.source(i)] for i in range(n)]).jitter,
            "rigid_jitter": rigid_jitter(out_pts[:n]),
            "source_rigid_jitter": rigid_jitter([src_pts[tl.source(i)] for i in range(n)])}


def reencoded(frames: list[np.ndarray], path: Path) -> list[np.ndarray]:
    """`frames` encoded as `reenact video` encodes its output (its default preset), decoded."""
    h, w = frames[0].shape[:2]
    with media.VideoWriter(path, fps=25, size=(w, h), preset=VideoOptions.preset, overwrite=True) as writer:
        for f in frames:
            writer.write(f)
    return frames_of(path)


def rigid_jitter(points: list[np.ndarray | None]) -> float:
    """Jitter of the rigid landmarks only (nose, forehead, face sides, eye corners: what the
    transfer does not move, so the output's should be the source's)."""
    rigid = list(g.RIGID)
    corners = rigid.index(33), rigid.index(263)
    return temporal.stability([None if p is None else p[rigid] for p in points],
                              scale=lambda q: float(np.linalg.norm(q[corners[0], :2] - q[corners[1], :2]))).jitter


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--variants", default="replace,keep")
    ap.add_argument("--engine", default=default_engine())
    ap.add_argument("--regions", default="mouth,eyes,brows")
    ap.add_argument("--mouth-weights", help="exported mouth generator (default: the bundled one)")
    ap.add_argument("--eyes-weights", help="exported eye generator (default: the bundled one)")
    ap.add_argument("--pairs", default="self,cross")
    ap.add_argument("--preset", default=VideoOptions.preset, help="x264 preset of the outputs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    scorer = IdentityScorer(threads=1)
    rows = []
    pairs = ([("self", p) for p in SELF if "self" in args.pairs] + [("cross", p) for p in CROSS if "cross" in args.pairs]
             + [("heldout", p) for p in HELDOUT if "heldout" in args.pairs])
    with tempfile.TemporaryDirectory() as tmp:
        for kind, (s, d) in pairs:
            source, drv_full = VOX / s, VOX / d
            driver = Path(tmp) / f"{Path(d).stem}-cut.mp4"
            if not driver.exists():
                if drv_full.is_dir():  # a frame folder: encode its first frames
                    with media.VideoWriter(driver, fps=25, size=(224, 224)) as w:
                        for f in frames_of(drv_full, 25.0)[:args.frames]:
                            w.write(f)
                else:
                    cut(drv_full, driver, args.frames)
            for variant in args.variants.split(","):
                out = Path(tmp) / "out.mp4"
                reference = source
                if variant == "photo":  # baseline: the photo path, the source's first frame as the photo
                    reference = Path(tmp) / f"{Path(s).stem}.png"
                    media.write_image(reference, frames_of(source, 25.0 if source.is_dir() else None)[0], overwrite=True)
                options = VideoOptions(reference_frames=source.is_dir() and variant != "photo",
                                       source_expression="keep" if variant == "keep" else "replace",
                                       resting=variant == "resting", preset=args.preset,
                                       motion=MotionConfig(regions=tuple(args.regions.split(","))))
                t0 = time.perf_counter()
                video.reenact_video(reference, driver, out, InferenceConfig(engine=args.engine, mouth_weights=args.mouth_weights,
                                                                    eyes_weights=args.eyes_weights),
                                    options=options,
                                    overwrite=True)
                wall = time.perf_counter() - t0
                m = measure(reference, driver, out, scorer)
                row = {"kind": kind, "source": Path(s).stem, "driver": Path(d).stem, "variant": variant,
                       "seconds": round(wall, 1), **m}
                rows.append(row)
                print(f"{kind:5} {row['source']:>10} <- {row['driver']:<10} {variant:7} id {m['identity']:.3f}  "
                      f"mouth r {_f(m['mouth_r'])} (src {_f(m['source_mouth_r'])})  pose err "
                      f"{'/'.join(f'{v:.2f}' for v in m['pose_err'])}  bg {_f(m['bg_psnr'])} dB (codec {_f(m['bg_psnr_codec_only'])})  jitter "
                      f"{m['jitter']:.3f} (src {m['source_jitter']:.3f}) rigid {m['rigid_jitter']:.3f} "
                      f"(src {m['source_rigid_jitter']:.3f})  {m['frames']} fr {wall:.0f} s", flush=True)
    print("\nmeans (kind, variant): identity, mouth r, source mouth r, yaw/pitch/roll err, bg PSNR, jitter "
          "(all landmarks; rigid ones) vs the source's")
    for kind in ("self", "cross", "heldout"):
        for variant in args.variants.split(","):
            sel = [r for r in rows if r["kind"] == kind and r["variant"] == variant]
            if not sel:
                continue
            mean = lambda k: float(np.mean([r[k] for r in sel if r[k] is not None]))  # noqa: E731
            pe = np.mean([r["pose_err"] for r in sel], axis=0)
            print(f"{kind:5} {variant:7} n={len(sel)}  id {mean('identity'):.3f}  mouth r {mean('mouth_r'):.3f}  "
                  f"src r {mean('source_mouth_r'):.3f}  pose {pe[0]:.2f}/{pe[1]:.2f}/{pe[2]:.2f}°  "
                  f"bg {mean('bg_psnr'):.1f} dB (codec only {mean('bg_psnr_codec_only'):.1f})  jitter {mean('jitter'):.3f} vs {mean('source_jitter'):.3f}; "
                  f"rigid {mean('rigid_jitter'):.3f} vs {mean('source_rigid_jitter'):.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
