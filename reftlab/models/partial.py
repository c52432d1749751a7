"""Run part of a family's decoder: blocks ``lo..hi-1`` only, fed given hidden states, the rest captured.

The fast training path (``reftlab.train.fast_forward``) caches the input of the lowest intervened
block and runs only the blocks above it, through the family's *own* decoder forward (its positions,
masks, attention implementation and MoE routing stay the family's code). ``partial_forward`` is
how: for the duration of the ``with`` block

- blocks outside ``lo..hi-1`` return their input (their ``forward`` is shadowed on the instance;
  the module list keeps its length, so families that index ``config.layer_types[i]`` line up);
- a pre-hook on block ``lo`` (on the final norm when ``lo`` is past the last block) replaces its
  hidden states with ``feed``: whatever the embedding layer computed is discarded, so Gemma's
  sqrt(d) scaling or GPT-2's position embeddings are never applied twice;
- a pre-hook on the final norm records the hidden states that reach it (the output of block ``hi-1``).

This and ``reftlab.attach`` are the only places reftlab installs hooks; both remove every hook in
``finally``, also after an exception.

    with partial_forward(hf, arch, lo=3, hi=4, feed=h) as run:
        out = decoder(inputs_embeds=h, attention_mask=mask, position_ids=pos, use_cache=False)
    run.before_norm  # [1, N, d_model]: the output of block 3
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .arch import ArchSpec, get_layers, get_module


@dataclass
class PartialRun:
    """What a partial forward recorded: the hidden states entering the final norm (None before the call)."""

    before_norm: Tensor | None = None


@contextmanager
def partial_forward(
    hf: nn.Module, arch: ArchSpec, lo: int, hi: int, *, feed: Tensor | None = None
) -> Iterator[PartialRun]:
    """Within the block, a call of the family's decoder runs blocks ``lo..hi-1`` only (see the module
    docstring); ``feed`` (optional) replaces the hidden states entering block ``lo``."""
    layers = get_layers(hf, arch)
    norm = get_module(hf, arch.final_norm)
    run = PartialRun()

    def capture(module: nn.Module, args: tuple[Any, ...]) -> None:
        run.before_norm = args[0]

    def give(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (feed, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": feed}

    handles = [norm.register_forward_pre_hook(capture)]
    try:
        if feed is not None:
            entry = layers[lo] if lo < len(layers) else norm
            handles.append(entry.register_forward_pre_hook(give, with_kwargs=True, prepend=True))
        with _skipping(layers, lo, hi, arch.block_returns_tuple):
            yield run
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _skipping(layers: nn.ModuleList, lo: int, hi: int, returns_tuple: bool) -> Iterator[None]:
    """For the duration of the block, blocks outside ``lo..hi-1`` return their input unchanged."""

    def identity(hidden_states: Tensor, *args: Any, **kwargs: Any) -> Any:
        return (hidden_states, None) if returns_tuple else hidden_states

    saved: list[tuple[nn.Module, Any]] = []
    try:
        for i, layer in enumerate(layers):
            if not lo <= i < hi:
                saved.append((layer, layer.__dict__.get("forward", _NOTHING)))
                layer.__dict__["forward"] = identity  # shadows the class's forward; hooks still run
        yield
    finally:
        for layer, previous in saved:
            if previous is _NOTHING:
                del layer.__dict__["forward"]
            else:
                layer.__dict__["forward"] = previous


_NOTHING = object()
