"""``reftlab.train``: an explicit training loop for the interventions of a ReftModel.

Reads top to bottom: check the data, pick the forward (fast cached/packed path or the
plain hooked forward), build AdamW and the lr schedule, maybe resume, then for every
optimizer step: accumulate ``grad_accum`` micro-batches, stop on a non-finite loss,
clip, step, log, evaluate, checkpoint.

    result = reftlab.train(reft_model, dataset, epochs=20, lr=8e-3, batch_size=10)
    result.losses[-1]

The data order of epoch ``e`` is a permutation seeded by ``seed + e``, so a run resumed
from ``step-N`` draws the same batches, and with the restored optimizer, scheduler and
RNG it produces the same loss curve as an uninterrupted run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..attach import ReftLike
from ..data.collate import ReftDataCollator
from ..data.encode import IGNORE_INDEX
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .fast_forward import FastForward, why_not
from .loss import plain_loss


@dataclass
class TrainResult:
    """Per-step training losses, ``(step, loss)`` evaluations, and how the run went."""

    losses: list[float] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0
    fast: bool = False
    seconds: float = 0.0
    checkpoints: list[str] = field(default_factory=list)


def train(
    reft_model: ReftLike,
    dataset: Any,
    config: TrainConfig | None = None,
    *,
    eval_dataset: Any = None,
    collator: Callable[[Sequence[Mapping[str, Any]]], dict[str, torch.Tensor]] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train ``reft_model``'s trainable parameters on ``dataset`` (see the module docstring).

    ``dataset``: examples with ``input_ids``, ``labels``, ``intervention_locations`` and
    ``prompt_length`` (``reftlab.build_dataset`` or a pyreft-style data module's
    ``train_dataset``). ``overrides`` are TrainConfig fields. ``on_step(step, loss)`` is
    called after every optimizer step.
    """
    cfg = (config or TrainConfig()).replace(**overrides) if overrides else (config or TrainConfig())
    examples = check_examples(dataset, len(reft_model.interventions), "training set")
    evals = (
        check_examples(eval_dataset, len(reft_model.interventions), "eval set") if eval_dataset is not None else None
    )
    collate = collator or _default_collator(reft_model)
    fast = _fast_forward(reft_model, cfg.fast)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    params = _trainable(reft_model)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    total = cfg.total_steps(len(examples))
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, cfg.schedule))
    result = TrainResult(fast=fast is not None)
    start = 0
    if cfg.resume_from:
        meta = load_checkpoint(cfg.resume_from, reft_model=reft_model, optimizer=optimizer, scheduler=scheduler)
        start = int(meta["step"])
        result.losses = list(meta["losses"])
        result.eval_losses = [tuple(x) for x in meta["eval_losses"]]  # type: ignore[misc]
    if fast is not None:
        fast.warm(examples)

    per_epoch = cfg.steps_per_epoch(len(examples))
    was_training = reft_model.interventions.training
    reft_model.interventions.train()
    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=start, desc="train", disable=not cfg.progress, dynamic_ncols=True)
    order_epoch, order = -1, torch.empty(0, dtype=torch.long)
    try:
        for step in range(start, total):
            epoch, slot = divmod(step, per_epoch)
            if epoch != order_epoch:
                order_epoch, order = epoch, _epoch_order(len(examples), cfg.seed + epoch, cfg.shuffle)
            micro = _micro_batches(order, slot, cfg.batch_size, cfg.grad_accum)
            batches = [(idx, collate([examples[i] for i in idx])) for idx in micro]
            # Weight micro-batches by scored tokens: the step's loss is the mean over all of
            # them, exactly as if the group were one batch.
            counts = [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for _, b in batches]
            n_group = sum(counts)
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for (idx, batch), n in zip(batches, counts):
                loss = fast.loss(batch, keys=idx) if fast is not None else plain_loss(reft_model, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"the loss is {loss.item()} at step {step + 1} (epoch {epoch + 1}, examples {idx}); "
                        "lower the learning rate (lr), enable max_grad_norm, or check those examples"
                    )
                (loss * n / n_group).backward()
                step_loss += loss.item() * n / n_group
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            result.losses.append(step_loss)
            done = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}")
            if cfg.log_every and done % cfg.log_every == 0:
                recent = result.losses[-cfg.log_every :]
                bar.write(
                    f"step {done}/{total}  loss {sum(recent) / len(recent):.4f}  lr {scheduler.get_last_lr()[0]:.2e}"
                )
            if evals is not None and cfg.eval_every and done % cfg.eval_every == 0 and done != total:
                result.eval_losses.append((done, evaluate(reft_model, evals, collate, cfg.batch_size, fast)))
                bar.write(f"step {done}/{total}  eval loss {result.eval_losses[-1][1]:.4f}")
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != total:
                path = save_checkpoint(
                    cfg.checkpoint_dir,
                    reft_model=reft_model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    step=done,
                    state={"losses": result.losses, "eval_losses": result.eval_losses, "config": cfg.to_json()},
                    keep=cfg.keep_checkpoints,
                )
                result.checkpoints.append(str(path))
            if on_step is not None:
                on_step(done, step_loss)
        if evals is not None:
            result.eval_losses.append((total, evaluate(reft_model, evals, collate, cfg.batch_size, fast)))
            bar.write(f"step {total}/{total}  eval loss {result.eval_losses[-1][1]:.4f}")
    finally:
        bar.close()
        reft_model.interventions.train(was_training)
    result.steps = total
    result.seconds = time.perf_counter() - t0
    return result


