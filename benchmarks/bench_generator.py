"""Generator latency per frame on the CPU: PyTorch vs ONNX Runtime, F (once per reference) and
D (once per frame), at 128² and 256² with the default widths (ModelConfig defaults) — measured
here, nothing hard-coded.

    PYTHONPATH=. python benchmarks/bench_generator.py [--sizes 128 256] [--threads 1] [--repeat 10]

Weights are random (latency does not depend on them); each model is exported with
`reenact.export.export_generator`, so the ORT numbers are for verified graphs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from reenact import align, parsing
from reenact.export import export_generator
from reenact.model import Generator, ModelConfig
from reenact.runtime import GeneratorRuntime
from reenact.train import checkpoint as ckpt
from _timing import timed  # benchmarks/_timing.py (the script folder is on sys.path)


def bench(cfg: ModelConfig, repeat: int, threads: int, tmp: Path) -> dict[str, float]:
    torch.manual_seed(0)
    g = Generator(cfg).eval()
    path = tmp / f"g{cfg.size}.pt"
    ckpt.save_checkpoint(path, {**ckpt.header(0, 0.0, 1, cfg.to_dict(), {}), "generator": g.state_dict(), "ema": None})
    export_generator(path, tmp / f"g{cfg.size}.onnx")
    rt = GeneratorRuntime(tmp / f"g{cfg.size}.onnx", device="cpu", threads=threads)
    s = cfg.size
    pm = parsing.parsing_map(align.template(s), s)
    ref_u8 = np.random.default_rng(0).integers(0, 256, (s, s, 3), dtype=np.uint8)
    ref = torch.from_numpy(ref_u8.transpose(2, 0, 1)[None] / 127.5 - 1).float()
    pm_t = torch.from_numpy(pm)[None]
    with torch.no_grad():
        feats, _ = g.appearance(ref)
        out = {"torch F": timed(lambda: g.appearance(ref), repeat),
               "torch D": timed(lambda: g.decoder(pm_t, feats), repeat)}
    o_feats = rt.appearance(ref_u8)
    out["ORT F"] = timed(lambda: rt.appearance(ref_u8), repeat)
    out["ORT D"] = timed(lambda: rt.generate(o_feats, pm), repeat)
    out["params F (M)"] = sum(p.numel() for p in g.appearance.parameters()) / 1e6
    out["params D (M)"] = sum(p.numel() for p in g.decoder.parameters()) / 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch 1, median of {args.repeat} runs, CPU")
    print(f"{'size':>5} {'F params':>9} {'D params':>9} {'torch F':>9} {'torch D':>9} {'ORT F':>9} {'ORT D':>9}"
          f" {'ORT fps (D)':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            r = bench(ModelConfig(size=size), args.repeat, args.threads, Path(tmp))
            print(f"{size:>4}² {r['params F (M)']:>8.2f}M {r['params D (M)']:>8.2f}M {r['torch F']:>7.1f}ms "
                  f"{r['torch D']:>7.1f}ms {r['ORT F']:>7.1f}ms {r['ORT D']:>7.1f}ms {1000 / r['ORT D']:>11.1f}")
    print("F runs once per reference (video, k-shot); D runs once per frame.")


if __name__ == "__main__":
    main()
