"""The training loop: generator G = F + D (or the k-shot variant, E_k + fusion + D) against a
multi-scale PatchGAN conditioned on the pose guide (and optionally an identity discriminator
conditioned on a reference photo), from a prepared cache.

`train(config, out_dir, ...)` runs until `max_steps` (total optimiser steps, counting those of a
resumed checkpoint), a time budget, or a stop request (`StopSignals`: SIGINT/SIGTERM), then writes
a final checkpoint. Each step: one generator update (all enabled losses), one discriminator update
(LSGAN or hinge; both discriminators share one optimiser), an optional EMA update of G (decay
min(ema_decay, (1 + step) / (10 + step))). Mixed precision on CUDA (bf16 where supported, else
fp16 with GradScaler); fp32 on CPU. Under torchrun all networks are wrapped in
DistributedDataParallel.

Files in `out_dir` (rank 0 only): config.json, log.jsonl and log.csv (window means of every loss,
unweighted values under raw/…), samples/step_XXXXXX.png (rows: reference(s) [| warp render] | pose guide |
output | target), checkpoints/last.pt (+ step_XXXXXX.pt every `keep_every` steps).
The library never prints: progress goes to a callback with a `StepReport`.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import shutil
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from reenact import parsing
from reenact.errors import MissingWeights, UsageError
from reenact.model import ModelConfig, MultiScaleDiscriminator, build_generator
from reenact.train import checkpoint as ckpt
from reenact.train.cache import FaceCache
from reenact.train.config import TrainConfig
from reenact.train.data import KShotBatchSampler, KShotDataset, ReenactDataset, StepBatchSampler, collate
from reenact.train.ddp import DistInfo, any_rank, barrier
from reenact.train.losses import GeneratorLoss, discriminator_loss
from reenact.train.regions import RegionDataset, RegionPack

PREVIEW_KEY = 2**40  # sample keys of the fixed preview batch (never reached by training)
CONSISTENCY_SHARE = 4  # the region consistency losses see 1/4 of each batch


@dataclass(frozen=True)
class StepReport:
    """Progress after a step: losses are means over the last logging window."""

    step: int
    max_steps: int
    losses: dict[str, float]
    it_per_s: float
    elapsed: float
    eta: float | None
    event: str | None = None


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    start_step: int
    step: int
    reason: str  # "max_steps" | "max_minutes" | "signal"
    checkpoint: Path | None
    seconds: float
    history: list[dict] = field(default_factory=list)


class StopSignals:
    """Context manager turning SIGINT/SIGTERM into a stop request (`requested`) instead of an
    exception, so the loop can finish its step and write a checkpoint. A second signal raises
    KeyboardInterrupt. Only installs handlers in the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class AmpPolicy:
    enabled: bool
    dtype: torch.dtype
    scaler: bool

    @classmethod
    def select(cls, mode: str, device: torch.device) -> "AmpPolicy":
        """auto: bf16 on CUDA where supported, else fp16 + GradScaler; off on CPU."""
        if device.type != "cuda" or mode == "off":
            return cls(enabled=mode == "bf16" and device.type == "cpu", dtype=torch.bfloat16, scaler=False)
        if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
            return cls(enabled=True, dtype=torch.bfloat16, scaler=False)
        return cls(enabled=True, dtype=torch.float16, scaler=True)