@torch.no_grad()
def evaluate(
    reft_model: ReftLike,
    examples: Sequence[Mapping[str, Any]],
    collate: Callable,
    batch_size: int,
    fast: FastForward | None = None,
) -> float:
    """Token-weighted mean causal-LM loss over ``examples``, interventions in eval mode."""
    was = reft_model.interventions.training
    reft_model.interventions.eval()
    total, count = 0.0, 0
    try:
        for lo in range(0, len(examples), batch_size):
            batch = collate(list(examples[lo : lo + batch_size]))
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            loss = fast.loss(batch) if fast is not None else plain_loss(reft_model, batch)
            total, count = total + loss.item() * n, count + n
    finally:
        reft_model.interventions.train(was)
    return total / count


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr after ``step`` scheduler steps: linear warmup, then decay.

    >>> [round(lr_factor(s, 10, 2, "linear"), 3) for s in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return max(0.0, 1.0 - progress)


def check_examples(dataset: Any, n_interventions: int, what: str) -> list[dict[str, Any]]:
    """Materialise ``dataset`` as a list of dicts and check every example; errors name it."""
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"the {what} is empty; give at least one example (reftlab.build_dataset)")
    examples = [dict(dataset[i]) for i in range(len(dataset))]
    for i, ex in enumerate(examples):
        missing = [k for k in ("input_ids", "labels", "intervention_locations") if k not in ex]
        if missing:
            raise ValueError(
                f"{what} example {i} has no {missing}; build it with reftlab.build_dataset or a data module"
            )
        labels = torch.as_tensor(ex["labels"])
        scored = (labels != IGNORE_INDEX).nonzero()
        if len(scored) == 0:
            raise ValueError(
                f"{what} example {i} has no response tokens (all labels are -100); drop it or fix its response"
            )
        prompt_length = int(ex.get("prompt_length", int(scored[0])))
        locs = torch.as_tensor(ex["intervention_locations"])
        if locs.ndim != 2 or locs.shape[0] not in (1, n_interventions):
            raise ValueError(
                f"{what} example {i}: intervention_locations has shape {tuple(locs.shape)}, expected "
                f"[{n_interventions}, n] (one row per intervention)"
            )
        if bool((locs >= prompt_length).any()):
            raise ValueError(
                f"{what} example {i}: intervention location {int(locs.max())} is beyond its prompt of {prompt_length} "
                "tokens; interventions act on prompt tokens only (use positions like 'l1' or 'f3+l3', or fix the locations)"
            )
    return examples


def _fast_forward(reft_model: ReftLike, wanted: bool | None) -> FastForward | None:
    if wanted is False:
        return None
    reason = why_not(reft_model)
    if reason is not None:
        if wanted:
            raise ValueError(f"fast=True but the fast path does not apply: {reason}; use fast=None or False")
        return None
    return FastForward(reft_model)


def _trainable(reft_model: ReftLike) -> list[torch.nn.Parameter]:
    seen: set[int] = set()
    params = []
    for p in reft_model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            params.append(p)
    if not params:
        raise ValueError("nothing to train: no parameter of the ReftModel requires grad")
    return params


def _default_collator(reft_model: ReftLike) -> ReftDataCollator:
    tok = reft_model.tokenizer
    pad = None if tok is None else (tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    return ReftDataCollator(pad_token_id=int(pad) if pad is not None else 0)


def _epoch_order(n: int, seed: int, shuffle: bool) -> torch.Tensor:
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _micro_batches(order: torch.Tensor, slot: int, batch_size: int, grad_accum: int) -> list[list[int]]:
    lo = slot * batch_size * grad_accum
    chunk = order[lo : lo + batch_size * grad_accum].tolist()
    return [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
