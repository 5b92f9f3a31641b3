"""Build `reenact/assets/canonical_face.npz`: a frontal, symmetric mean face-mesh shape.

Usage: python tools/make_canonical_face.py ../shared/data/celeba-id [--limit 1500]

Steps: mediapipe landmarks (478×3) of the train-split photos → generalised Procrustes alignment
(rotation, scale, translation) → mean shape → rotated into a frame where the face is frontal
(x from the subject's right eye to left eye, y from the eyes down to the mouth, z into the image)
→ each point's left-right mirror partner found by reflection → symmetrised by averaging with its
mirror → centred and scaled so the outer eye corners are 1 unit apart.

The result is a statistic (a mean of landmark coordinates), not an image; provenance is written
into the npz (`source`) and into reenact/assets/PROVENANCE.md.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np

from reenact import geometry
from reenact.landmarks import Landmarker


def collect(root: Path, limit: int) -> np.ndarray:
    rows = [r for r in csv.DictReader(open(root / "identities.csv")) if r["split"] == "train"]
    rows = rows[:: max(1, len(rows) // limit)][:limit]
    shapes = []
    with Landmarker(mode="image", max_faces=1) as lm:
        for r in rows:
            img = cv2.imread(str(root / "images" / r["file"]))
            faces = lm.detect(np.ascontiguousarray(img[:, :, ::-1])) if img is not None else []
            if faces:
                shapes.append(faces[0].points.astype(np.float64))
    return np.stack(shapes)


def procrustes_mean(shapes: np.ndarray, iters: int = 5) -> np.ndarray:
    mean = shapes[0]
    for _ in range(iters):
        aligned = [geometry.fit_similarity(s, mean).apply(s) for s in shapes]
        mean = np.mean(aligned, 0)
        mean = (mean - mean.mean(0)) / np.sqrt(((mean - mean.mean(0)) ** 2).sum(1).mean())
    return mean


def frontalise(mean: np.ndarray) -> np.ndarray:
    r_eye = mean[list(geometry.RIGHT_EYE)].mean(0)
    l_eye = mean[list(geometry.LEFT_EYE)].mean(0)
    mouth = mean[list(geometry.LIPS_OUTER)].mean(0)
    x = l_eye - r_eye
    x /= np.linalg.norm(x)
    y = mouth - (l_eye + r_eye) / 2
    y -= x * (x @ y)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    rot = np.stack([x, y, z])  # rows: new axes
    return (mean - mean.mean(0)) @ rot.T


def mirror_map(pts: np.ndarray) -> np.ndarray:
    reflected = pts * np.array([-1.0, 1.0, 1.0])
    d = ((reflected[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    mirror = d.argmin(1)
    # The map must be an involution; report points where it is not.
    bad = np.nonzero(mirror[mirror] != np.arange(len(pts)))[0]
    if len(bad):
        print(f"warning: {len(bad)} points have a non-reciprocal mirror partner: {bad[:10]}")
    return mirror


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("celeba_root", type=Path)
    ap.add_argument("--limit", type=int, default=1500)
    ap.add_argument("-o", "--out", type=Path, default=Path("reenact/assets/canonical_face.npz"))
    args = ap.parse_args()
    shapes = collect(args.celeba_root, args.limit)
    print(f"landmarks from {len(shapes)} photos")
    front = frontalise(procrustes_mean(shapes))
    mirror = mirror_map(front)
    sym = (front + front[mirror] * np.array([-1.0, 1.0, 1.0])) / 2
    sym -= sym.mean(0)
    sym /= np.linalg.norm(sym[33] - sym[263])
    np.savez_compressed(args.out, points=sym.astype(np.float32), mirror=mirror.astype(np.int16),
                        source=f"mean of {len(shapes)} CelebA train-split photos (celeba-id), "
                               "mediapipe 0.10.21 face mesh; tools/make_canonical_face.py")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
