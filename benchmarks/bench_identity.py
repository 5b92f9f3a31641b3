"""Identity kept by `reenact video`: relative vs absolute motion on cross-identity pairs.

Usage: python benchmarks/bench_identity.py [--frames 75] [--every 3]

Each reference photo (lia-vox sources and CelebA-id test photos, none of them a driver's person)
is animated by each shared driver clip (first --frames frames) with --motion relative and
--motion absolute (smoothing on for both). In every --every-th output frame the face is found
again, aligned to SFace's 112×112 template and embedded; the score is the SFace cosine to the
reference photo's own embedding (1 = same picture; > 0.363 = same person by OpenCV's threshold).
Prints per pair and the mean, and on how many pairs relative beats absolute.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _clips import REPO, SHARED, cut, render  # noqa: E402

from reenact import media  # noqa: E402
from reenact.auxnets import sface  # noqa: E402
from reenact.landmarks import Landmarker  # noqa: E402

DRIVERS = [SHARED / "clips/tpsmm/driving.mp4", SHARED / "clips/lia-vox/driving2.mp4",
           SHARED / "clips/pcavs-vox2/Audio_Source/741400104.mp4", REPO / "examples/drive.mp4"]


def references(n_celeba: int) -> list[Path]:
    refs = [SHARED / "clips/lia-vox" / f for f in ("macron.png", "taylor.png", "monroe.png")]
    rows = list(csv.DictReader((SHARED / "celeba-id/identities.csv").open()))
    seen: set[str] = set()
    for r in rows:
        if r["split"] == "test" and r["identity"] not in seen and len(seen) < n_celeba:
            seen.add(r["identity"])
            refs.append(SHARED / "celeba-id/images" / r["file"])
    return refs


def embed_faces(model: sface.SFaceONNX, frames: list[np.ndarray], lm: Landmarker) -> np.ndarray:
    aligned = []
    for f in frames:
        faces = lm.detect(f)
        if faces:
            aligned.append(sface.align_112(f, sface.five_points_from_mesh(faces[0].points)))
    return model.embed(np.stack(aligned)) if aligned else np.zeros((0, 128), np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=75)
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--celeba", type=int, default=2, help="CelebA-id test identities to add as references")
    args = ap.parse_args()
    model = sface.SFaceONNX(device="cpu")
    scores = {"relative": [], "absolute": []}
    print(f"{'reference':<18}{'driver':<22}{'relative':>9}{'absolute':>9}")
    with tempfile.TemporaryDirectory() as tmp, Landmarker(mode="image") as lm:
        drivers = [cut(d, Path(tmp) / f"drv-{d.stem}.mp4", args.frames) for d in DRIVERS]
        for ref in references(args.celeba):
            ref_emb = embed_faces(model, [media.read_image(ref)], lm)
            for drv in drivers:
                row = {}
                for mode in scores:
                    out = Path(tmp) / f"{ref.stem}-{drv.stem}-{mode}.mp4"
                    render(ref, drv, out, mode=mode)
                    frames = [f for i, f in enumerate(media.VideoReader(out)) if i % args.every == 0]
                    row[mode] = float(np.mean(sface.cosine(embed_faces(model, frames, lm), ref_emb[0])))
                    scores[mode].append(row[mode])
                print(f"{ref.stem:<18}{drv.stem[4:]:<22}{row['relative']:>9.3f}{row['absolute']:>9.3f}", flush=True)
    rel, ab = np.array(scores["relative"]), np.array(scores["absolute"])
    print(f"{'mean':<40}{rel.mean():>9.3f}{ab.mean():>9.3f}")
    print(f"relative > absolute on {(rel > ab).sum()} of {len(rel)} pairs; mean gain {np.mean(rel - ab):+.3f} "
          f"(min {np.min(rel - ab):+.3f}, max {np.max(rel - ab):+.3f})")


if __name__ == "__main__":
    main()
