"""``reftlab.train``: an explicit training loop for the interventions of a ReftModel.

Over 400 lines because the loop is meant to be read in one file, in the order it runs (set-up,
resume, step, log and evaluate, checkpoint), each a short function over one run object.

Reads top to bottom: check the data, pick the forward (fast cached/packed path or the
plain hooked forward), build AdamW and the lr schedule, maybe resume, then for every
optimizer step: accumulate ``grad_accum`` micro-batches, stop on a non-finite loss,
clip, step, log, evaluate, checkpoint.

    result = reftlab.train(reft_model, dataset, epochs=20, lr=8e-3, batch_size=10)
    result.losses[-1]

The data order of epoch ``e`` is a permutation seeded by ``seed + e``, so a run resumed
from ``step-N`` draws the same batches, and with the restored optimizer, scheduler and
RNG it produces the same loss curve as an uninterrupted run. A resume is refused (before
anything is loaded) when the data or a setting that shapes the run differ from the
checkpoint's (``TrainConfig.resume_check``); logging, evaluation, checkpointing, progress
and ``fast`` may change, with a warning.

Under ``torchrun`` / ``accelerate launch`` the same loop runs in every process: each takes
its slice of every global batch, gradients of the trainable parameters are all-reduced,
rank 0 alone writes checkpoints and shows progress (``reftlab.train.ddp``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..attach import ReftLike
from ..data.collate import ReftDataCollator
from ..data.encode import IGNORE_INDEX
from ..sites import as_position_tensor
from . import ddp
from .checkpoint import STEP_PREFIX, load_checkpoint, resolve_checkpoint, save_checkpoint
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
    world_size: int = 1


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
    called after every optimizer step (in every process of a multi-process run).
    """
    cfg = (config or TrainConfig()).replace(**overrides) if overrides else (config or TrainConfig())
    examples = check_examples(dataset, len(reft_model.interventions), "training set")
    evals = (
        check_examples(eval_dataset, len(reft_model.interventions), "eval set") if eval_dataset is not None else None
    )
    collate = collator or _default_collator(reft_model)
    with ddp.process_group(reft_model.hooked.device) as ranks:
        return _train(reft_model, examples, evals, collate, cfg, ranks, on_step)


@dataclass
class _Run:
    """What the phases of one training run share (torchtune's recipe shape: set up, resume, then per
    step: batches, step, log and evaluate, checkpoint)."""

    reft_model: ReftLike
    examples: list[dict[str, Any]]
    evals: list[dict[str, Any]] | None
    collate: Callable
    cfg: TrainConfig
    plan: TrainConfig  # cfg with the global batch (batch_size x world): it sets the step count
    ranks: ddp.Ranks
    fast: FastForward | None
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    total: int
    data_sha: str
    result: TrainResult
    last_checkpoint: str | None = None


def _train(
    reft_model: ReftLike,
    examples: list[dict[str, Any]],
    evals: list[dict[str, Any]] | None,
    collate: Callable,
    cfg: TrainConfig,
    ranks: ddp.Ranks,
    on_step: Callable[[int, float], None] | None,
) -> TrainResult:
    run = _set_up(reft_model, examples, evals, collate, cfg, ranks)
    start = _resume(run) if cfg.resume_from else 0
    if run.fast is not None:
        run.fast.warm(examples)
    per_epoch = run.plan.steps_per_epoch(len(examples))
    was_training = reft_model.interventions.training
    reft_model.interventions.train()
    t0 = time.perf_counter()
    bar = tqdm(
        total=run.total, initial=start, desc="train", disable=not (cfg.progress and ranks.main), dynamic_ncols=True
    )
    log = bar.write if ranks.main else _silent
    order_epoch, order = -1, torch.empty(0, dtype=torch.long)
    step = start
    try:
        for step in range(start, run.total):
            epoch, slot = divmod(step, per_epoch)
            if epoch != order_epoch:
                order_epoch, order = epoch, _epoch_order(len(examples), cfg.seed + epoch, cfg.shuffle)
            step_loss = _step(run, step, epoch, _micro_batches(order, slot, run.plan.batch_size, cfg.grad_accum))
            done = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}")
            _log_and_evaluate(run, done, log)
            if cfg.checkpoint_dir and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != run.total:
                _checkpoint(run, done)
            if on_step is not None:
                on_step(done, step_loss)
        if evals is not None:
            run.result.eval_losses.append((run.total, _evaluate(run)))
            log(f"step {run.total}/{run.total}  eval loss {run.result.eval_losses[-1][1]:.4f}")
    except BaseException as e:
        ddp.report_failure(e, ranks, step + 1, run.last_checkpoint)
        raise
    finally:
        bar.close()
        reft_model.interventions.train(was_training)
    run.result.steps = run.total
    run.result.seconds = time.perf_counter() - t0
    return run.result


