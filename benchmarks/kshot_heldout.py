"""Held-out k-shot check at crop level: a k-shot generator's fused output for K = 1, 3, 5 against
nearest-pose selection (one reference out of the same K), on the celeba-id *test* identities.

    PYTHONPATH=. python benchmarks/kshot_heldout.py WEIGHTS.onnx [--cache DIR] [--threads 1]

Protocol (deterministic): for every test identity with at least 6 photos with a face (cache
order), the first photo is the target and the next five the reference bank; K = 1, 3, 5 use the
first K of the bank. "fusion" gives all K to `GeneratorRuntime.generate_k`; "selection" gives the
one whose head pose is nearest the target's (`references.nearest`). The pose guide is the
target's parsing map in its own aligned crop (no retargeting: this measures the generator, not
the pipeline; `reenact eval` measures the pipeline). Per K and method:

  identity   SFace cosine between the output and the target photo, both aligned by the target's
             five points (higher is better; SFace calls ≥ 0.363 the same person)
  l1         mean |output − target| on the target's head region, [0, 1] scale
  pose       mean |Δyaw| + |Δpitch| + |Δroll| (degrees) between landmarks detected on the output
             and the target's; `detected` = share of outputs in which mediapipe found a face

The test split is prepared once into an evaluation cache (mediapipe); it is never trained on.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from reenact import geometry, parsing, references, warp
from reenact.auxnets.sface import SFaceONNX, align_112, five_points_from_mesh
from reenact.landmarks import Landmarker
from reenact.runtime import GeneratorRuntime
from reenact.train.cache import FaceCache, is_prepared, prepare_cache

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-id"
KS = (1, 3, 5)


def test_cache(path: Path, size: int) -> FaceCache:
    if not is_prepared(path):
        prepare_cache(SHARED / "images", path, identities=SHARED / "identities.csv", split="test", size=size)
    return FaceCache(path)


def groups(cache: FaceCache, need: int) -> list[list[int]]:
    by_id: dict[int, list[int]] = defaultdict(list)
    for i, ident in enumerate(cache.identity.tolist()):
        by_id[ident].append(i)
    return [members[:need] for _, members in sorted(by_id.items()) if len(members) >= need]


def measure(rt: GeneratorRuntime, cache: FaceCache, ids: list[list[int]]) -> dict[str, dict[str, float]]:
    sface, rows = SFaceONNX(device="cpu", threads=1), defaultdict(lambda: defaultdict(list))
    size = rt.size
    with Landmarker(mode="image") as lm:
        for members in ids:
            target, bank = members[0], members[1:]
            t_img, t_pts = cache.image(target), cache.points(target)
            five = five_points_from_mesh(t_pts)
            t_emb = sface.embed(align_112(t_img, five))[0]
            head = warp.head_mask(t_pts, size) > 0.5
            pose = parsing.parsing_map(t_pts, size)
            t_pose = geometry.head_pose(t_pts).as_array()
            embeds = [rt.embed(cache.image(j), parsing.parsing_map(cache.points(j), size)) for j in bank]
            cands = [references.Candidate(geometry.head_pose(cache.points(j)).as_array()) for j in bank]
            for k in KS:
                nearest = references.nearest(cands[:k], references.Candidate(t_pose))
                for method, chosen in (("fusion", embeds[:k]), ("selection", [embeds[nearest]])):
                    out = rt.generate_k(chosen, pose)
                    r = rows[f"{method} k={k}"]
                    r["identity"].append(float(sface.embed(align_112(out, five))[0] @ t_emb))
                    r["l1"].append(float(np.abs(out.astype(np.float32) - t_img)[head].mean() / 255))
                    faces = lm.detect(out)
                    r["detected"].append(float(bool(faces)))
                    if faces:
                        r["pose"].append(float(np.abs(geometry.head_pose(faces[0].points).as_array() - t_pose).sum()))
                near_img = cache.image(bank[nearest])
                rows[f"nearest photo k={k}"]["identity"].append(float(sface.embed(align_112(near_img, five))[0] @ t_emb))
    return {name: {m: float(np.mean(v)) for m, v in r.items()} | {"n": len(r["identity"])} for name, r in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", type=Path)
    ap.add_argument("--cache", type=Path, default=None, help="evaluation cache of the test split (made if missing)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rt = GeneratorRuntime(args.weights, device="cpu", threads=args.threads)
    cache = test_cache(args.cache or Path(f".cache/packs/celeba-id-test-{rt.size}-eval"), rt.size)
    ids = groups(cache, 1 + max(KS))
    result = measure(rt, cache, ids)
    print(f"{len(ids)} test identities, {rt.path.name} (step {rt.metadata.get('reenact.step')})")
    print(f"{'':22} {'identity':>9} {'l1':>7} {'pose °':>7} {'detected':>9}")
    cell = lambda r, key, width, digits: f"{r[key]:{width}.{digits}f}" if key in r else f"{'–':>{width}}"  # noqa: E731
    for name, r in result.items():
        print(f"{name:22} {cell(r, 'identity', 9, 3)} {cell(r, 'l1', 7, 3)} {cell(r, 'pose', 7, 1)} "
              f"{cell(r, 'detected', 9, 2)}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
