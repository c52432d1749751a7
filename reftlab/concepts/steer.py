"""Steering with concept directions, scored without a hosted judge.

Steering adds ``alpha * scale * u`` at the direction's site (a rank-1 LobiReFT, see
``ConceptDirection.intervention``) on the prompt's tokens, the generated ones, or both.
``Steering`` binds many (direction, alpha) pairs to different rows of one batch (per-row
``Binding.rows``), so a whole alpha sweep is one batched, greedy ``reftlab.generate`` call.

Each answer a (to instruction i) is scored by three proxies, each in [0, 1]:

    concept    = clip((J(a) - mu_neg) / (mu_pos - mu_neg), 0, 1)
                 J: max-over-tokens projection on the *judge*, a direction of the same concept
                 fitted by a different method; mu_pos / mu_neg: its mean score on held-out
                 positive / negative texts (0 reads like a negative, 1 like a positive)
    fluency    = clip(exp(F0 - F(a)), 0, 1) * clip(D(a) / D0, 0, 1)
                 F(a): the base model's mean per-token loss of a on its own; D(a): the share of
                 distinct tokens in a (repetition lowers the loss, so it is counted apart)
    relevance  = clip(G(a) / G0, 0, 1),   G(a) = F(a) - R(a)
                 R(a): the base model's mean per-token loss of a given i; G is how many nats per
                 token the instruction explains (pointwise mutual information)

F0, D0, G0 are the means over the unsteered answers to the same prompts. ``score`` is the
harmonic mean of the three (0 if any is 0), as AxBench combines its judge's three scores;
the factor is chosen per concept and method on the validation prompts and reported on the
test prompts. ``docs/concept-subspaces.md`` says what these proxies do and do not measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..attach import Binding
from ..data.collate import ReftDataCollator
from ..data.encode import IGNORE_INDEX, format_prompt
from ..generate import generate
from ..models.arch import get_module, lm_logits
from ..models.hooked import HasHooked, HookedModel, hooked_of
from ..sites import resolve_positions
from .direction import ConceptDirection
from .states import Pooling, bos_prefix, capture, encode

Placement = Literal["prompt", "generation", "both"]
PLACEMENTS: tuple[str, ...] = ("prompt", "generation", "both")


@dataclass(frozen=True, kw_only=True)
class SteerConfig:
    """Settings of the steering sweep."""

    alphas: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)  # factors, in units of the site's median token norm
    positions: Placement = "both"  # where the direction is added: prompt tokens, generated tokens, both
    max_new_tokens: int = 32  # greedy decoding
    n_prompts: int = 8  # instruction prompts: the first half choose alpha, the second half report it
    batch_size: int = 32  # rows (prompt x alpha) per generate call
    methods: tuple[str, ...] | None = None  # which methods steer (None: all fitted)

    def __post_init__(self) -> None:
        alphas = tuple(float(a) for a in self.alphas)
        if not alphas or any(not np.isfinite(a) or a <= 0 for a in alphas):
            raise ValueError(f"SteerConfig.alphas={self.alphas!r} must be positive numbers (alpha 0 always runs)")
        object.__setattr__(self, "alphas", tuple(sorted(set(alphas))))
        if self.positions not in PLACEMENTS:
            raise ValueError(f"SteerConfig.positions={self.positions!r} must be one of {list(PLACEMENTS)}")
        for name in ("max_new_tokens", "n_prompts", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SteerConfig.{name}={getattr(self, name)!r} must be a positive int")
        if self.n_prompts < 2:
            raise ValueError("SteerConfig.n_prompts must be >= 2 (half choose alpha, half report it)")


class Steering:
    """Rows of a batch steered by different (direction, alpha) pairs; a ReftModel-like object.

    ``plan[i]`` is ``(direction, alpha)`` for row i of the batch, or None for an untouched row.
    ``reftlab.generate(steering, prompts)`` runs it (all rows in one chunk).
    """

    def __init__(
        self,
        hooked: HookedModel | HasHooked,
        plan: Sequence[tuple[ConceptDirection, float] | None],
        positions: Placement = "both",
    ) -> None:
        if positions not in PLACEMENTS:
            raise ValueError(f"positions={positions!r} must be one of {list(PLACEMENTS)}")
        self.hooked = hooked_of(hooked)
        self.positions = positions
        self.plan = list(plan)
        groups: dict[tuple[int, float], list[int]] = {}
        self._directions: dict[int, ConceptDirection] = {}
        for row, item in enumerate(self.plan):
            if item is None:
                continue
            d, alpha = item
            if d.d_model != self.hooked.d_model:
                raise ValueError(f"{d!r} has d_model={d.d_model}, the model {self.hooked.d_model}")
            self._directions[id(d)] = d
            groups.setdefault((id(d), float(alpha)), []).append(row)
        self.groups = groups
        self._interventions = {
            key: self._directions[key[0]].intervention(key[1], dtype=self.hooked.dtype).to(self.hooked.device)
            for key in groups
        }

    def bindings(self, positions: Any, attention_mask: Tensor, prompt_lengths: Any = None) -> list[Binding]:
        if positions is not None:
            raise ValueError("Steering places its edits itself (prompt, generation or both); pass positions=None")
        if attention_mask.shape[0] != len(self.plan):
            raise ValueError(f"the batch has {attention_mask.shape[0]} rows, the steering plan {len(self.plan)}")
        out = []
        for key, rows in self.groups.items():
            mask = torch.zeros(len(self.plan), dtype=torch.bool)
            mask[rows] = True
            hook = self._directions[key[0]].site.hook
            iv = self._interventions[key]
            if self.positions == "both":
                out.append(Binding(hook, iv, None, rows=mask))
            elif self.positions == "generation":
                out.append(Binding(hook, iv, None, rows=mask, after_prompt=True))
            else:
                out.append(Binding(hook, iv, resolve_positions("all", attention_mask), rows=mask))
        return out


def steered_generate(
    hooked: HookedModel,
    prompts: Sequence[str],
    plan: Sequence[tuple[ConceptDirection, float] | None],
    *,
    positions: Placement = "both",
    max_new_tokens: int = 32,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[list[str], list[list[int]]]:
    """Greedy answers for ``prompts[i]`` steered by ``plan[i]``; (texts, token ids)."""
    if len(prompts) != len(plan):
        raise ValueError(f"{len(prompts)} prompts but a plan for {len(plan)} rows")
    tok = hooked.tokenizer
    templated = getattr(tok, "chat_template", None) is not None
    texts: list[str] = []
    ids: list[list[int]] = []
    for lo in tqdm(range(0, len(prompts), batch_size), desc="steer", disable=not progress):
        chunk = list(prompts[lo : lo + batch_size])
        steering = Steering(hooked, plan[lo : lo + batch_size], positions)
        out = generate(steering, chunk, max_new_tokens=max_new_tokens, chat_template=templated)
        texts += out.texts
        ids += [t.tolist() for t in out.ids]
    return texts, ids


def answer_losses(
    hooked: HookedModel, prefixes: Sequence[list[int]], answers: Sequence[list[int]], *, batch_size: int = 16
) -> np.ndarray:
    """Mean per-token loss of each answer after its prefix under the base model (NaN for an empty answer)."""
    hf = hooked.hf_model
    pad = hooked.tokenizer.pad_token_id if hooked.tokenizer.pad_token_id is not None else 0
    collate = ReftDataCollator(pad_token_id=int(pad))
    out = np.full(len(answers), np.nan)
    todo = [i for i, a in enumerate(answers) if len(a)]
    with torch.inference_mode():
        for lo in range(0, len(todo), batch_size):
            rows = todo[lo : lo + batch_size]
            batch = collate(
                [
                    {"input_ids": prefixes[i] + answers[i], "labels": [IGNORE_INDEX] * len(prefixes[i]) + answers[i]}
                    for i in rows
                ]
            )
            ids, mask = batch["input_ids"].to(hooked.device), batch["attention_mask"].to(hooked.device)
            targets = batch["labels"][:, 1:].to(hooked.device)  # [batch, pos-1]
            keep = targets != IGNORE_INDEX
            decoder = get_module(hf, hooked.arch.decoder)
            hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
            logits = lm_logits(hf, hidden[keep])  # [N, vocab], the family's own logit post-processing
            nll = F.cross_entropy(logits.float(), targets[keep], reduction="none")  # [N]
            which = torch.arange(len(rows), device=ids.device)[:, None].expand_as(keep)[keep]
            sums = torch.zeros(len(rows), device=ids.device).index_add_(0, which, nll)
            out[rows] = (sums / keep.sum(dim=1)).cpu().numpy()
    return out


@dataclass(frozen=True)
class Judge:
    """A detector of one concept and its calibration (mean held-out positive / negative score)."""

    direction: ConceptDirection
    mu_positive: float
    mu_negative: float

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        gap = self.mu_positive - self.mu_negative
        if not gap > 0:
            return np.zeros_like(raw)
        return np.clip((raw - self.mu_negative) / gap, 0.0, 1.0)


def judge_scores(
    hooked: HookedModel,
    judges: Sequence[Judge],
    answers: Sequence[str],
    *,
    prompts: Sequence[str] | None = None,
    context: bool = False,
    pooling: Pooling = "max",
    batch_size: int = 16,
) -> np.ndarray:
    """Calibrated concept score of every answer under every judge: ``[n_answers, n_judges]``.

    Answers are read as the judges' held-out texts were (``context``: after their prompt); an
    answer with no token to score (empty) scores 0.
    """
    out = np.zeros((len(answers), len(judges)))
    tok = hooked.tokenizer
    least = 1 if (context or bos_prefix(tok)) else 2  # position 0 is never scored
    keep = [i for i, a in enumerate(answers) if len(tok(a, add_special_tokens=False)["input_ids"]) >= least]
    if not keep:
        return out
    kept_prompts = [prompts[i] for i in keep] if prompts is not None else None
    enc = encode(tok, [answers[i] for i in keep], kept_prompts, context=context)
    by_hook: dict[str, list[int]] = {}
    for j, judge in enumerate(judges):
        by_hook.setdefault(judge.direction.site.hook, []).append(j)
    for hook, js in by_hook.items():
        states = capture(hooked, enc, hook, batch_size=batch_size, progress=False)
        raw = states.pool(torch.stack([judges[j].direction.reading for j in js]), pooling).double().numpy()
        for col, j in enumerate(js):
            out[keep, j] = judges[j].calibrate(raw[:, col])
    return out


def proxy_scores(
    hooked: HookedModel,
    prompts: Sequence[str],
    answers: Sequence[str],
    answer_ids: Sequence[list[int]],
    *,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Raw fluency and relevance losses and the distinct-token share of each answer."""
    tok = hooked.tokenizer
    templated = getattr(tok, "chat_template", None) is not None
    start = bos_prefix(tok) or [int(tok.eos_token_id if tok.eos_token_id is not None else 0)]
    heads = [
        list(tok(format_prompt(tok, p, templated), add_special_tokens=not templated)["input_ids"]) for p in prompts
    ]
    fluency = answer_losses(hooked, [start] * len(answers), answer_ids, batch_size=batch_size)
    relevance = answer_losses(hooked, heads, answer_ids, batch_size=batch_size)
    distinct = np.array([len(set(a)) / len(a) if a else 0.0 for a in answer_ids])
    return pd.DataFrame(
        {"answer": list(answers), "fluency_loss": fluency, "relevance_loss": relevance, "distinct": distinct}
    )


def combine(frame: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Add ``fluency``, ``relevance`` and ``score`` (see the module docstring) against ``baseline``'s means."""
    f0 = float(np.nanmean(baseline["fluency_loss"]))
    d0 = float(np.nanmean(baseline["distinct"]))
    g0 = float(np.nanmean(baseline["fluency_loss"] - baseline["relevance_loss"]))
    out = frame.copy()
    empty = out["fluency_loss"].isna()
    flu = np.clip(np.exp(f0 - out["fluency_loss"]), 0, 1) * np.clip(out["distinct"] / max(d0, 1e-9), 0, 1)
    gain = out["fluency_loss"] - out["relevance_loss"]
    rel = np.clip(gain / g0, 0, 1) if g0 > 0 else (gain >= g0).astype(float)
    out["fluency"] = np.where(empty, 0.0, flu)
    out["relevance"] = np.where(empty, 0.0, rel)
    parts = out[["concept_score", "fluency", "relevance"]].to_numpy()
    with np.errstate(divide="ignore"):
        hm = np.where((parts > 0).all(axis=1), 3.0 / (1.0 / np.where(parts > 0, parts, 1)).sum(axis=1), 0.0)
    out["score"] = hm
    return out