def select_device(pref: str, dist: DistInfo) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise UsageError("device = \"cuda\" but no CUDA GPU is usable here", "use device = \"auto\" or \"cpu\"")
    if pref != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def _set_requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def generate(g: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Run any variant's generator on a batch → (image, reconstruction(s))."""
    if "references" in batch:  # k-shot: N×K references with their parsing maps
        return g(batch["references"], batch["reference_parsing"], batch["parsing"])
    if "warped" in batch:  # region: the warp's render of the region is D's input
        return g(batch["reference"], batch["parsing"], batch["warped"])
    return g(batch["reference"], batch["parsing"], batch.get("grid"))


def consistency_pairs(g: torch.nn.Module, batch: dict[str, torch.Tensor], output: torch.Tensor,
                      weights) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Region variant: {loss name: (prediction, what it must equal, loss mask)} for the enabled
    consistency losses. self: the reference driven by its own pose (its own region as the warp
    render) returns itself. triple: the output B, warped to a third pose C and driven there,
    equals the reference driven to C directly. Both use the first quarter of the batch (each costs
    one or two more generator passes; on a CPU that quarter keeps a step ~30 % dearer, not 3×)."""
    n = max(1, output.shape[0] // CONSISTENCY_SHARE)
    batch, output = {k: v[:n] for k, v in batch.items()}, output[:n]
    pairs = {}
    if weights.self_consistency > 0:
        ref = batch["reference"]
        pred, _ = g(ref, batch["ref_parsing"], ref)
        pairs["self_consistency"] = (pred, ref, torch.ones_like(ref[:, :1]))
    if weights.triple_consistency > 0:
        warped_bc = torch.nn.functional.grid_sample(output, batch["grid_c"], mode="bilinear",
                                                    padding_mode="border", align_corners=False)
        via_b, _ = g(output, batch["parsing_c"], warped_bc)
        direct, _ = g(batch["reference"], batch["parsing_c"], batch["warped_c"])
        pairs["triple_consistency"] = (via_b, direct, batch["mask_c"])
    return pairs


def mismatched(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(targets, references of other people) for the identity discriminator's negatives: each
    target with the next sample's reference where the two identities are known and differ."""
    if "identity" not in batch or len(batch["identity"]) < 2:
        return None
    ident, other = batch["identity"], batch["identity"].roll(1)
    keep = (ident != other) & (ident >= 0) & (other >= 0)
    if not bool(keep.any()):
        return None
    return batch["target"][keep], batch["reference"].roll(1, 0)[keep]


class Trainer:
    """Models, optimisers, data and bookkeeping of one run (see module doc)."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, *, dist: DistInfo | None = None,
                 resume: str | Path | None = None) -> None:
        self.cfg, self.out, self.dist = config, Path(out_dir), dist or DistInfo()
        self.device = select_device(config.device, self.dist)
        self.amp = AmpPolicy.select(config.amp, self.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._build_models()
        self.step, self.seconds_before = 0, 0.0
        if resume is not None:
            self._restore(ckpt.load_checkpoint(resume, map_location=self.device))
        self._wrap_ddp()
        self._build_data()

    def _build_models(self) -> None:
        c = self.cfg
        torch.manual_seed(c.seed)  # the same initial weights on every rank and every run
        self.g = build_generator(c.model).to(self.device)
        self.d = (MultiScaleDiscriminator(c.discriminator, parsing_channels=c.model.parsing_channels).to(self.device)
                  if c.losses.needs_discriminator else None)  # pose discriminator: [parsing, image]
        self.d_id = (MultiScaleDiscriminator(c.discriminator, parsing_channels=3).to(self.device)
                     if c.losses.identity_gan > 0 else None)  # identity discriminator: [reference, image]
        self.ema = copy.deepcopy(self.g).eval().requires_grad_(False) if c.ema_decay > 0 else None
        betas = (c.beta1, c.beta2)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=c.lr_g, betas=betas)
        d_params = [p for d in (self.d, self.d_id) if d is not None for p in d.parameters()]
        self.opt_d = torch.optim.Adam(d_params, lr=c.lr_d, betas=betas) if d_params else None
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=self.amp.scaler)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=self.amp.scaler)
        self.criteria = GeneratorLoss(c.losses, mask_all=c.mask_losses, gan_loss=c.gan_loss).to(self.device)

    def _wrap_ddp(self) -> None:
        self.g_train, self.d_train, self.d_id_train = self.g, self.d, self.d_id
        if not self.dist.active:
            return
        ids = [self.device.index] if self.device.type == "cuda" else None
        w = self.cfg.losses  # F's to_rgb idles without the auto-encoder loss, D without the others
        unused = w.l1_ae <= 0 or not w.trains_decoder
        self.g_train = DistributedDataParallel(self.g, device_ids=ids, find_unused_parameters=unused)
        if self.d is not None:
            self.d_train = DistributedDataParallel(self.d, device_ids=ids)
        if self.d_id is not None:
            self.d_id_train = DistributedDataParallel(self.d_id, device_ids=ids)

    def _build_data(self) -> None:
        c = self.cfg
        if c.model.variant == "region":
            self._build_region_data(dict(start_step=self.step, rank=self.dist.rank, world=self.dist.world))
            return
        cache = FaceCache(c.data.cache)
        if cache.size != c.model.size:
            raise UsageError(f"the cache {c.data.cache} holds {cache.size}² crops but the model is {c.model.size}²",
                             "prepare a cache at the model's size or point data.cache elsewhere")
        where = dict(start_step=self.step, rank=self.dist.rank, world=self.dist.world)
        if c.model.variant == "kshot":
            k_max, k_fixed = c.model.k_max, c.data.references
            self.dataset = KShotDataset(cache, c.data, seed=c.seed, k_default=k_fixed or k_max)
            sampler = KShotBatchSampler(len(cache), c.batch_size, seed=c.seed, k_max=k_max, k_fixed=k_fixed, **where)
        else:
            self.dataset = ReenactDataset(cache, c.data, seed=c.seed, grid=c.model.feature_warp)
            sampler = StepBatchSampler(len(cache), c.batch_size, seed=c.seed, **where)
        self._make_loader(sampler)

    def _build_region_data(self, where: dict) -> None:
        c = self.cfg
        pack = RegionPack(c.data.region_pack)
        if pack.size != c.model.size or pack.region != c.model.region:
            raise UsageError(f"the region pack {c.data.region_pack} holds {pack.region} crops at {pack.size}² but the "
                             f"model draws the {c.model.region} at {c.model.size}²",
                             "point data.region_pack elsewhere (it is built on first use)")
        self.dataset = RegionDataset(pack, flip=c.data.flip, colour=c.data.colour, seed=c.seed,
                                     blend=c.model.blend)
        self._make_loader(StepBatchSampler(len(pack), c.batch_size, seed=c.seed, **where))

    def _make_loader(self, sampler) -> None:
        workers = self.cfg.data.workers
        self.loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                                 pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                                 prefetch_factor=2 if workers > 0 else None)

    # ------------------------------------------------------------------ one step

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp.dtype, enabled=self.amp.enabled)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One G update then one D update; returns the logged scalars."""
        output, logs = self._generator_step(batch)
        if self.opt_d is not None:
            logs.update(self._discriminator_step(batch, output))
        if self.ema is not None:
            # Warm-up: the decay ramps from 0.1 to ema_decay, so early EMA weights are not the init.
            decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                for e, p in zip(self.ema.parameters(), self.g.parameters()):
                    e.lerp_(p.detach(), 1.0 - decay)
        return logs

    def _discriminators(self) -> list[torch.nn.Module]:
        return [d for d in (self.d, self.d_id) if d is not None]

    def _generator_step(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.cfg.losses
        for d in self._discriminators():
            _set_requires_grad(d, False)  # G's update must not touch D (and D's DDP hooks stay idle)
        with self._autocast():
            output, recon = generate(self.g_train, batch)
            fake_d = self.d(output, batch["parsing"]) if self.d is not None else None
            fake_id = self.d_id(output, batch["reference"]) if self.d_id is not None else None
            real_d = real_id = None
            if w.feature_matching > 0:
                with torch.no_grad():
                    real_d = self.d(batch["target"], batch["parsing"])
                    real_id = self.d_id(batch["target"], batch["reference"]) if self.d_id is not None else None
            extra = consistency_pairs(self.g_train, batch, output, w) if "warped" in batch else {}
        losses = self.criteria(batch, output, recon, fake_d, real_d, fake_id, real_id, consistency=extra)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(losses["total"]).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        for d in self._discriminators():
            _set_requires_grad(d, True)
        logs = {k: float(v.detach()) for k, v in losses.items()}
        if "references" in batch:  # k-shot: the batch's reference count (window mean in the log)
            logs["k"] = float(batch["references"].shape[1])
        return output.detach(), logs

    def _discriminator_step(self, batch, output: torch.Tensor) -> dict[str, float]:
        """One update of the discriminators (summed losses, one optimiser); returns their losses."""
        kind, logs, total = self.cfg.gan_loss, {}, 0.0
        if self.d is not None:
            n = output.shape[0]
            with self._autocast():  # one forward for fake and real: DDP allows one forward per backward
                both = self.d_train(torch.cat([output, batch["target"]]), torch.cat([batch["parsing"]] * 2))
            loss = discriminator_loss([[t[:n] for t in s] for s in both], [[t[n:] for t in s] for s in both], kind)
            logs["d_loss"], total = loss, total + loss
        if self.d_id is not None:
            loss = self._identity_discriminator_loss(batch, output)
            logs["d_id_loss"], total = loss, total + loss
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(total).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        return {k: float(v.detach()) for k, v in logs.items()}

    def _identity_discriminator_loss(self, batch, output: torch.Tensor) -> torch.Tensor:
        """Real: (target, its person's reference); fake: (output, reference) and, where the batch
        holds other people, (target, another person's reference)."""
        n, ref = output.shape[0], batch["reference"]
        neg = mismatched(batch)
        images, conds = [output, batch["target"]], [ref, ref]
        if neg is not None:
            images.append(neg[0])
            conds.append(neg[1])
        with self._autocast():
            outs = self.d_id_train(torch.cat(images), torch.cat(conds))
        part = lambda a, b: [[t[a:b] for t in s] for s in outs]  # noqa: E731
        return discriminator_loss(part(0, n), part(n, 2 * n), self.cfg.gan_loss,
                                  mismatch_d=part(2 * n, None) if neg is not None else None)

    # ------------------------------------------------------------------ checkpoints

    def state(self, seconds: float) -> dict:
        sd = lambda m: m.state_dict() if m is not None else None  # noqa: E731
        return {**ckpt.header(self.step, seconds, self.dist.world, self.cfg.model.to_dict(), self.cfg.to_dict()),
                "generator": sd(self.g), "discriminator": sd(self.d), "identity_discriminator": sd(self.d_id),
                "ema": sd(self.ema),
                "opt_g": sd(self.opt_g) if self.cfg.checkpoint_optimizer else None,
                "opt_d": sd(self.opt_d) if self.cfg.checkpoint_optimizer else None,
                "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict(),
                "rng": ckpt.rng_state()}

    def _restore(self, state: dict) -> None:
        if not ModelConfig.from_dict(state["model_config"]).same_weights(self.cfg.model):
            raise UsageError("the checkpoint's [model] differs from the config's",
                             "train with the config the checkpoint was made with, or start a new run")
        self.g.load_state_dict(state["generator"])
        if state.get("opt_g") is not None:  # absent in lean checkpoints: Adam restarts its moments
            self.opt_g.load_state_dict(state["opt_g"])
        for d, key in ((self.d, "discriminator"), (self.d_id, "identity_discriminator")):
            if d is not None and state.get(key) is not None:
                d.load_state_dict(state[key])
        if self.opt_d is not None and state.get("opt_d") is not None:
            self.opt_d.load_state_dict(state["opt_d"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if state.get("ema") is not None else state["generator"])
        for scaler, key in ((self.scaler_g, "scaler_g"), (self.scaler_d, "scaler_d")):
            if state.get(key):
                scaler.load_state_dict(state[key])
        ckpt.set_rng_state(state["rng"])
        self.step, self.seconds_before = int(state["step"]), float(state.get("seconds", 0.0))

    def save(self, seconds: float) -> Path:
        """Write checkpoints/last.pt (and a kept copy every `keep_every` steps); rank 0 only."""
        path = self.out / "checkpoints" / "last.pt"
        state = self.state(seconds)
        ckpt.save_checkpoint(path, state, dtype=self.cfg.checkpoint_dtype, part_mib=self.cfg.part_mib)
        if self.cfg.keep_every and self.step % self.cfg.keep_every == 0:
            ckpt.save_checkpoint(path.with_name(f"step_{self.step:06d}.pt"), state,
                                 dtype=self.cfg.checkpoint_dtype, part_mib=self.cfg.part_mib)
        return path

    # ------------------------------------------------------------------ samples

    def preview_batch(self, n: int = 4) -> dict[str, torch.Tensor]:
        """A fixed batch (same every call and every run with this seed and cache)."""
        return collate([self.dataset[(i, PREVIEW_KEY + i)] for i in range(min(n, len(self.dataset)))])

    def write_samples(self) -> Path:
        """samples/step_XXXXXX.png from the preview batch (EMA weights when kept)."""
        batch = self._to_device(self.preview_batch())
        model = self.ema if self.ema is not None else self.g
        was_training = model.training
        model.eval()
        with torch.no_grad():
            output, _ = generate(model, batch)
        model.train(was_training)
        grid = sample_grid({k: v.cpu() for k, v in batch.items()}, output.float().cpu())
        path = self.out / "samples" / f"step_{self.step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        ckpt._write_atomic(path, buf.tobytes())
        return path


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """3×S×S in [-1, 1] → S×S×3 uint8."""
    return ((x.clamp(-1, 1).permute(1, 2, 0).numpy() + 1) * 127.5 + 0.5).astype(np.uint8)


def sample_grid(batch: dict[str, torch.Tensor], output: torch.Tensor) -> np.ndarray:
    """Rows of [reference(s) | pose guide (colourised parsing) | output | target], RGB uint8."""
    refs = batch["references"] if "references" in batch else batch["reference"][:, None]  # N×K×3×S×S
    if "warped" in batch:  # region variant: the warp's render is the input to beat
        refs = torch.cat([refs, batch["warped"][:, None]], 1)
    rows = [np.hstack([*(_to_uint8(r) for r in refs[i]), parsing.colorize(batch["parsing"][i].numpy()),
                       _to_uint8(output[i]), _to_uint8(batch["target"][i])]) for i in range(len(output))]
    return np.vstack(rows)


class LossLog:
    """Window means of the step scalars, written to log.jsonl and log.csv (rank 0)."""

    def __init__(self, out_dir: Path, enabled: bool) -> None:
        self.out, self.enabled = out_dir, enabled
        self.window: dict[str, list[float]] = defaultdict(list)
        self.history: list[dict] = []

    def add(self, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self.window[k].append(v)

    def means(self) -> dict[str, float]:
        return {k: float(np.mean(v)) for k, v in self.window.items() if v}

    def flush(self, step: int, elapsed: float, it_per_s: float) -> dict:
        row = {"step": step, "elapsed_s": round(elapsed, 3), "it_per_s": round(it_per_s, 4), **self.means()}
        self.window.clear()
        self.history.append(row)
        if self.enabled:
            with open(self.out / "log.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            self._csv(row)
        return row

    def _csv(self, row: dict) -> None:
        path = self.out / "log.csv"
        header = None
        if path.exists():
            with open(path, newline="") as fh:
                header = next(csv.reader(fh), None)
        if header is not None and header != list(row):
            path = self.out / f"log.{row['step']:06d}.csv"  # the set of losses changed: new file
            header = None if not path.exists() else list(row)
        with open(path, "a", newline="") as fh:
            writer = csv.writer(fh)
            if header is None:
                writer.writerow(list(row))
            writer.writerow(list(row.values()))


def _stop_reason(trainer: Trainer, max_steps: int, deadline: float | None, stop: Callable[[], bool]) -> str | None:
    """Why to stop now (agreed by every rank), or None."""
    if trainer.step >= max_steps:
        return "max_steps"
    timed_out = deadline is not None and time.monotonic() >= deadline
    signalled = stop()
    if any_rank(timed_out or signalled, trainer.dist, trainer.device):
        return "max_minutes" if any_rank(timed_out, trainer.dist, trainer.device) else "signal"
    return None


def train(config: TrainConfig, out_dir: str | Path, *, max_steps: int | None = None, max_minutes: float | None = None,
          resume: str | Path | None = None, dist: DistInfo | None = None,
          stop: Callable[[], bool] = lambda: False,
          progress: Callable[[StepReport], None] | None = None) -> TrainResult:
    """Train (or resume) until `max_steps` total steps, `max_minutes` of wall time in this call
    (0/None = no limit) or `stop()` returns True. Returns a summary; see module doc for files."""
    trainer = Trainer(config, out_dir, dist=dist, resume=resume)
    return run(trainer, max_steps=config.max_steps if max_steps is None else max_steps,
               max_minutes=config.max_minutes if max_minutes is None else max_minutes, stop=stop, progress=progress)


def run(trainer: Trainer, *, max_steps: int, max_minutes: float, stop: Callable[[], bool],
        progress: Callable[[StepReport], None] | None) -> TrainResult:
    """The step loop of `train` (separated so tests can drive a Trainer directly)."""
    main, cfg, out = trainer.dist.main, trainer.cfg, trainer.out
    if main:
        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        except OSError as e:  # a full or read-only disk: no half-made run folder is left behind
            if created:
                shutil.rmtree(out, ignore_errors=True)
            e.filename = e.filename or str(out / "config.json")  # a failed write names no file
            raise
    log = LossLog(out, enabled=main)
    t0 = time.monotonic()
    deadline = t0 + max_minutes * 60 if max_minutes else None
    start, batches, reason = trainer.step, iter(trainer.loader), None
    while (reason := _stop_reason(trainer, max_steps, deadline, stop)) is None:
        log.add(trainer.train_step(trainer._to_device(next(batches))))
        trainer.step += 1
        elapsed = time.monotonic() - t0
        rate = (trainer.step - start) / max(elapsed, 1e-9)
        event = _periodic(trainer, log, elapsed, rate)
        if progress and main:
            eta = _eta(trainer.step, max_steps, rate, deadline)
            progress(StepReport(trainer.step, max_steps, log.means() or (log.history[-1] if log.history else {}),
                                rate, elapsed, eta, event))
    elapsed = time.monotonic() - t0
    if log.window:
        log.flush(trainer.step, elapsed, (trainer.step - start) / max(elapsed, 1e-9))
    path = None
    if main and trainer.step > start:
        path = trainer.save(trainer.seconds_before + elapsed)
        trainer.write_samples()
    barrier(trainer.dist)
    return TrainResult(out, start, trainer.step, reason, path, elapsed, log.history)


def _periodic(trainer: Trainer, log: LossLog, elapsed: float, rate: float) -> str | None:
    cfg, step, event = trainer.cfg, trainer.step, None
    if step % cfg.log_every == 0:
        log.flush(step, elapsed, rate)
    if trainer.dist.main and step % cfg.sample_every == 0:
        trainer.write_samples()
        event = "sample"
    if trainer.dist.main and step % cfg.checkpoint_every == 0:
        trainer.save(trainer.seconds_before + elapsed)
        event = "checkpoint"
    return event


def _eta(step: int, max_steps: int, rate: float, deadline: float | None) -> float | None:
    by_steps = (max_steps - step) / rate if rate > 0 and max_steps < 2**62 else math.inf
    by_time = deadline - time.monotonic() if deadline is not None else math.inf
    eta = min(by_steps, by_time)
    return None if math.isinf(eta) else max(eta, 0.0)


def resolve_resume(resume: str | Path | None, out_dir: str | Path) -> Path | None:
    """`--resume` value → checkpoint path: None/"" → None; "auto" → OUT/checkpoints/last.pt when it
    exists (else None, a fresh run); a path must be a file (MissingWeights otherwise: exit 6, as
    for any missing checkpoint)."""
    if not resume:
        return None
    if str(resume) == "auto":
        last = Path(out_dir) / "checkpoints" / "last.pt"
        return last if last.exists() else None
    if not Path(resume).is_file():
        raise MissingWeights(f"checkpoint {resume} not found", "pass an existing .pt file or --resume auto")
    return Path(resume)
