"""TrainConfig: every knob of ``reftlab.train``, as a frozen, validated dataclass."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ..mapping import check_keys

SCHEDULES = ("linear", "cosine", "constant")

# Fields a resumed run may change: they alter logging, saving and speed, never a loss value
# (the fast path computes the plain forward's numbers). Every other field changes the run
# (a new field too, until it is listed here), so resuming with a different value is refused.
HARMLESS_ON_RESUME = frozenset(
    {"fast", "log_every", "eval_every", "checkpoint_every", "checkpoint_dir", "keep_checkpoints", "progress"}
)
# The run's length: with a constant lr and no warmup ratio, every step's lr is independent of
# the total, so a longer (or shorter) run continues the saved one exactly.
LENGTH_FIELDS = ("epochs", "max_steps")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Settings of the native training loop; an unknown or bad value fails on construction.

    >>> TrainConfig(epochs=3, batch_size=10).steps_per_epoch(10)
    1
    >>> TrainConfig(lr=-1)
    Traceback (most recent call last):
    ValueError: TrainConfig.lr=-1 must be > 0
    """

    epochs: int = field(default=1, metadata={"help": "passes over the training set"})
    max_steps: int | None = field(
        default=None, metadata={"help": "stop after this many optimizer steps (overrides epochs)"}
    )
    batch_size: int = field(default=8, metadata={"help": "examples per forward pass"})
    grad_accum: int = field(default=1, metadata={"help": "forward passes per optimizer step"})
    lr: float = field(default=4e-3, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay (R stays orthonormal)"})
    betas: Sequence[float] = field(default=(0.9, 0.999), metadata={"help": "AdamW betas"})
    schedule: Literal["linear", "cosine", "constant"] = field(
        default="linear", metadata={"help": f"lr decay after warmup: {', '.join(SCHEDULES)}"}
    )
    warmup_steps: int = field(default=0, metadata={"help": "steps of linear warmup from 0 to lr"})
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "warmup as a fraction of all steps (if warmup_steps is 0)"}
    )
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "clip the gradient norm (None: no clipping)"})
    seed: int = field(default=0, metadata={"help": "seeds data order, dropout and initialisation-free randomness"})
    shuffle: bool = field(default=True, metadata={"help": "shuffle the training set every epoch"})
    fast: bool | None = field(
        default=None,
        metadata={"help": "cached/packed fast path: None = when supported, True = required, False = never"},
    )
    log_every: int = field(default=10, metadata={"help": "log the mean training loss every N steps (0: never)"})
    eval_every: int = field(
        default=0, metadata={"help": "evaluate every N steps (0: only at the end, if an eval set is given)"}
    )
    checkpoint_every: int = field(default=0, metadata={"help": "write a resumable checkpoint every N steps (0: never)"})
    checkpoint_dir: str | None = field(default=None, metadata={"help": "where checkpoints go (step-N folders)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "how many recent checkpoints to keep (0: all)"})
    resume_from: str | None = field(
        default=None,
        metadata={
            "help": "a step-N folder, or a checkpoint_dir (its latest step); same data and settings "
            "(only fast, logging, eval, checkpointing and progress may change)"
        },
    )
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> None:
            raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} {rule}")

        for name in ("epochs", "batch_size", "grad_accum"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "must be an int >= 1")
        for name in ("warmup_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                bad(name, "must be an int >= 0")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            bad("max_steps", "must be None or an int >= 1")
        for name in ("lr", "weight_decay", "warmup_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                bad(name, "must be a number")
        if self.max_grad_norm is not None and (
            isinstance(self.max_grad_norm, bool) or not isinstance(self.max_grad_norm, (int, float))
        ):
            bad("max_grad_norm", "must be None or a number")
        if not self.lr > 0:
            bad("lr", "must be > 0")
        if self.weight_decay < 0:
            bad("weight_decay", "must be >= 0")
        if not 0 <= self.warmup_ratio < 1:
            bad("warmup_ratio", "must be in [0, 1)")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"must be one of {', '.join(SCHEDULES)}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            bad("max_grad_norm", "must be None or > 0")
        if len(tuple(self.betas)) != 2:
            bad("betas", "must be two floats")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.checkpoint_every and not self.checkpoint_dir:
            bad("checkpoint_every", "needs checkpoint_dir (where to write step-N folders)")

    def resume_check(self, saved: Mapping[str, Any]) -> list[str]:
        """Compare with the TrainConfig a checkpoint was written with (its ``to_json()``).

        Raises ValueError naming every field that would change the run (lr, batch_size,
        seed, schedule, ...); returns one note per harmless change (``HARMLESS_ON_RESUME``),
        for the caller to warn about. ``epochs``/``max_steps`` may change only with
        ``schedule="constant"`` and ``warmup_ratio=0`` (the lr of each step then does not
        depend on the run's length).

        >>> TrainConfig(log_every=5).resume_check(TrainConfig().to_json())
        ['log_every: 10 -> 5']
        >>> TrainConfig(lr=1e-3).resume_check(TrainConfig().to_json())
        Traceback (most recent call last):
        ValueError: cannot resume: the checkpoint was trained with lr=0.004, this TrainConfig has lr=0.001; resuming with a different value would change the run. Restore the saved value, or start a fresh run without resume_from
        """
        now = self.to_json()
        known = {f.name for f in fields(self)} - {"resume_from"}
        unknown = sorted(set(saved) - known - {"resume_from"})
        if unknown:
            raise ValueError(
                f"cannot resume: the checkpoint's TrainConfig has fields {unknown} that this reftlab does not know; "
                "resume with the reftlab version that wrote it"
            )
        changed = [name for name in sorted(known & set(saved)) if _json_value(saved[name]) != _json_value(now[name])]
        length_ok = self.schedule == "constant" and self.warmup_ratio == 0 and saved.get("warmup_ratio", 0) == 0
        refused = [n for n in changed if n not in HARMLESS_ON_RESUME and not (n in LENGTH_FIELDS and length_ok)]
        if refused:
            what = "; ".join(f"{n}={saved[n]!r}, this TrainConfig has {n}={now[n]!r}" for n in refused)
            why = (
                " (the run's length sets the lr schedule unless schedule='constant' and warmup_ratio=0)"
                if set(refused) & set(LENGTH_FIELDS)
                else ""
            )
            raise ValueError(
                f"cannot resume: the checkpoint was trained with {what}; resuming with a different value would change "
                f"the run{why}. Restore the saved value, or start a fresh run without resume_from"
            )
        return [f"{n}: {saved[n]!r} -> {now[n]!r}" for n in changed]

    def steps_per_epoch(self, n_examples: int) -> int:
        batches = -(-n_examples // self.batch_size)
        return -(-batches // self.grad_accum)

    def total_steps(self, n_examples: int) -> int:
        return self.max_steps if self.max_steps is not None else self.epochs * self.steps_per_epoch(n_examples)

    def replace(self, **changes: Any) -> "TrainConfig":
        check_keys(changes, TrainConfig, "TrainConfig")
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "training") -> "TrainConfig":
        """Build from a dict (e.g. a YAML section); unknown keys are an error naming them."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where} must be a mapping of TrainConfig fields, got {data!r}")
        check_keys(data, cls, where)
        return cls(**dict(data))


def _json_value(x: Any) -> Any:
    """Tuples and lists compare equal (JSON has only lists)."""
    return [_json_value(v) for v in x] if isinstance(x, (list, tuple)) else x
