"""ReFT-r1 (AxBench's ``LsReFT``): a rank-1 ReFT trained to steer, whose latent detects.

For a unit direction v at the site and each training example (prompt + text), over the
intervened positions t (every position but 0):

    z_t   = relu(v . h_t)                                   the detection latent (non-negative)
    m     = mean of the top-k z_t of the example            the steering magnitude
    h'_t  = h_t + m v                                       the edit (rank 1, along v)

    loss  = LM loss of the text tokens given the prompt, with the edit in place
            + (step / steps) * l1 * mean_t (z_t outside the top k)      (sparsity, ramped in)

Positive and negative examples both carry the LM loss, so writing v must help on positives and
cost on negatives: v learns to fire (large z) on concept tokens only. ``v = w / |w|`` keeps
it unit length for any optimizer step (AxBench renormalises after each step instead). As in
AxBench: AdamW without weight decay, a linear lr decay, gradient clipping at 1, k = 8,
l1 = 0.005, 3 epochs; the initial w is random (seeded) here, a constant vector there.
The edit uses the example's whole sequence (top-k over all its positions), so it is a
training device only; detection reads ``v . h_t`` and steering adds ``alpha * v`` as for
every other method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...attach import Binding, attach
from ...data.collate import ReftDataCollator
from ...data.encode import encode_pair, format_prompt
from ...models.arch import get_module
from ...models.hooked import HookedModel
from ...train.loss import selected_lm_loss
from ._base import FitInput, Fitted, unit


@dataclass(frozen=True, kw_only=True)
class ReftR1Config:
    """Settings of ReFT-r1 training (defaults: AxBench's)."""

    epochs: int = 3  # passes over the concept's positive and negative examples
    batch_size: int = 6
    lr: float = 1e-2  # AdamW, linearly decayed to 0
    topk: int = 8  # tokens whose latent sets the steering magnitude
    l1: float = 0.005  # weight of the sparsity penalty on the other latents
    max_steps: int | None = None  # stop early (e.g. for a quick run)
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "topk"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"ReftR1Config.{name}={getattr(self, name)!r} must be a positive int")
        if not self.lr > 0:
            raise ValueError(f"ReftR1Config.lr={self.lr!r} must be > 0")
        if self.l1 < 0:
            raise ValueError(f"ReftR1Config.l1={self.l1!r} must be >= 0")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"ReftR1Config.max_steps={self.max_steps!r} must be a positive int or None")


class TopKLatentEdit(nn.Module):
    """The training-time edit ``h + m v`` with its latent (see the module docstring).

    Called by ``attach`` with positions=None, it sees ``[batch, pos, d_model]``; ``mask``
    (``[batch, pos]``, set per batch) marks the intervened positions.
    """

    kind = "reft_r1 (training)"
    arity = 1

    def __init__(self, w: Float[Tensor, " d_model"], k: int) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.k = k
        self.mask: Bool[Tensor, "batch pos"] | None = None
        self.penalty: Tensor | None = None

    @property
    def v(self) -> Float[Tensor, " d_model"]:
        return self.w / self.w.norm()

    def forward(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        if self.mask is None or self.mask.shape != h.shape[:2]:
            raise RuntimeError("TopKLatentEdit.mask must be set to the batch's [batch, pos] intervened positions")
        v = self.v.to(h.dtype)
        mask = self.mask.to(h.dtype)
        z = torch.relu(h @ v) * mask  # [batch, pos]
        k = min(self.k, z.shape[1])
        top, idx = z.topk(k, dim=1)  # [batch, k]
        counts = self.mask.sum(dim=1).clamp(min=1, max=k).to(h.dtype)  # [batch]
        m = top.sum(dim=1) / counts  # [batch]
        rest = z.scatter(1, idx, 0.0)  # the latents outside the top k
        self.penalty = (rest.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
        return h + (m[:, None] * mask)[..., None] * v  # [batch, pos, d_model]


def fit_reft_r1(inp: FitInput, config: ReftR1Config) -> Fitted:
    hooked = inp.hooked
    if hooked is None or not inp.pairs_positive:
        raise ValueError(f"reft_r1 for {inp.concept!r} trains through the model: it needs the model and the texts")
    tok = hooked.tokenizer
    templated = getattr(tok, "chat_template", None) is not None
    pairs = [*inp.pairs_positive, *inp.pairs_negative]
    examples = []
    for i, (prompt, text) in enumerate(pairs):
        # A text with an instruction is the answer of a chat turn (a chat model) or follows the
        # instruction; a text without one follows the BOS token (else the EOS token) alone.
        if prompt:
            rendered, chat = (format_prompt(tok, prompt, True), True) if templated else (prompt, False)
        else:
            rendered, chat = (tok.bos_token or tok.eos_token or ""), True
        examples.append(encode_pair(tok, rendered, text, index=i, templated=chat, nonstop=True))
    collate = ReftDataCollator(pad_token_id=int(tok.pad_token_id if tok.pad_token_id is not None else 0))
    g = torch.Generator().manual_seed(inp.seed)
    w0 = torch.randn(hooked.d_model, generator=g)
    edit = TopKLatentEdit(w0 / w0.norm(), config.topk).to(hooked.device)
    opt = torch.optim.AdamW(edit.parameters(), lr=config.lr, weight_decay=0.0)
    per_epoch = math.ceil(len(examples) / config.batch_size)
    total = config.epochs * per_epoch if config.max_steps is None else min(config.max_steps, config.epochs * per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / total))
    frozen = [(p, p.requires_grad) for p in hooked.model.parameters()]
    was_training = hooked.model.training
    losses: list[float] = []
    bar = tqdm(total=total, desc=f"reft_r1 {inp.concept}", disable=not config.progress)
    try:
        hooked.model.eval()
        for p, _ in frozen:
            p.requires_grad_(False)
        step = 0
        for epoch in range(config.epochs):
            order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(inp.seed + epoch))
            for lo in range(0, len(examples), config.batch_size):
                if step >= total:
                    break
                batch = collate([examples[i] for i in order[lo : lo + config.batch_size].tolist()])
                batch = {k: v.to(hooked.device) for k, v in batch.items()}
                mask = batch["attention_mask"].bool()
                mask[:, 0] = False  # position 0 (an attention sink) is never edited
                edit.mask = mask
                with torch.enable_grad():
                    lm = _lm_loss(hooked, inp.hook, edit, batch)
                    loss = lm + (step / total) * config.l1 * edit.penalty  # type: ignore[operator]
                    opt.zero_grad()
                    loss.backward()
                nn.utils.clip_grad_norm_(edit.parameters(), 1.0)
                opt.step()
                sched.step()
                step += 1
                losses.append(float(lm.detach()))
                bar.update(1)
                bar.set_postfix(lm=f"{losses[-1]:.3f}")
    finally:
        bar.close()
        edit.mask = None
        for p, flag in frozen:
            p.requires_grad_(flag)
        hooked.model.train(was_training)
    v = unit(edit.v.detach().float().cpu(), f"reft_r1 for {inp.concept!r}")
    return Fitted.rank_one(v, steps=step, lm_loss_first=losses[0], lm_loss_last=losses[-1])


def _lm_loss(hooked: HookedModel, hook: str, edit: TopKLatentEdit, batch: dict[str, Tensor]) -> Tensor:
    """The LM loss of the batch's labelled tokens with ``edit`` attached at ``hook``."""
    hf = hooked.hf_model
    with attach(hooked, [Binding(hook, edit)]):
        decoder = get_module(hf, hooked.arch.decoder)
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return selected_lm_loss(hf, hidden, batch["labels"])
