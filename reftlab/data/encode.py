"""Turning (prompt, response) pairs into token ids, labels and intervention locations.

One example becomes ``input_ids = prompt_ids + response_ids (+ eos)``, with
``labels = -100`` on every prompt token and the response ids elsewhere, and
``prompt_length = len(prompt_ids)``. Prompt and response are tokenized separately, so
the prompt's ids are exactly the ids a model sees when it is asked to generate.

Intervention locations are absolute indices into the (right-padded) sequence, one row
per intervention, resolved like ``reftlab.resolve_positions``: ``l1`` is the last
prompt token; slots a short prompt cannot fill are -1, never a response token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import torch

from ..sites import Positions, resolve_positions

IGNORE_INDEX = -100


def format_prompt(
    tokenizer: Any, prompt: str, chat_template: bool | str | None, system_prompt: str | None = None
) -> str:
    """The prompt text the model sees: raw, or rendered through the tokenizer's chat template.

    ``chat_template`` True uses the tokenizer's own template; a string is a Jinja template.
    """
    if not chat_template:
        if system_prompt is not None:
            raise ValueError("system_prompt needs chat_template=True (it is a chat message)")
        return prompt
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt is not None else []) + [
        {"role": "user", "content": prompt}
    ]
    kwargs = {"chat_template": chat_template} if isinstance(chat_template, str) else {}
    if not isinstance(chat_template, str) and getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("chat_template=True but this tokenizer has no chat template; pass a Jinja template string")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


def context_length(tokenizer: Any, model: Any = None) -> int | None:
    """The longest sequence the model accepts: its ``max_position_embeddings`` (or n_positions),
    else the tokenizer's ``model_max_length`` when that is a real limit; None if unknown."""
    hf = getattr(model, "hf_model", None) or getattr(getattr(model, "hooked", None), "hf_model", None) or model
    cfg = getattr(hf, "config", None)
    if cfg is not None:
        text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        for name in ("max_position_embeddings", "n_positions"):
            if isinstance(getattr(text, name, None), int):
                return int(getattr(text, name))
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and limit < 10**8 else None


class EncodedPair(TypedDict):
    """One prompt + response example: token ids, labels (-100 on the prompt) and the prompt's length."""

    input_ids: list[int]
    labels: list[int]
    prompt_length: int


def encode_pair(
    tokenizer: Any,
    prompt: str,
    response: str,
    *,
    index: int,
    nonstop: bool = False,
    templated: bool = False,
    max_length: int | None = None,
) -> EncodedPair:
    """``{"input_ids", "labels", "prompt_length"}`` for one example; errors name ``index``.

    ``templated``: the prompt was rendered by a chat template (it carries its own special
    tokens, so none are added). Unless ``nonstop``, the eos token id ends the response.

    >>> from reftlab.models import tiny_tokenizer
    >>> ex = encode_pair(tiny_tokenizer(), "Hi", "yo", index=0)
    >>> ex["input_ids"], ex["labels"], ex["prompt_length"]
    ([72, 105, 121, 111, 259], [-100, -100, 121, 111, 259], 2)
    """
    for name, text in (("prompt", prompt), ("response", response)):
        if not isinstance(text, str):
            raise TypeError(f"example {index}: {name} must be a string, got {type(text).__name__}")
    prompt_ids = list(tokenizer(prompt, add_special_tokens=not templated)["input_ids"])
    response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if not prompt_ids:
        raise ValueError(f"example {index}: the prompt {prompt!r} tokenizes to nothing; give it some text")
    if not response_ids:
        raise ValueError(
            f"example {index}: the response {response!r} (prompt {prompt[:60]!r}) tokenizes to nothing; "
            "give it some text or drop the example"
        )
    if not nonstop:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token; set tokenizer.eos_token or pass nonstop=True")
        response_ids.append(int(tokenizer.eos_token_id))
    if max_length is not None:
        if len(prompt_ids) >= max_length:
            raise ValueError(
                f"example {index}: the prompt is {len(prompt_ids)} tokens, the model's context is {max_length}; "
                "shorten the prompt or drop the example"
            )
        if len(prompt_ids) + len(response_ids) > max_length:
            raise ValueError(
                f"example {index}: prompt + response are {len(prompt_ids) + len(response_ids)} tokens, the model's "
                f"context is {max_length}; shorten the response or drop the example"
            )
    return {
        "input_ids": prompt_ids + response_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids,
        "prompt_length": len(prompt_ids),
    }


def locations_for(
    prompt_length: int,
    positions: "str | Positions | Sequence[str | Positions]",
    num_interventions: int,
    share_weights: bool = True,
) -> list[list[int]]:
    """``[num_interventions][n]`` absolute prompt positions, -1 for an empty slot.

    ``positions`` is one spec for every intervention or one per intervention. pyreft's
    convention for one ``"fA+lB"`` spec with ``share_weights=False``: the first half of
    the interventions get the first-A positions, the second half the last-B ones.

    >>> locations_for(5, "f1+l1", 1)
    [[0, 4]]
    >>> locations_for(2, "f3+l3", 1)
    [[0, 1, -1, -1, 0, 1]]
    >>> locations_for(5, "f2+l1", 2, share_weights=False)
    [[0, 1], [4, -1]]
    """
    if num_interventions < 1:
        raise ValueError(f"num_interventions={num_interventions} must be >= 1")
    mask = torch.ones(1, prompt_length, dtype=torch.long)
    if not isinstance(positions, (str, Positions)):
        specs = [Positions.parse(p) for p in positions]
        if len(specs) != num_interventions:
            raise ValueError(f"got {len(specs)} position specs for {num_interventions} interventions")
        rows = [resolve_positions(s, mask)[0].tolist() for s in specs]
    else:
        spec = Positions.parse(positions)
        if share_weights or spec.all or not (spec.first and spec.last):
            rows = [resolve_positions(spec, mask)[0].tolist()] * num_interventions
        else:
            if num_interventions % 2:
                raise ValueError(
                    f"positions={str(spec)!r} with share_weights=False gives the first half of the interventions the "
                    f"f positions and the second half the l positions, so num_interventions ({num_interventions}) "
                    "must be even; or pass share_weights=True"
                )
            first = resolve_positions(Positions(first=spec.first), mask)[0].tolist()
            last = resolve_positions(Positions(last=spec.last), mask)[0].tolist()
            rows = [first] * (num_interventions // 2) + [last] * (num_interventions // 2)
    width = max(len(r) for r in rows)
    return [r + [-1] * (width - len(r)) for r in rows]
