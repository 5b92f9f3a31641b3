"""Loss ablation of a region generator: the same config with loss terms switched on and off, each
trained the same number of steps, then run on validation pairs of held-out identities.

Three steps, so the training can run on the lent GPU machine (no mediapipe there, 64 MiB carried):

  python tools/region_ablation.py prepare --config configs/mouth-64.toml --photos 2000 -o .device
      (here) a subset of the config's train face cache and the celeba-id *test* split, re-encoded
      compactly, into .device/faces-train and .device/faces-val
  python tools/region_ablation.py run --config configs/mouth-64.toml --faces .device --steps 3000 -o OUT
      (there, or here) builds both region packs, trains every variant in parallel processes, and
      writes OUT/variant_K.npz (each variant's outputs on the validation pairs) + ablation_logs.json
  python tools/region_ablation.py validate runs/mouth-64 --config configs/mouth-64.toml --faces .device -o OUT
      (here) the shipped run on the same validation pairs (a variant file for `score`) + a sheet
  python tools/region_ablation.py score OUT --config configs/mouth-64.toml --faces .device
      (here) rebuilds the same validation pairs, then L1 / PSNR / SSIM / LPIPS inside the blend
      mask per variant (and for the warp itself) → a Markdown table

The validation pairs are built exactly like the training pairs (round trip and same person), from
identities never trained on; they are only ever predicted, never trained.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {  # name → loss weights changed from the config's
    "l1+gan": {"self_consistency": 0.0, "triple_consistency": 0.0, "perceptual": 0.0},
    "l1+gan+self": {"self_consistency": 1.0, "triple_consistency": 0.0, "perceptual": 0.0},
    "l1+gan+triple": {"self_consistency": 0.0, "triple_consistency": 1.0, "perceptual": 0.0},
    "l1+gan+self+triple": {"self_consistency": 1.0, "triple_consistency": 1.0, "perceptual": 0.0},
    "l1+gan+self+triple+perceptual": {"self_consistency": 1.0, "triple_consistency": 1.0, "perceptual": 2.0},
    "l1 only": {"self_consistency": 0.0, "triple_consistency": 0.0, "perceptual": 0.0, "gan": 0.0},
}


def prepare(args) -> None:
    from reenact.train.cache import CacheWriter, FaceCache, prepare_cache
    from reenact.train.config import TrainConfig

    cfg = TrainConfig.from_toml(args.config)
    out = Path(args.output)
    src = FaceCache(cfg.data.cache)
    pick = np.random.default_rng(0).permutation(len(src))[: args.photos]
    writer = CacheWriter(out / "faces-train", size=src.size, quality=args.quality)
    for i in sorted(pick.tolist()):
        writer.add(str(src.names[i]), int(src.identity[i]), src.image(i), src.points(i))
    writer.finish({"split": "train", "source": str(cfg.data.cache), "subset": args.photos})
    # Held-out identities: the test split, prepared with mediapipe here (validation only).
    prepare_cache(cfg.data.source, out / "faces-val", identities=cfg.data.identities, split="test",
                  size=src.size, quality=args.quality)
    print("prepared", out, sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20, "MiB")


def _train_variant(cfg_path: str, name: str, changes: dict, pack: Path, steps: int, minutes: float,
                   work: Path) -> subprocess.Popen:
    from reenact.train.config import TrainConfig

    cfg = TrainConfig.from_toml(cfg_path)
    losses = {**asdict(cfg.losses), **changes}
    data = {**asdict(cfg.data), "region_pack": str(pack)}
    run_dir = work / name.replace("+", "_").replace(" ", "_")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_file = run_dir / "config.json"
    cfg_file.write_text(json.dumps(cfg.replace(losses=losses, data=data, threads=2, sample_every=10**9,
                                               checkpoint_every=10**9, log_every=100).to_dict()))
    code = ("import json,sys; from reenact.train.config import TrainConfig; from reenact.train.loop import train; "
            f"c=TrainConfig.from_dict(json.load(open({str(cfg_file)!r}))); "
            f"r=train(c, {str(run_dir)!r}, max_steps={steps}, max_minutes={minutes}); "
            "print('steps', r.step, 'seconds', round(r.seconds, 1))")
    log = open(run_dir / "train.log", "w")
    return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _predict(run_dir: Path, pack) -> np.ndarray:
    import torch

    from reenact.export import load_generator
    from reenact.train.regions import RegionDataset

    g, _ = load_generator(run_dir / "checkpoints" / "last.pt")
    ds = RegionDataset(pack, flip=0.0, colour=0.0, seed=0)
    outs = []
    with torch.no_grad():
        for lo in range(0, len(ds), 64):
            items = [ds[(i, i)] for i in range(lo, min(len(ds), lo + 64))]
            b = {k: torch.from_numpy(np.stack([s[k] for s in items])) for k in ("reference", "parsing", "warped")}
            img, _ = g(b["reference"], b["parsing"], b["warped"])
            outs.append(((img.permute(0, 2, 3, 1).numpy() + 1) * 127.5 + 0.5).clip(0, 255).astype(np.uint8))
    return np.concatenate(outs)


def run(args) -> None:
    from reenact.train.config import TrainConfig
    from reenact.train.regions import RegionPack, build_pack

    cfg = TrainConfig.from_toml(args.config)
    out, faces = Path(args.output), Path(args.faces)
    work = Path(args.work)
    t0 = time.time()
    packs = {}
    for part, allow in (("train", False), ("val", True)):
        packs[part] = work / f"pack-{part}"
        if not (packs[part] / "meta.json").is_file():
            build_pack(faces / f"faces-{part}", packs[part], region=cfg.model.region, size=cfg.model.size,
                       identity_pairs=cfg.data.identity_pairs, seed=cfg.seed, allow_test=allow)
    print(f"packs built in {time.time() - t0:.0f} s", flush=True)
    chosen = args.variants.split(",") if args.variants else list(VARIANTS)
    procs = {n: _train_variant(args.config, n, VARIANTS[n], packs["train"], args.steps, args.minutes, work)
             for n in chosen}
    for name, p in procs.items():
        p.wait()
        print(name, "exit", p.returncode, flush=True)
    val = RegionPack(packs["val"])
    out.mkdir(parents=True, exist_ok=True)
    logs = {}
    for k, name in enumerate(chosen):  # one small file per variant (the device returns ≤ 16 MiB per file)
        run_dir = work / name.replace("+", "_").replace(" ", "_")
        if not (run_dir / "checkpoints" / "last.pt").exists():
            print(name, "left out: its training failed (see its train.log)", flush=True)
            continue
        np.savez_compressed(out / f"variant_{k}.npz", name=np.array(name), output=_predict(run_dir, val))
        logs[name] = [json.loads(line) for line in open(run_dir / "log.jsonl")]
    (out / "ablation_logs.json").write_text(json.dumps({"steps": args.steps, "config": args.config, "logs": logs,
                                                        "train_pack": RegionPack(packs["train"]).meta,
                                                        "val_pack": val.meta, "seconds": time.time() - t0}))
    print(f"done in {time.time() - t0:.0f} s", flush=True)


def score(args) -> None:
    import torch

    from reenact.auxnets.vgg import LPIPS
    from reenact.evaluate import metrics

    from reenact.train.config import TrainConfig
    from reenact.train.regions import RegionPack, build_pack

    cfg = TrainConfig.from_toml(args.config)
    pack_dir = Path(args.work) / "pack-val"
    if not (pack_dir / "meta.json").is_file():  # the same deterministic build as on the device
        build_pack(Path(args.faces) / "faces-val", pack_dir, region=cfg.model.region, size=cfg.model.size,
                   identity_pairs=cfg.data.identity_pairs, seed=cfg.seed, allow_test=True)
    val = RegionPack(pack_dir).arrays
    target, mask = val["target"], val["mask"].astype(np.float32) / 255.0
    outputs = {"warp": val["warped"]}
    for f in sorted(Path(args.outputs).glob("variant_*.npz")):
        z = np.load(f)
        outputs[str(z["name"])] = z["output"]
    lpips = LPIPS()
    rows = []
    for name, pred in outputs.items():
        l1 = float(np.mean([metrics.l1(p, t, m) for p, t, m in zip(pred, target, mask)]))
        ps = float(np.mean([metrics.psnr(p, t, m) for p, t, m in zip(pred, target, mask)]))
        ss = float(np.mean([metrics.ssim(p, t, m) for p, t, m in zip(pred, target, mask)]))
        with torch.no_grad():
            tt = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
            lp = float(lpips(tt(pred), tt(target)).mean())
        rows.append((name, l1, ps, ss, lp))
    print("| variant | masked L1 ↓ | masked PSNR ↑ | SSIM ↑ | LPIPS ↓ |\n|---|---|---|---|---|")
    for name, l1, ps, ss, lp in rows:
        print(f"| {name} | {l1:.4f} | {ps:.2f} | {ss:.4f} | {lp:.4f} |")


def validate(args) -> None:
    """A trained run (its last checkpoint) on the same validation pairs: its variant file for
    `score`, and a sheet of the first pairs (reference | warp | output | truth)."""
    import cv2

    from reenact.train.config import TrainConfig
    from reenact.train.regions import RegionPack, build_pack

    cfg = TrainConfig.from_toml(args.config)
    pack_dir = Path(args.work) / "pack-val"
    if not (pack_dir / "meta.json").is_file():
        build_pack(Path(args.faces) / "faces-val", pack_dir, region=cfg.model.region, size=cfg.model.size,
                   identity_pairs=cfg.data.identity_pairs, seed=cfg.seed, allow_test=True)
    val = RegionPack(pack_dir)
    out = _predict(Path(args.run), val)
    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"variant_{args.name.replace(' ', '_')}.npz", name=np.array(args.name), output=out)
    a = val.arrays
    pick = np.linspace(0, len(out) - 1, args.rows).astype(int)
    rows = [np.hstack([a["reference"][i], a["warped"][i], out[i], a["target"][i]]) for i in pick]
    grid = np.vstack([np.hstack(rows[k:k + 2]) for k in range(0, len(rows) - 1, 2)])
    cv2.imwrite(str(folder / f"{args.name.replace(' ', '_')}-heldout.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--config", required=True)
    p.add_argument("--photos", type=int, default=2000)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("-o", "--output", required=True)
    r = sub.add_parser("run")
    r.add_argument("--config", required=True)
    r.add_argument("--faces", required=True)
    r.add_argument("--steps", type=int, default=3000)
    r.add_argument("--minutes", type=float, default=5.0)
    r.add_argument("--variants", default="")
    r.add_argument("--work", default="/tmp/region-ablation")
    r.add_argument("-o", "--output", required=True)
    s = sub.add_parser("score")
    s.add_argument("outputs", help="the folder with variant_*.npz (the run's -o)")
    s.add_argument("--config", required=True)
    s.add_argument("--faces", required=True)
    s.add_argument("--work", default="/tmp/region-ablation-score")
    v = sub.add_parser("validate")
    v.add_argument("run", help="a training run folder (its checkpoints/last.pt)")
    v.add_argument("--config", required=True)
    v.add_argument("--faces", required=True)
    v.add_argument("--name", default="cpu recipe")
    v.add_argument("--rows", type=int, default=16)
    v.add_argument("--work", default="/tmp/region-ablation-score")
    v.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    {"prepare": prepare, "run": run, "score": score, "validate": validate}[args.cmd](args)


if __name__ == "__main__":
    main()