def _set_up(
    reft_model: ReftLike,
    examples: list[dict[str, Any]],
    evals: list[dict[str, Any]] | None,
    collate: Callable,
    cfg: TrainConfig,
    ranks: ddp.Ranks,
) -> _Run:
    """The forward, the seeds, the parameters (the same in every process), AdamW and the lr schedule."""
    fast = _fast_forward(reft_model, cfg.fast)
    random.seed(cfg.seed + ranks.rank)
    torch.manual_seed(cfg.seed + ranks.rank)

    params = _trainable(reft_model)
    # Buffers too: an orthogonal="householder" intervention's base is drawn at random in every process.
    ddp.broadcast_parameters([*params, *reft_model.interventions.buffers()], ranks)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), weight_decay=cfg.weight_decay)
    plan = cfg.replace(batch_size=cfg.batch_size * ranks.world)  # the global batch sets the step count
    total = plan.total_steps(len(examples))
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, cfg.schedule))
    result = TrainResult(fast=fast is not None, world_size=ranks.world)
    return _Run(
        reft_model=reft_model,
        examples=examples,
        evals=evals,
        collate=collate,
        cfg=cfg,
        plan=plan,
        ranks=ranks,
        fast=fast,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        total=total,
        data_sha=examples_fingerprint(examples),
        result=result,
    )


def _resume(run: _Run) -> int:
    """Load ``cfg.resume_from`` (checked first) into the run: weights, optimizer, schedule, RNG, the curves
    so far; returns the step it continues from."""
    folder = resolve_checkpoint(str(run.cfg.resume_from))
    _check_resume(run.cfg, folder, run.data_sha, len(run.examples))  # before anything of the model is overwritten
    ddp.check_world(int(json.loads((folder / "state.json").read_text()).get("world_size", 1)), run.ranks, folder)
    meta = load_checkpoint(folder, reft_model=run.reft_model, optimizer=run.optimizer, scheduler=run.scheduler)
    ddp.restore_rng(folder, run.ranks)
    run.last_checkpoint = str(folder)
    run.result.losses = list(meta["losses"])
    run.result.eval_losses = [(int(s), float(v)) for s, v in meta["eval_losses"]]
    return int(meta["step"])


