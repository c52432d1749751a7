"""Batched generation with interventions: left-pad, resolve positions per prompt, use the KV cache.

    out = reftlab.generate(reft_model, ["Who are you?", "Plan a trip"], chat_template=True,
                           max_new_tokens=32)
    out.texts[0]

What the interventions touch: the *prompt* positions their site (or ``positions=``)
selects, resolved for each prompt against its own tokens (left padding shifts nothing).
The prompt's forward pass is edited once; generated tokens are never edited
themselves, they see the edit through the KV cache (pyreft's ``intervene_on_prompt``).
A site with ``positions="all"`` is the exception: it edits every token, generated ones
included. With ``interventions=False`` (or a plain ``HookedModel``) nothing is attached and
the tokens are those of the untouched HF model. Greedy decoding gives each prompt the
same tokens in a batch as alone (padding is masked, position ids follow the mask): tested
in float64 on tiny models and in float32 on the embedded SmolLM2. Not in bfloat16: the batch
changes the matmul shapes (its size alone does, padding more) and so their rounding, and bf16's
8-bit mantissa lets that flip near-ties, so batched and single-prompt answers can part after a
few tokens. Measured on the embedded model (2026-11-30, CPU): 3 of 5 padded prompts part, and
2 of 6 prompts of equal length (no padding at all) part within 32 tokens; bf16 is not claimed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from .attach import Binding, attach
from .data.encode import format_prompt
from .models.hooked import HookedModel
from .sites import PositionsArg


@runtime_checkable
class Bindable(Protocol):
    """What ``generate`` needs of a model with interventions: its hooked base and, per batch, the
    bindings to attach. A ``ReftModel`` is one; so is ``reftlab.concepts.Steering`` (per-row steering)."""

    @property
    def hooked(self) -> HookedModel: ...

    def bindings(self, positions: PositionsArg, attention_mask: Tensor) -> list[Binding]: ...


@dataclass(frozen=True)
class Generation:
    """``texts[i]``: the decoded continuation of prompt i (special tokens dropped, cut at eos);
    ``ids[i]``: its new token ids (eos excluded); ``prompt_ids[i]``: the prompt's ids."""

    texts: list[str]
    ids: list[Tensor]
    prompt_ids: list[Tensor]


@torch.no_grad()
def generate(
    model: Bindable | HookedModel,
    prompts: Sequence[str] | str,
    *,
    positions: PositionsArg = None,
    max_new_tokens: int = 32,
    chat_template: bool | str | None = False,
    system_prompt: str | None = None,
    do_sample: bool = False,
    batch_size: int | None = None,
    interventions: bool = True,
    tokenizer: Any = None,
    **generate_kwargs: Any,
) -> Generation:
    """Generate a continuation for every prompt (see the module docstring).

    ``model``: a ReftModel (or a HookedModel: no interventions). ``positions``: None (each
    site's own), a spec like ``"l1"``, or one spec per intervention. ``chat_template``:
    True renders each prompt as a user turn of the tokenizer's template.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    bad = next((p for p in prompts if not isinstance(p, str)), None)
    if bad is not None:
        raise TypeError(f"prompts must be strings; got a {type(bad).__name__}: {bad!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size={batch_size!r} must be None (one batch) or an int >= 1")
    hooked: HookedModel = model if isinstance(model, HookedModel) else model.hooked
    tok = tokenizer or hooked.tokenizer
    if tok is None:
        raise ValueError("the model has no tokenizer; pass tokenizer=")
    texts = [format_prompt(tok, p, chat_template, system_prompt) for p in prompts]
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "pad_token_id": pad, **generate_kwargs}
    step = batch_size or len(texts)
    out_texts, out_ids, out_prompts = [], [], []
    for lo in range(0, len(texts), step):
        chunk = texts[lo : lo + step]
        enc = _left_padded(tok, chunk, templated=bool(chat_template), device=hooked.device)
        width = enc["input_ids"].shape[1]
        if interventions and not isinstance(model, HookedModel):
            bindings = model.bindings(positions, enc["attention_mask"])
            with attach(hooked, bindings, min_length=width):
                seqs = hooked.generate(**enc, **kwargs)
        else:
            seqs = hooked.generate(**enc, **kwargs)
        for b in range(len(chunk)):
            new = _cut(seqs[b, width:], eos, pad)
            out_ids.append(new.cpu())
            out_texts.append(tok.decode(new, skip_special_tokens=True))
            out_prompts.append(enc["input_ids"][b][enc["attention_mask"][b].bool()].cpu())
    return Generation(texts=out_texts, ids=out_ids, prompt_ids=out_prompts)


def _left_padded(tok: Any, texts: Sequence[str], *, templated: bool, device: Any) -> dict[str, Tensor]:
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(list(texts), return_tensors="pt", padding=True, add_special_tokens=not templated)
    finally:
        tok.padding_side = side
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def _cut(ids: Tensor, eos: int | None, pad: int | None) -> Tensor:
    """The new tokens up to (not including) the first eos, or the first pad after the end."""
    stops = [i for i, t in enumerate(ids.tolist()) if t in (eos, pad)]
    return ids[: stops[0]] if stops else ids
