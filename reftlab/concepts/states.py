"""Token states at one site for many texts: one forward pass per batch, cut after the site.

Each text is encoded as

    ids = [bos] + tokens(text)                       (context=False; bos if the tokenizer has one)
    ids = chat(prompt) + tokens(text)                (context=True; the tokenizer's chat template)

and only the text's own tokens are kept (``scored``): never position 0, which in many models is
an attention sink whose norm dwarfs every other token's (SmolLM2-135M: about 20,000 against
about 150 at layer 15). A tokenizer without a BOS token loses its first text token instead.

``capture`` runs right-padded batches (longest first) through the model with a ``Tap`` at the
site; the tap raises ``StopForward`` as soon as it has the site's representation, so the blocks
above the site and the unembedding never run. The states of all texts are packed into one
``[n_tokens, d_model]`` tensor with per-text offsets: every method fits on these, with no
further forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from ..analysis.capture import StopForward, Tap
from ..analysis.prompts import batches, n_batches, pad_id
from ..attach import Binding, attach
from ..data.encode import format_prompt
from ..models.hooked import HookedModel

Pooling = Literal["max", "mean", "last"]
POOLINGS: tuple[str, ...] = ("max", "mean", "last")


@dataclass(frozen=True, eq=False)
class Encoded:
    """Token ids per text and the index of its first scored token."""

    ids: list[list[int]]
    start: list[int]

    def __len__(self) -> int:
        return len(self.ids)


def encode(
    tokenizer: Any, texts: Sequence[str], prompts: Sequence[str] | None = None, *, context: bool = False
) -> Encoded:
    """Encode ``texts`` (see the module docstring); ``prompts`` are needed with ``context=True``."""
    if tokenizer is None:
        raise ValueError("the model has no tokenizer; load it with reftlab.load_model(model, tokenizer)")
    if context and (prompts is None or len(prompts) != len(texts)):
        raise ValueError("context=True reads each text after its prompt; give one prompt per text")
    prefix = bos_prefix(tokenizer)
    templated = getattr(tokenizer, "chat_template", None) is not None
    ids: list[list[int]] = []
    start: list[int] = []
    for i, text in enumerate(texts):
        body = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if context and prompts is not None:  # checked above: one prompt per text
            head = list(
                tokenizer(format_prompt(tokenizer, prompts[i], templated), add_special_tokens=False)["input_ids"]
            )
            head = head or prefix
        else:
            head = prefix
        skip = 1 if not head else 0  # position 0 is never scored
        if len(body) <= skip:
            raise ValueError(f"text {i} ({text!r}) has no token to score; give texts of at least two tokens")
        ids.append(head + body)
        start.append(len(head) + skip)
    return Encoded(ids, start)


def bos_prefix(tokenizer: Any) -> list[int]:
    """``[bos_token_id]`` when the tokenizer has a BOS token (added here if it does not add it), else []."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return [] if bos is None else [int(bos)]