def _step(run: _Run, step: int, epoch: int, micro: list[list[int]]) -> float:
    """One optimizer step over the ``micro`` batches (this process's share); returns the step's loss."""
    if run.ranks.active:
        micro = ddp.shard(micro, run.ranks, run.cfg.batch_size)
    device = run.reft_model.hooked.device
    batches = [(idx, _on(device, run.collate([run.examples[i] for i in idx]))) for idx in micro]
    # Weight micro-batches by scored tokens: the step's loss is the mean over all of
    # them, exactly as if the group were one batch.
    counts = [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for _, b in batches]
    n_group = sum(counts)
    run.optimizer.zero_grad(set_to_none=True)
    step_loss = 0.0
    for (idx, batch), n in zip(batches, counts):
        loss = run.fast.loss(batch, keys=idx) if run.fast is not None else plain_loss(run.reft_model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the loss is {loss.item()} at step {step + 1} (epoch {epoch + 1}, examples {idx}); "
                "lower the learning rate (lr), enable max_grad_norm, or check those examples"
            )
        (loss * n / n_group).backward()
        step_loss += loss.item() * n / n_group
    step_loss = ddp.reduce_gradients(run.params, n_group, step_loss, run.ranks)
    if run.cfg.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(run.params, run.cfg.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.result.losses.append(step_loss)
    return step_loss


def _log_and_evaluate(run: _Run, done: int, log: Callable[[str], None]) -> None:
    """After step ``done``: the mean loss every ``log_every`` steps, the eval loss every ``eval_every``."""
    cfg, losses, total = run.cfg, run.result.losses, run.total
    if cfg.log_every and done % cfg.log_every == 0:
        recent = losses[-cfg.log_every :]
        log(f"step {done}/{total}  loss {sum(recent) / len(recent):.4f}  lr {run.scheduler.get_last_lr()[0]:.2e}")
    if run.evals is not None and cfg.eval_every and done % cfg.eval_every == 0 and done != total:
        run.result.eval_losses.append((done, _evaluate(run)))
        log(f"step {done}/{total}  eval loss {run.result.eval_losses[-1][1]:.4f}")


def _evaluate(run: _Run) -> float:
    assert run.evals is not None  # the callers check
    return evaluate(run.reft_model, run.evals, run.collate, run.cfg.batch_size, run.fast, run.ranks)


def _checkpoint(run: _Run, done: int) -> None:
    """Write ``step-<done>`` (rank 0; every rank takes part in gathering the RNG states) and wait for it."""
    rng = ddp.rng_states(run.ranks)  # a collective: every rank takes part
    if run.ranks.main:
        save_checkpoint(
            str(run.cfg.checkpoint_dir),
            reft_model=run.reft_model,
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            step=done,
            state={
                "losses": run.result.losses,
                "eval_losses": run.result.eval_losses,
                "config": run.cfg.to_json(),
                "world_size": run.ranks.world,
                "n_examples": len(run.examples),
                "data_sha256": run.data_sha,
            },
            keep=run.cfg.keep_checkpoints,
            extra_tensors=rng,
        )
    ddp.barrier(run.ranks)  # step-N is complete before any rank goes on
    run.last_checkpoint = str(Path(str(run.cfg.checkpoint_dir)) / f"{STEP_PREFIX}{done}")
    run.result.checkpoints.append(run.last_checkpoint)


@torch.no_grad()
def evaluate(
    reft_model: ReftLike,
    examples: Sequence[Mapping[str, Any]],
    collate: Callable[[list[Mapping[str, Any]]], dict[str, Tensor]],
    batch_size: int,
    fast: FastForward | None = None,
    ranks: ddp.Ranks | None = None,
) -> float:
    """Token-weighted mean causal-LM loss over ``examples``, interventions in eval mode.

    In a multi-process run (``ranks``) each rank scores every ``world``-th example and the
    sums are all-reduced: every rank returns the loss over the whole set.
    """
    ranks = ranks or ddp.Ranks()
    mine = list(examples)[ranks.rank :: ranks.world]
    was = reft_model.interventions.training
    reft_model.interventions.eval()
    total, count = 0.0, 0
    try:
        for lo in range(0, len(mine), batch_size):
            batch = _on(reft_model.hooked.device, collate(mine[lo : lo + batch_size]))
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            loss = fast.loss(batch) if fast is not None else plain_loss(reft_model, batch)
            total, count = total + loss.item() * n, count + n
    finally:
        reft_model.interventions.train(was)
    summed_loss, summed_count = ddp.reduce_sum([total, count], ranks, reft_model.hooked.device)
    return summed_loss / summed_count


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
    if dataset is not None and not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(
            f"the {what} is a {type(dataset).__name__} without len() and indexing; reftlab.train draws seeded "
            "epochs by index: give a map-style set (list(...) of a small stream), or stream it through "
            "reftlab.ReftTrainerForCausalLM"
        )
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"the {what} is empty; give at least one example (reftlab.build_dataset)")
    raw = [dataset[i] for i in range(len(dataset))]
    bad = next((i for i, ex in enumerate(raw) if not isinstance(ex, Mapping)), None)
    if bad is not None:
        raise TypeError(
            f"{what} example {bad} is a {type(raw[bad]).__name__}, not a dict of input_ids/labels/"
            "intervention_locations; build the set with reftlab.build_dataset or a data module"
        )
    examples = [dict(ex) for ex in raw]
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
        locs = as_position_tensor(ex["intervention_locations"], f"{what} example {i}: intervention_locations")
        if locs.ndim != 2 or locs.shape[0] not in (1, n_interventions):
            raise ValueError(
                f"{what} example {i}: intervention_locations has shape {tuple(locs.shape)}, expected "
                f"[{n_interventions}, n] (one row per intervention)"
            )
        if bool((locs < -1).any()):
            raise ValueError(
                f"{what} example {i}: intervention location {int(locs.min())} is below -1; locations are absolute "
                "prompt positions and -1 marks an empty slot (not the last token)"
            )
        if bool((locs >= prompt_length).any()):
            raise ValueError(
                f"{what} example {i}: intervention location {int(locs.max())} is beyond its prompt of {prompt_length} "
                "tokens; interventions act on prompt tokens only (use positions like 'l1' or 'f3+l3', or fix the locations)"
            )
    return examples


def _check_resume(cfg: TrainConfig, folder: Path, data_sha: str, n_examples: int) -> None:
    """Refuse to resume a different run (settings or data); warn about harmless changes."""
    saved = json.loads((folder / "state.json").read_text())
    try:
        notes = cfg.resume_check(saved.get("config", {}))
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    for note in notes:
        warnings.warn(f"resuming from {folder} with a changed setting: {note}", stacklevel=4)
    if saved.get("data_sha256", data_sha) != data_sha:
        raise ValueError(
            f"cannot resume from {folder}: the training set differs from the one it was trained on "
            f"({saved.get('n_examples', '?')} examples then, {n_examples} now, or different tokens); "
            "resume with the same data, or start a fresh run without resume_from"
        )


def examples_fingerprint(examples: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of every example's ``input_ids``, ``labels`` and ``intervention_locations``, in order."""
    h = hashlib.sha256()
    for ex in examples:
        for name in ("input_ids", "labels", "intervention_locations"):
            h.update(torch.as_tensor(ex[name], dtype=torch.long).numpy().tobytes())
            h.update(b"|")
        h.update(b"\n")
    return h.hexdigest()


def _on(device: torch.device, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch's tensors on the model's input device (the collator builds them on the CPU)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _silent(message: str) -> None:
    """Logging on ranks other than 0: nothing."""


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
