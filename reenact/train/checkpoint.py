"""Training checkpoints: atomic, optionally compact (bfloat16) and split into parts.

A checkpoint is one `torch.save`d dict (loaded with `weights_only=True`, so it holds only tensors
and plain Python values):

  format, version, reenact_version, step, seconds (training time so far), world (processes),
  model_config, train_config (plain dicts), generator, discriminator, identity_discriminator, ema
  (state dicts or None; the generator's keys follow the model config's variant), opt_g, opt_d
  (None in a lean checkpoint, `checkpoint_optimizer = false`: resuming then restarts Adam's
  moments), scaler_g, scaler_d (state dicts or None), rng (python, numpy, torch, cuda).

Writes are atomic: bytes go to a temporary file beside the target, are fsync'd and os.replace'd.
When the serialised checkpoint is larger than `part_mib`, the bytes are split into parts
`NAME.<digest>.<i>` (each ≤ part_mib, so each fits the GPU machine's 16 MiB per returned file)
and NAME becomes a small JSON manifest (parts, sha256) written last; stale parts are removed after
the new manifest is in place, so a crash at any point leaves a loadable checkpoint.
`dtype="bfloat16"` stores floating tensors (weights, optimiser moments) in bf16, halving the size;
they are cast back to each parameter's dtype on load (resuming is then approximate, not bitwise).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from reenact import __version__
from reenact.errors import MissingWeights

FORMAT = "reenact-train-checkpoint"
FORMAT_VERSION = 1
_MANIFEST_MAGIC = b'{"reenact_checkpoint_parts"'


def rng_state() -> dict:
    """RNG states of python, numpy (global), torch (CPU) and CUDA, as checkpoint-safe values."""
    np_state = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _cast(obj, dtype: torch.dtype):
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() and obj.dim() > 0 else obj
    if isinstance(obj, dict):
        return {k: _cast(v, dtype) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast(v, dtype) for v in obj)
    return obj


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _parts_of(path: Path) -> list[Path]:
    """Part files named by the manifest at `path` (empty if it is a plain checkpoint)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_MANIFEST_MAGIC))
            if head != _MANIFEST_MAGIC:
                return []
            fh.seek(0)
            return [path.with_name(p) for p in json.loads(fh.read())["parts"]]
    except (OSError, ValueError, KeyError):
        return []


def save_checkpoint(path: str | os.PathLike, payload: dict, *, dtype: str = "float32",
                    part_mib: float = 0.0) -> list[Path]:
    """Write `payload` atomically (see module doc). Returns the files that make up the checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if dtype == "bfloat16":
        payload = {**_cast({k: v for k, v in payload.items() if k != "rng"}, torch.bfloat16), "rng": payload.get("rng")}
    buf = io.BytesIO()
    torch.save({**payload, "checkpoint_dtype": dtype}, buf)
    data = buf.getvalue()
    old_parts = _parts_of(path)
    limit = int(part_mib * 2**20)
    if not limit or len(data) <= limit:
        _write_atomic(path, data)
        files = [path]
    else:
        digest = hashlib.sha256(data).hexdigest()
        parts = [path.with_name(f"{path.name}.{digest[:12]}.{i}") for i in range(0, -(-len(data) // limit))]
        for i, part in enumerate(parts):
            _write_atomic(part, data[i * limit:(i + 1) * limit])
        manifest = {"reenact_checkpoint_parts": 1, "parts": [p.name for p in parts], "sha256": digest, "bytes": len(data)}
        _write_atomic(path, json.dumps(manifest).encode())
        files = [path, *parts]
    for stale in set(old_parts) - set(files):
        stale.unlink(missing_ok=True)
    return files


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if not data:
        raise MissingWeights(f"checkpoint {path} is empty (0 bytes)",
                             "it was not fully written or copied; use another checkpoint")
    if not data.startswith(_MANIFEST_MAGIC):
        return data
    parts, digest = _manifest(path, data)
    data = b"".join((path.parent / p).read_bytes() for p in parts)
    if hashlib.sha256(data).hexdigest() != digest:
        raise MissingWeights(f"the parts of checkpoint {path} do not match its manifest", "copy all NAME.* files together")
    return data


def _manifest(path: Path, data: bytes) -> tuple[list[str], str]:
    """(part file names, sha256) of a split checkpoint's manifest; MissingWeights if damaged.
    Parts are plain names beside the manifest, never paths elsewhere."""
    try:
        manifest = json.loads(data)
        parts, digest = manifest["parts"], manifest["sha256"]
        ok = isinstance(parts, list) and parts and isinstance(digest, str) and all(
            isinstance(p, str) and p and Path(p).name == p and p not in (".", "..") for p in parts)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise MissingWeights(f"the manifest of split checkpoint {path} is damaged",
                             "copy the checkpoint's NAME and NAME.* files again")
    return parts, digest


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint (plain or split). Raises MissingWeights when absent, partial or foreign."""
    path = Path(path)
    try:
        data = _read_bytes(path)
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says enough
            warnings.simplefilter("ignore")
            payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise MissingWeights(f"checkpoint {path} does not exist") from None
    except OSError as e:
        raise MissingWeights(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    except MissingWeights:
        raise
    except Exception as e:  # noqa: BLE001 — unpickling foreign bytes fails in many ways (IndexError, …)
        # PyTorch's own explanation (weights_only, zip records…) runs to dozens of lines
        raise MissingWeights(f"{path} is not a PyTorch checkpoint reenact can read ({_first_line(e)})",
                             "pass RUN/checkpoints/last.pt written by `reenact train`") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT \
            or not isinstance(payload.get("version", 0), int):
        raise MissingWeights(f"{path} is not a reenact training checkpoint")
    if payload.get("version", 0) > FORMAT_VERSION:
        raise MissingWeights(f"{path} was written by a newer reenact", "upgrade reenact")
    return payload


def _first_line(e: BaseException) -> str:
    """The gist of a loading error: the unpickler's own reason when PyTorch wraps it in its
    weights_only explanation, else the first non-empty line."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    text = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return (text[:160] + "…" if len(text) > 160 else text) or type(e).__name__


def header(step: int, seconds: float, world: int, model_config: dict, train_config: dict) -> dict:
    """The descriptive part of a checkpoint payload."""
    return {"format": FORMAT, "version": FORMAT_VERSION, "reenact_version": __version__, "step": step,
            "seconds": seconds, "world": world, "model_config": model_config, "train_config": train_config}