@dataclass(frozen=True, eq=False)
class States:
    """Packed token states of ``n`` texts at one site: text i owns ``tokens[offsets[i]:offsets[i+1]]``."""

    tokens: Float[Tensor, "n_tokens d_model"]
    offsets: Int[Tensor, " n_plus_1"]
    token_ids: Int[Tensor, " n_tokens"]
    hook: str

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def d_model(self) -> int:
        return int(self.tokens.shape[1])

    def text_index(self) -> Int[Tensor, " n_tokens"]:
        """For each token, the index of its text."""
        lengths = self.offsets[1:] - self.offsets[:-1]
        return torch.repeat_interleave(torch.arange(len(self)), lengths)

    def of(self, rows: Sequence[int]) -> Float[Tensor, "n d_model"]:
        """The token states of the texts ``rows``, concatenated."""
        if not len(rows):
            return self.tokens[:0]
        return torch.cat([self.tokens[self.offsets[r] : self.offsets[r + 1]] for r in rows])

    def select(self, rows: Sequence[int]) -> "States":
        """The states of the texts ``rows`` (in that order), packed again."""
        parts = [(int(self.offsets[r]), int(self.offsets[r + 1])) for r in rows]
        lengths = torch.tensor([b - a for a, b in parts], dtype=torch.long)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        idx = torch.cat([torch.arange(a, b) for a, b in parts]) if parts else torch.zeros(0, dtype=torch.long)
        return States(self.tokens[idx], offsets, self.token_ids[idx], self.hook)

    def pool(
        self, directions: Float[Tensor, "k d_model"] | Float[Tensor, " d_model"], pooling: Pooling = "max"
    ) -> Float[Tensor, "n k"]:
        """Per text and direction: the ``pooling`` of the token projections ``u . h_t``."""
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is not one of {list(POOLINGS)}")
        u = torch.as_tensor(directions, dtype=self.tokens.dtype)
        u = u[None] if u.ndim == 1 else u
        if u.shape[-1] != self.d_model:
            raise ValueError(f"directions have width {u.shape[-1]}, the states d_model={self.d_model}")
        proj = self.tokens @ u.T  # [n_tokens, k]
        idx = self.text_index()
        if pooling == "last":
            return proj[self.offsets[1:] - 1]
        if pooling == "mean":
            sums = torch.zeros(len(self), u.shape[0], dtype=proj.dtype).index_add_(0, idx, proj)
            return sums / (self.offsets[1:] - self.offsets[:-1]).to(proj.dtype)[:, None]
        out = torch.full((len(self), u.shape[0]), -torch.inf, dtype=proj.dtype)
        return out.scatter_reduce(0, idx[:, None].expand_as(proj), proj, reduce="amax")

    def median_norm(self) -> float:
        """The median token norm: the unit of steering factors (``alpha = 1`` adds a vector this long)."""
        return float(self.tokens.norm(dim=-1).median())


def capture(
    hooked: HookedModel,
    encoded: Encoded,
    hook: str,
    *,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "states",
) -> States:
    """The scored tokens' states at ``hook`` for every encoded text (float32, on the CPU)."""
    hooked.hook_point(hook)  # a clear error for a bad hook name
    pairs = [(ids, s) for ids, s in zip(encoded.ids, encoded.start)]
    per_text: list[Tensor | None] = [None] * len(pairs)
    per_ids: list[Tensor | None] = [None] * len(pairs)
    pad = pad_id(hooked.tokenizer)
    it = batches(pairs, batch_size, pad, hooked.device)
    was_training = hooked.model.training
    hooked.model.eval()
    try:
        with torch.inference_mode():
            for batch in tqdm(it, total=n_batches(len(pairs), batch_size), desc=desc, disable=not progress):
                tap = Tap(group=[])
                try:
                    with attach(hooked, [Binding(hook, tap)]):
                        hooked.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
                except StopForward:
                    pass
                if tap.value is None:
                    raise RuntimeError(f"hook {hook} was not reached by the forward pass")
                h = tap.value.float().cpu()  # [batch, pos, d_model]
                lengths = batch.attention_mask.sum(dim=1).tolist()
                for row, (i, n) in enumerate(zip(batch.index.tolist(), lengths)):
                    first = batch.prompt_lengths[row].item()  # the scored start (see encode)
                    per_text[i] = h[row, first:n]
                    per_ids[i] = batch.input_ids[row, first:n].cpu()
    finally:
        hooked.model.train(was_training)
    lengths_t = torch.tensor([len(t) for t in per_text], dtype=torch.long)  # type: ignore[arg-type]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths_t.cumsum(0)])
    return States(torch.cat(per_text), offsets, torch.cat(per_ids), hook)  # type: ignore[arg-type]


def states_of(
    hooked: HookedModel,
    texts: Sequence[str],
    hook: str,
    *,
    prompts: Sequence[str] | None = None,
    context: bool = False,
    batch_size: int = 16,
    progress: bool = True,
) -> States:
    """``capture(encode(...))`` in one call."""
    return capture(
        hooked,
        encode(hooked.tokenizer, texts, prompts, context=context),
        hook,
        batch_size=batch_size,
        progress=progress,
    )


def as_numpy(x: Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()
