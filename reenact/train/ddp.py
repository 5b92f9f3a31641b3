"""Multi-process training with DistributedDataParallel (one process per GPU, or CPU processes on
the gloo backend for tests).

Launch: `torchrun --nproc_per_node N -m reenact.train.ddp --config X.toml [train options]`
(equivalent to `reenact train --ddp ...` under torchrun). Every process builds the same models
(DDP broadcasts rank 0's weights), reads its own slice of each global batch (`StepBatchSampler`
with rank/world) and all-reduces gradients; rank 0 alone writes logs, samples and checkpoints and
shows the progress display. Stop decisions (time budget, signals) are all-reduced so every
process stops after the same step.
"""

from __future__ import annotations

import os

# Before numpy loads (via torch): OpenBLAS threads make the warp's small batched solves ~100× slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


@dataclass(frozen=True)
class DistInfo:
    """This process's place: rank (global), world (number of processes), local_rank (on its machine)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, …).

    Backend: NCCL when CUDA is used, gloo otherwise. Without torchrun's variables (or with
    WORLD_SIZE=1) this is a no-op returning a single-process DistInfo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world=world, local_rank=local)


def shutdown(info: DistInfo) -> None:
    if info.active and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every process if `flag` is true on any (a collective: all ranks must call it)."""
    if not info.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


def main() -> None:
    """torchrun entry point: `reenact train --ddp` with the given arguments."""
    import sys

    from reenact import cli

    sys.argv = ["reenact", "train", "--ddp", *sys.argv[1:]]
    cli.main()


if __name__ == "__main__":
    main()
