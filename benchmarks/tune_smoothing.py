"""Tune the One-Euro smoothing (`reenact.temporal.SMOOTHING`) where the truth is known.

Usage: python benchmarks/tune_smoothing.py [--seconds 20] [--fps 25] [--seed 0]

Real tracks have no ground truth, so a synthetic talking head is built from the canonical face
(`tests/synth.py`): slow head motion (yaw ±15°, pitch ±6°, roll ±4°, drifting position), speech-like
mouth opening (band-limited noise, 1–6 Hz, 0–0.3 eye-corner distances, opening within ~3
frames), blinks (lids closed over 2–3 frames). Detector-like noise is added with the size measured
on the shared clips' raw tracks: a rigid shake of the whole mesh (shift 0.35 %, rotation 0.25°,
scale 0.3 %) and independent per-point noise (0.25 % of the eye-corner distance per coordinate).

For a grid of settings it prints: jitter (mean second difference, % eye-corner distance) next to
the truth's and the noisy input's, and the RMS error against the truth of the landmarks, of the
mouth aperture and of the eye aperture (all in % of the eye-corner distance).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reenact import geometry as g  # noqa: E402
from reenact import temporal  # noqa: E402
from tests import synth  # noqa: E402


def band_noise(rng, n: int, fps: float, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / fps)
    spec[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n)
    return x / np.abs(x).max()


def talking_head(seconds: float, fps: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    n = round(seconds * fps)
    t = np.arange(n) / fps
    mouth = np.clip(0.15 + 0.15 * band_noise(rng, n, fps, 1.0, 6.0), 0, 0.3)
    blink = np.zeros(n)
    for start in rng.choice(n - 6, size=max(1, int(seconds / 3)), replace=False):
        blink[start:start + 5] = [0.5, 1.0, 1.0, 0.6, 0.2]
    frames = []
    for i in range(n):
        p = synth.face(400, yaw=15 * np.sin(2 * np.pi * 0.23 * t[i]), pitch=6 * np.sin(2 * np.pi * 0.41 * t[i]),
                       roll=4 * np.sin(2 * np.pi * 0.17 * t[i]),
                       shift=(20 * np.sin(2 * np.pi * 0.11 * t[i]), 10 * np.sin(2 * np.pi * 0.29 * t[i])))
        frames.append(synth.close_eyes(synth.open_mouth(p, mouth[i]), blink[i]))
    return frames


def noisy(frames: list[np.ndarray], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    out = []
    for p in frames:
        fit = g.fit_head(p)
        s = fit.scale
        rot = g.pose_to_rotation(g.HeadPose(*rng.normal(0, 0.25, 3)))
        centre = p.mean(0)
        q = (p - centre) @ rot.T * (1 + rng.normal(0, 0.003)) + centre
        q[:, :2] += rng.normal(0, 0.0035 * s, 2) + rng.normal(0, 0.0025 * s, (len(p), 2))
        out.append(q)
    return out


def aperture(p: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(p[a, :2] - p[b, :2]) / np.linalg.norm(p[33, :2] - p[263, :2]))


def score(est: list[np.ndarray], truth: list[np.ndarray]) -> tuple[float, ...]:
    s = np.array([g.face_scale(p) for p in truth])
    pts = np.mean([np.sqrt(((e[:, :2] - t[:, :2]) ** 2).sum(1).mean()) / k for e, t, k in zip(est, truth, s)])
    mouth = np.sqrt(np.mean([(aperture(e, 13, 14) - aperture(t, 13, 14)) ** 2 for e, t in zip(est, truth)]))
    eye = np.sqrt(np.mean([(aperture(e, 159, 145) - aperture(t, 159, 145)) ** 2 for e, t in zip(est, truth)]))
    return temporal.stability(est).jitter, 100 * pts, 100 * mouth, 100 * eye


def smooth(frames: list[np.ndarray], fps: float, settings: dict) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp, temporal.FrameFile(Path(tmp) / "o", mode="w") as out, \
            temporal.FrameFile(Path(tmp) / "w", (temporal.PARAMS,), mode="w") as work:
        temporal.smooth_sequence(iter(frames), fps, work, out, settings)
        return [out[i].astype(np.float64) for i in range(len(frames))]


# (pose min cut-off, shape min cut-off, shape beta, shape speed cut-off)
GRID = [(p, fc, b, dc) for p in (0.5, 1.5) for fc, b in ((1.0, 6), (2.0, 50), (2.0, 100), (4.0, 100), (1000.0, 0))
        for dc in (1.0, 8.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--fps", type=float, default=25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    truth = talking_head(args.seconds, args.fps, args.seed)
    raw = noisy(truth, args.seed)
    print(f"truth jitter {temporal.stability(truth).jitter:.3f}")
    print("setting                                   jitter  points  mouth   eye   (RMS error, % eye-corner distance)")
    print(f"{'no smoothing':<42}" + "  ".join(f"{v:6.3f}" for v in score(raw, truth)))
    print(f"{'default (temporal.SMOOTHING)':<42}" + "  ".join(f"{v:6.3f}" for v in score(smooth(raw, args.fps, temporal.SMOOTHING), truth)))
    for pose_fc, shape_fc, shape_beta, shape_dc in GRID:
        settings = dict(temporal.SMOOTHING, rotation=temporal.OneEuro(pose_fc, 3.0),
                        translation=temporal.OneEuro(pose_fc, 2.0),
                        shape=temporal.OneEuro(shape_fc, shape_beta, shape_dc))
        label = f"pose {pose_fc} Hz, shape {shape_fc} Hz + {shape_beta}·v (dv {shape_dc} Hz)"
        print(f"{label:<42}" + "  ".join(f"{v:6.3f}" for v in score(smooth(raw, args.fps, settings), truth)), flush=True)


if __name__ == "__main__":
    main()
