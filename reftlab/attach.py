"""The only place interventions become hooks: a context manager around a model call.

``attach(model, bindings)`` installs one TransformerLens hook per binding for the
duration of the ``with`` block and removes them (and their taps on the HF model) in
``finally``, also after an exception. Each hook gathers the binding's positions,
applies the intervention to those ``[n, d_model]`` vectors, and scatters them back;
other positions pass through untouched.

A binding applies an ``Edit``: an ``Intervention``, or any object with ``kind``,
``arity`` and a call ``[..., d_model] -> [..., d_model]`` (analysis binds taps and
ablated copies the same way). An edit with ``arity = k > 1`` reads groups of k
positions at once: the binding's ``[batch, n]`` positions (n
divisible by k) are grouped ``[batch, n/k, k]``, the hook gathers ``[N, k, d_model]``,
calls the intervention, and scatters all k rows back. Groups with any -1 slot are
skipped. A binding's optional ``rows`` mask limits it to some examples of the batch
(per-example routing), also for positions=None. A binding with ``after_prompt=True``
edits only the tokens after the prompt (``min_length`` tokens): the generated ones.

Prompt or decode step? Positions are absolute indices into the sequence, so each hook
needs to know where the chunk it sees starts: its *offset*, the number of tokens the KV
cache held when the model call began (read from the call's ``cache`` / ``past_key_values``,
or ``cache_position``; 0 without a cache). A chunk covers positions ``offset..offset+w-1``;
a binding edits the positions that fall inside it. A KV-cached decode step (offset = the
tokens so far) thus never re-edits a prompt position, also after a one-token prompt, whose
prefill is as wide as a decode step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from .config import ReftConfig
from .interventions import InterventionDict
from .models.cache import passed_cache
from .models.hooked import HookedModel
from .sites import PositionsArg, Site


@runtime_checkable
class Edit(Protocol):
    """What a binding applies at its positions: ``[..., d_model] -> [..., d_model]``.

    With ``arity = k > 1`` it maps groups ``[..., k, d_model]`` to the same shape.
    ``kind`` names it in error messages. Every ``Intervention`` is one; so are the
    analysis taps (``reftlab.analysis.capture.Tap``) and ablated copies.
    """

    @property
    def kind(self) -> str: ...

    @property
    def arity(self) -> int: ...

    def __call__(self, h: Tensor, /) -> Tensor: ...


@dataclass(frozen=True)
class Binding:
    """An intervention bound to a hook point and, per example, the positions it edits.

    ``positions`` is ``[batch, n]`` absolute indices into the padded input with -1 for
    an empty slot (-1 never means "last token"; an index below -1 is an error), or None
    for every position of every chunk the hook sees (generated tokens included).
    ``ReftModel.bindings`` also refuses indices that point at padding.
    ``rows`` (optional, ``[batch]`` bool) restricts the binding to those examples.
    ``after_prompt`` (with positions None): only tokens after the first ``min_length``
    of the sequence, i.e. the generated tokens during ``generate``.
    """

    hook: str
    intervention: Edit
    positions: Int[Tensor, "batch n"] | None = None
    rows: Bool[Tensor, " batch"] | None = None
    after_prompt: bool = False

    def __post_init__(self) -> None:
        if self.after_prompt and self.positions is not None:
            raise ValueError("after_prompt=True edits every token after the prompt; give positions=None")


def apply_at_positions(
    h: Float[Tensor, "batch pos d_model"],
    intervention: Edit,
    positions: Int[Tensor, "batch n"] | None,
    min_length: int = 0,
    rows: Bool[Tensor, " batch"] | None = None,
    *,
    after_prompt: bool = False,
    offset: int = 0,
) -> Float[Tensor, "batch pos d_model"]:
    """Edit ``h`` at ``positions`` only; ``h`` holds the sequence's positions ``offset..offset+pos-1``.

    ``offset`` is the number of tokens the KV cache already holds (0 for a prompt's own
    forward pass): positions before it belong to earlier chunks and are left alone, so a
    decode step never re-edits a prompt position. ``after_prompt`` (positions None) edits
    the positions from ``min_length`` (the prompt length) on, in whichever chunk they fall.
    """
    if after_prompt:
        if positions is not None:
            raise ValueError("after_prompt=True edits every token after the prompt; give positions=None")
        start = max(0, min_length - offset)
        if start >= h.shape[1]:
            return h
        tail = apply_at_positions(h[:, start:], intervention, None, rows=rows)  # [batch, pos - start, d_model]
        return torch.cat([h[:, :start], tail], dim=1)
    if positions is not None and offset:
        positions = _in_chunk(positions, offset, intervention.arity)
        if positions is None:
            return h
    arity = intervention.arity
    if positions is None:
        if arity != 1:
            raise ValueError(f"{intervention.kind} reads groups of {arity} positions; give it positions, not 'all'")
        if rows is None:
            return call_edit(intervention, h)
        selected = rows.to(h.device).nonzero().squeeze(1)  # [n_rows]
        return h.index_copy(0, selected, call_edit(intervention, h[selected])) if len(selected) else h
    if positions.shape[0] != h.shape[0]:
        raise ValueError(f"positions cover {positions.shape[0]} examples but the batch has {h.shape[0]}")
    if positions.numel() and int(positions.min()) < -1:
        raise ValueError(
            f"position {int(positions.min())} is below -1; positions are absolute indices into the padded "
            "input and -1 marks an empty slot (use a spec such as 'l1' for positions counted from the end)"
        )
    if positions.numel() and int(positions.max()) >= h.shape[1]:
        raise ValueError(
            f"position {int(positions.max())} is beyond the sequence length {h.shape[1]}; "
            "positions index the padded input"
        )
    positions = positions.to(h.device)
    if rows is not None:
        positions = positions.masked_fill(~rows.to(h.device)[:, None], -1)
    if arity != 1:
        return _apply_grouped(h, intervention, positions, arity)
    valid = positions >= 0
    rows = torch.arange(h.shape[0], device=h.device)[:, None].expand_as(positions)[valid]  # [N]
    cols = positions[valid]  # [N]
    edited = call_edit(intervention, h[rows, cols])  # [N, d_model]
    # Out of place: autograd keeps h for the frozen layers below. Duplicate (row, col)
    # pairs carry identical values, so their write order does not matter.
    return h.index_put((rows, cols), edited)


def _in_chunk(positions: Int[Tensor, "batch n"], offset: int, arity: int) -> Int[Tensor, "batch n"] | None:
    """Absolute positions as indices into a chunk starting at ``offset`` (earlier ones: -1); None if
    none falls in it (a decode step after the prompt). A group of k slots must not straddle chunks."""
    if positions.numel() == 0 or int(positions.max()) < offset:
        return None
    inside = positions >= offset
    if arity > 1:
        groups = inside.reshape(positions.shape[0], -1, arity)  # [batch, n/k, k]
        valid = (positions >= 0).reshape(groups.shape).all(dim=-1, keepdim=True)
        if bool((valid & (groups.any(dim=-1, keepdim=True) != groups.all(dim=-1, keepdim=True))).any()):
            raise ValueError(
                f"a group of {arity} positions straddles two chunks of the sequence (the KV cache held {offset} "
                "tokens); feed the prompt in one forward pass"
            )
    return torch.where(inside, positions - offset, -1)


def _apply_grouped(
    h: Float[Tensor, "batch pos d_model"], intervention: Edit, positions: Int[Tensor, "batch n"], k: int
) -> Float[Tensor, "batch pos d_model"]:
    if positions.shape[1] % k:
        raise ValueError(
            f"{intervention.kind} reads groups of {k} positions but got {positions.shape[1]} per example; "
            f"give a multiple of {k} (e.g. 'l{k}')"
        )
    groups = positions.reshape(positions.shape[0], -1, k)  # [batch, n/k, k]
    valid = (groups >= 0).all(dim=-1)  # [batch, n/k]: a group with any empty slot is skipped
    cols = groups[valid]  # [N, k]
    rows = torch.arange(h.shape[0], device=h.device)[:, None].expand(valid.shape)[valid][:, None].expand_as(cols)
    edited = call_edit(intervention, h[rows, cols])  # [N, k, d_model] -> [N, k, d_model]
    return h.index_put((rows, cols), edited)


def call_edit(intervention: Edit, x: Float[Tensor, "*n d_model"]) -> Float[Tensor, "*n d_model"]:
    """``intervention(x)`` on the intervention's device and in its dtype, returned on ``x``'s, in ``x``'s.

    On a dispatched base a module's *input* arrives from the previous module's device
    (accelerate moves it only inside the module's forward): the vectors travel, not the weights.
    On a bfloat16 / float16 base the interventions keep float32 master weights
    (``get_reft_model``): the gathered vectors are upcast, the edit is computed in float32,
    and the result is cast back.
    """
    first = next(intervention.parameters(), None) if isinstance(intervention, nn.Module) else None
    if first is None or (first.device == x.device and first.dtype == x.dtype):
        return intervention(x)
    return intervention(x.to(device=first.device, dtype=first.dtype)).to(device=x.device, dtype=x.dtype)


@contextmanager
def attach(
    model: HookedModel,
    bindings: Sequence[Binding],
    *,
    min_length: int = 0,
) -> Iterator[HookedModel]:
    """Install ``bindings`` as forward hooks for the duration of the block.

    Bindings on the same hook run in the order given (a sequential composition).
    ``min_length``: the prompt length, for ``after_prompt`` bindings. Each call of the model
    records its offset (the tokens its KV cache holds) for the hooks; see the module docstring.
    """
    chunk = _Chunk()
    hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = []  # HookedRootModule.hooks' type
    for b in bindings:
        model.hook_point(b.hook)  # a clear error for a bad name, before anything is installed
        fn = partial(
            _hook,
            intervention=b.intervention,
            positions=b.positions,
            min_length=min_length,
            rows=b.rows,
            after_prompt=b.after_prompt,
            chunk=chunk,
        )
        hooks.append((b.hook, fn))
    # Both: a peft wrapper calls the HF model's forward directly, past its hooks; generate calls the HF model.
    outer = {id(m): m for m in (model.model, model.hf_model)}.values()
    handles = [m.register_forward_pre_hook(chunk.record, with_kwargs=True) for m in outer] if bindings else []
    try:
        with model.hooks(fwd_hooks=hooks):
            yield model
    finally:
        for handle in handles:
            handle.remove()


class _Chunk:
    """Where the current model call's tokens start in the sequence (see the module docstring)."""

    def __init__(self) -> None:
        self.offset = 0

    def record(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.offset = 0
        cache_position = kwargs.get("cache_position")
        cache = passed_cache(kwargs)
        if isinstance(cache_position, Tensor) and cache_position.numel():
            self.offset = int(cache_position.reshape(-1)[0])
        elif cache is not None and hasattr(cache, "get_seq_length"):
            self.offset = int(cache.get_seq_length())


def _hook(
    h: Tensor,
    hook: object,
    *,
    intervention: Edit,
    positions: Tensor | None,
    min_length: int,
    rows: Tensor | None,
    after_prompt: bool,
    chunk: _Chunk,
) -> Tensor:
    return apply_at_positions(
        h, intervention, positions, min_length, rows, after_prompt=after_prompt, offset=chunk.offset
    )


@runtime_checkable
class ReftLike(Protocol):
    """The contract train/, analysis/, io/ and viz/ rely on: what a ``ReftModel`` offers them.

    ``reftlab.ReftModel`` is the implementation (its test checks it satisfies this
    protocol); typing consumers against the protocol keeps the rooms below
    ``reft_model.py`` (``io/``) free of an upward import.
    """

    @property
    def hooked(self) -> HookedModel:
        """The base model with its hook points."""

    @property
    def model(self) -> nn.Module:
        """What runs: the HF model, or its peft wrapper (``hooked.model``)."""

    @property
    def tokenizer(self) -> Any:
        """The tokenizer given with the model (None when none was)."""

    @property
    def config(self) -> ReftConfig:
        """The representations: one site and intervention spec each."""

    @property
    def sites(self) -> tuple[Site, ...]:
        """One site per intervention, in binding order."""

    @property
    def interventions(self) -> InterventionDict:
        """The named interventions, in binding order (a shared module appears under each key)."""

    @property
    def origins(self) -> Mapping[str, str]:
        """Intervention key -> the ReFT it came from, for composed models; empty otherwise."""

    @property
    def merged(self) -> bool:
        """True once ``merge_into_base`` folded the interventions into the base weights."""

    def bindings(
        self,
        positions: PositionsArg,
        attention_mask: Tensor,
        prompt_lengths: Int[Tensor, " batch"] | Sequence[int] | None = None,
        *,
        allow_empty: bool = False,
    ) -> list[Binding]:
        """One ``Binding`` per intervention for this batch (see ``ReftModel.run`` for ``positions``).

        ``allow_empty``: a batch in which an intervention has no position at all is not an error.
        """

    def num_intervention_parameters(self) -> int:
        """Intervention parameters, a shared module counted once."""

    # nn.Module's own, used by training and analysis
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def modules(self) -> Iterator[nn.Module]: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...
