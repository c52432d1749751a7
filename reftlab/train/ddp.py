"""Multi-process data parallelism for ``reftlab.train``, on ``torch.distributed``.

    torchrun --nproc-per-node 4 train.py        # or: accelerate launch --num-processes 4 train.py

Under a launcher (``WORLD_SIZE > 1`` in the environment) ``reftlab.train`` joins the
process group (NCCL for a CUDA model, gloo otherwise; an existing group is reused) and:

- shards the data: every optimizer step draws one *global* batch of
  ``world * batch_size * grad_accum`` examples from the seeded epoch order; each global
  micro-batch of ``world * batch_size`` examples is split into contiguous per-rank slices,
  so ``batch_size`` is per process (HF's ``per_device_train_batch_size``);
- all-reduces the gradients of the *trainable* parameters only (the interventions and
  anything the user unfroze), once per step, in one flat buffer:

      g = sum_ranks(g_r * n_r) / sum_ranks(n_r)        n_r: scored tokens on rank r

  which is exactly the gradient of the token-weighted mean loss over the global batch
  (the frozen base is never wrapped, broadcast or synchronised; a few thousand
  parameters need no bucketing or overlap, which is what ``DistributedDataParallel``'s
  wrapper would add around the forward);
- starts every rank from rank 0's trainable values; seeds rank ``r`` with ``seed + r``
  (dropout masks differ per rank) and saves every rank's RNG state in checkpoints;
- writes checkpoints from rank 0 only, then waits at a barrier, so a crash of any rank
  after step N leaves ``step-N`` complete; shows progress and logs on rank 0 only.

With 2 processes of batch b, a run takes the same steps as 1 process of batch 2b (same
weights to float rounding; ``tests/train/test_ddp.py``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``world`` (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched() -> bool:
    """True in a process started by ``torchrun`` / ``accelerate launch`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_device() -> torch.device:
    """The device this process should load its model on: ``cuda:{LOCAL_RANK}``, else the CPU.

    >>> local_device().type in ("cpu", "cuda")
    True
    """
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def is_main_process() -> bool:
    """True on rank 0 (or without a launcher): the process that should write files."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def process_group(device: torch.device) -> Iterator[Ranks]:
    """Join (or reuse) the process group for the duration of a training run.

    Without a launcher this yields ``Ranks()`` and touches nothing. A group created here
    is destroyed on exit; one the caller created stays.
    """
    if dist.is_available() and dist.is_initialized():
        yield Ranks(dist.get_rank(), dist.get_world_size())
        return
    if not launched():
        yield Ranks()
        return
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise RuntimeError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {name} is not set; start the script with "
                "torchrun --nproc-per-node N or accelerate launch, which set both"
            )
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield Ranks(dist.get_rank(), dist.get_world_size())
    finally:
        dist.destroy_process_group()


def shard(micro_batches: Sequence[Sequence[int]], ranks: Ranks, batch_size: int) -> list[list[int]]:
    """This rank's slice of each global micro-batch (``world * batch_size`` indices); empty slices dropped.

    >>> shard([[0, 1, 2, 3], [4, 5]], Ranks(1, 2), 2)
    [[2, 3]]
    """
    lo = ranks.rank * batch_size
    return [list(mb[lo : lo + batch_size]) for mb in micro_batches if len(mb[lo : lo + batch_size])]


def broadcast_parameters(params: Sequence[Tensor], ranks: Ranks) -> None:
    """Give every rank rank 0's values of ``params`` (one flat broadcast)."""
    if not ranks.active:
        return
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).float() for p in params])
        with collective("the broadcast of rank 0's initial parameters", ranks):
            dist.broadcast(flat, src=0)
        for p, new in zip(params, flat.split([p.numel() for p in params])):
            p.copy_(new.view_as(p))


def reduce_gradients(params: Sequence[Tensor], n_local: int, loss_local: float, ranks: Ranks) -> float:
    """All-reduce the token-weighted gradients of ``params`` in place; return the global loss.

    On entry each rank holds the gradient of its own token-weighted mean loss
    (``loss_local`` over ``n_local`` scored tokens; no grad if it had no examples); on exit
    every rank holds the gradient of the global mean (see the module docstring).
    """
    if not ranks.active:
        return loss_local
    device = params[0].device
    parts = [
        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float().to(device) * n_local for p in params
    ]
    stats = torch.tensor([loss_local * n_local, float(n_local)], dtype=torch.float32, device=device)
    flat = torch.cat([*parts, stats])
    with collective("the gradient all-reduce", ranks):
        dist.all_reduce(flat)
    n_global = float(flat[-1])
    if n_global == 0:
        raise ValueError("the global batch has no scored tokens on any rank")
    grads = (flat[:-2] / n_global).split([p.numel() for p in params])
    for p, g in zip(params, grads):
        p.grad = g.view_as(p).to(p.dtype)
    return float(flat[-2]) / n_global


def reduce_sum(values: Sequence[float], ranks: Ranks, device: torch.device) -> list[float]:
    """Sum ``values`` over ranks (e.g. an eval set's loss total and token count)."""
    if not ranks.active:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    with collective("an all-reduce of evaluation sums", ranks):
        dist.all_reduce(t)
    return t.tolist()


def barrier(ranks: Ranks) -> None:
    if ranks.active:
        with collective("the barrier after a checkpoint", ranks):
            dist.barrier()


def rng_states(ranks: Ranks) -> dict[str, Tensor]:
    """Every rank's torch RNG state as ``{"rng.torch.rank{r}": state}`` (a collective; all ranks call it)."""
    if not ranks.active:
        return {}
    gathered: list[Any] = [None] * ranks.world
    with collective("the gathering of RNG states for a checkpoint", ranks):
        dist.all_gather_object(gathered, torch.get_rng_state())
    return {f"rng.torch.rank{r}": s for r, s in enumerate(gathered)}


def restore_rng(folder: Any, ranks: Ranks) -> None:
    """Set this rank's torch RNG from a checkpoint's ``rng.torch.rank{r}`` (rank 0's is restored already)."""
    if not ranks.active or ranks.main:
        return
    from safetensors import safe_open

    with safe_open(str(folder / "tensors.safetensors"), framework="pt") as f:
        key = f"rng.torch.rank{ranks.rank}"
        if key in f.keys():  # noqa: SIM118 (safe_open handles have keys(), not __contains__)
            torch.set_rng_state(f.get_tensor(key))


def check_world(saved_world: int, ranks: Ranks, folder: Any) -> None:
    """Refuse to resume with another number of processes (the global batch would change)."""
    if saved_world != ranks.world:
        raise ValueError(
            f"cannot resume from {folder}: it was written by a run of {saved_world} process(es) and this run has "
            f"{ranks.world}; the global batch (processes x batch_size) would change. Launch {saved_world} "
            "process(es) (torchrun --nproc-per-node), or start a fresh run without resume_from"
        )


class PeerLost(RuntimeError):
    """A collective failed: another rank stopped (its own error says why) or the connection broke."""


@contextmanager
def collective(what: str, ranks: Ranks) -> Iterator[None]:
    """Turn a failed collective into ``PeerLost`` naming what this rank was doing."""
    try:
        yield
    except RuntimeError as e:
        raise PeerLost(
            f"rank {ranks.rank} of {ranks.world} lost contact with the other ranks during {what} "
            f"(another rank probably failed: see its error; {type(e).__name__}: {str(e)[:200]})"
        ) from e


def report_failure(error: BaseException, ranks: Ranks, step: int, checkpoint: str | None) -> None:
    """One clear line on stderr from a failing rank, before the launcher stops the others."""
    if not ranks.active:
        return
    where = f"the last complete checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written yet"
    what = "stopped: " if isinstance(error, PeerLost) else "failed: "
    print(
        f"reftlab.train: rank {ranks.rank} of {ranks.world} {what}step {step}, {type(error).__name__}: {error}; "
        f"the launcher stops the other ranks; {where}",
        file=sys.stderr,
        flush=True,
    )
