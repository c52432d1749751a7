"""Distributed Alignment Search (Geiger et al. 2024, arXiv 2303.02536): learn the subspace a variable lives in.

For counterfactual pairs (base b, source s, label y), where y is the answer the model should give
on b if the variable took its value from s, DAS learns R (r x d, R R^T = I) at a site so that

    phi(h_b, h_s) = h_b + R^T R (h_s - h_b)            (reftlab.interventions.LowRankRotatedSpace)

makes the model answer y: the loss is the cross-entropy of y at the base's last position after
the interchange, only R is trained (the model is frozen), and the source states are captured once
(the model does not change). The interchange intervention accuracy (IIA) is the fraction of pairs
whose patched argmax is y; ``fit`` reports it on held-out pairs. The result is a ``ReftModel``
holding the rotation: ``save`` writes it as any checkpoint (JSON + safetensors) and the analysis
tools read its ``subspace()`` as they read a LoReFT's (``reftlab.analysis.compare``, ``decode``).

>>> import torch, reftlab
>>> hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
>>> ids = torch.randint(0, 256, (8, 5))
>>> pairs = CounterfactualPairs(base_ids=ids, source_ids=ids.flip(0), labels=torch.zeros(8, dtype=torch.long))
>>> result = fit(hooked, pairs, "blocks.1.hook_resid_post", rank=1, steps=2)
>>> result.reft_model.interventions[result.key].kind, 0.0 <= result.iia <= 1.0
('lowrank_rotated_space', True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor, nn

from .analysis.interchange import capture
from .attach import Binding, attach
from .config import ReftConfig
from .interventions import Sourced
from .reft_model import ReftModel, get_reft_model
from .sites import Positions, Site, resolve_positions


@dataclass(frozen=True)
class CounterfactualPairs:
    """Counterfactual pairs: base and source inputs ``[n, pos]`` (masks optional) and the label ``[n]``:
    the token the model should predict at the base's last position after the interchange."""

    base_ids: Int[Tensor, "n pos"]
    source_ids: Int[Tensor, "n pos_s"]
    labels: Int[Tensor, " n"]
    base_mask: Int[Tensor, "n pos"] | None = None
    source_mask: Int[Tensor, "n pos_s"] | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        if len(self.base_ids) != n or len(self.source_ids) != n:
            raise ValueError(
                f"pairs disagree on their number: {len(self.base_ids)} bases, {len(self.source_ids)} sources, "
                f"{n} labels; give one of each per pair"
            )
        if n == 0:
            raise ValueError("no counterfactual pairs given")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Tensor) -> "CounterfactualPairs":
        pick = lambda t: None if t is None else t[index]  # noqa: E731 - a local one-liner
        return CounterfactualPairs(
            base_ids=self.base_ids[index],
            source_ids=self.source_ids[index],
            labels=self.labels[index],
            base_mask=pick(self.base_mask),
            source_mask=pick(self.source_mask),
        )

    def masks(self) -> tuple[Tensor, Tensor]:
        bm = torch.ones_like(self.base_ids) if self.base_mask is None else self.base_mask
        sm = torch.ones_like(self.source_ids) if self.source_mask is None else self.source_mask
        return bm, sm


@dataclass
class DasResult:
    """What ``fit`` learned: the ReftModel holding the rotation (under ``key``), IIA on held-out and
    training pairs, and the loss per step."""

    reft_model: ReftModel
    key: str
    iia: float
    train_iia: float
    losses: list[float] = field(default_factory=list)

    @property
    def subspace(self) -> Tensor:
        """R, ``[rank, d_model]`` with orthonormal rows."""
        return self.reft_model.interventions[self.key].subspace().detach()


def _site(site: str | Site) -> Site:
    if isinstance(site, Site):
        return site if site.positions is not None else Site(hook=site.hook, positions=Positions.parse("l1"))
    if not isinstance(site, str):
        raise TypeError(f"site must be a hook name such as 'blocks.3.hook_resid_post' or a Site, got {site!r}")
    return Site(hook=site, positions=Positions.parse("l1"))


def das_model(model: Any, site: str | Site, rank: int, *, tokenizer: Any = None) -> ReftModel:
    """A ReftModel with one rank-``rank`` ``LowRankRotatedSpace`` at ``site`` (positions default ``"l1"``)."""
    s = _site(site)
    cfg = ReftConfig(
        representations={
            "hook": s.hook,
            "positions": str(s.positions),
            "intervention": {"kind": "lowrank_rotated_space", "rank": rank},
        }
    )
    return get_reft_model(model, cfg, tokenizer=tokenizer)


def interchange_logits(
    reft_model: ReftModel,
    pairs: CounterfactualPairs,
    *,
    batch_size: int = 64,
    source_vectors: list[Tensor] | None = None,
) -> Tensor:
    """Last-position logits ``[n, vocab]`` of each base with every sourced intervention patched from its source."""
    out = []
    for start in range(0, len(pairs), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(pairs)))
        vecs = None if source_vectors is None else [v[idx] for v in source_vectors]
        out.append(_patched_last_logits(reft_model, pairs.subset(idx), vecs))
    return torch.cat(out)


def iia(reft_model: ReftModel, pairs: CounterfactualPairs, *, batch_size: int = 64) -> float:
    """Interchange intervention accuracy: the fraction of pairs whose patched argmax is the label."""
    was = reft_model.training
    reft_model.eval()
    try:
        with torch.no_grad():
            logits = interchange_logits(reft_model, pairs, batch_size=batch_size)
    finally:
        reft_model.train(was)
    return float((logits.argmax(-1) == pairs.labels.to(logits.device)).float().mean())


def fit(
    model: Any,
    pairs: CounterfactualPairs,
    site: str | Site,
    rank: int,
    *,
    steps: int = 200,
    lr: float = 1e-2,
    batch_size: int = 32,
    held_out: float = 0.2,
    seed: int = 0,
    tokenizer: Any = None,
) -> DasResult:
    """Learn a rank-``rank`` rotation at ``site`` on ``pairs`` (``held_out`` of them kept for IIA).

    The loop, top to bottom: split the pairs (seeded); capture the source states at the site once;
    then ``steps`` Adam steps on the cross-entropy of the label at each base's last position with the
    interchange applied; finally IIA on the held-out pairs (and on the training pairs).
    """
    if not 0.0 <= held_out < 1.0:
        raise ValueError(f"held_out={held_out!r} must be in [0, 1)")
    rm = das_model(model, site, rank, tokenizer=tokenizer)
    key = next(iter(rm.interventions))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pairs), generator=g)
    n_test = round(held_out * len(pairs))
    test, train = pairs.subset(order[:n_test]), pairs.subset(order[n_test:])
    if len(train) == 0:
        raise ValueError(f"no training pairs left: {len(pairs)} pairs with held_out={held_out}")
    src = _source_vectors(rm, train)
    iv = rm.interventions[key]
    opt = torch.optim.Adam(iv.parameters(), lr=lr)
    losses = []
    rm.train()
    for _ in range(steps):
        idx = torch.randint(len(train), (min(batch_size, len(train)),), generator=g)
        logits = _patched_last_logits(rm, train.subset(idx), [v[idx] for v in src])
        loss = nn.functional.cross_entropy(logits, train.labels[idx].to(logits.device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    rm.eval()
    held = iia(rm, test) if len(test) else float("nan")
    return DasResult(reft_model=rm, key=key, iia=held, train_iia=iia(rm, train), losses=losses)


def _positions(rm: ReftModel, mask: Tensor) -> list[Tensor | None]:
    out: list[Tensor | None] = []
    for site in rm.sites:
        spec = site.positions if site.positions is not None else Positions.parse("l1")
        out.append(None if spec.all else resolve_positions(spec, mask))
    return out


def _source_vectors(rm: ReftModel, pairs: CounterfactualPairs) -> list[Tensor]:
    """Each sourced site's source states, gathered per pair (``[n, k, d_model]``: k positions per pair)."""
    _, sm = pairs.masks()
    sites = [(s.hook, p) for s, p, iv in zip(rm.sites, _positions(rm, sm), rm.interventions.values()) if _needs(iv)]
    out = []
    for (hook, pos), vec in zip(sites, capture(rm.hooked, pairs.source_ids, sm, sites)):
        if pos is None:
            raise ValueError(f"DAS needs positions at {hook}: give the site a spec such as 'l1', not 'all'")
        if not bool((pos >= 0).all()):
            raise ValueError(f"some source prompts are too short for the positions at {hook}")
        out.append(vec.reshape(len(pairs), pos.shape[1], -1))
    return out


def _needs(iv: nn.Module) -> bool:
    return isinstance(iv, Sourced) and iv.needs_source


def _patched_last_logits(rm: ReftModel, pairs: CounterfactualPairs, source_vectors: list[Tensor] | None) -> Tensor:
    bm, _ = pairs.masks()
    if source_vectors is None:
        source_vectors = _source_vectors(rm, pairs)
    vecs = iter(source_vectors)
    bindings = []
    for site, pos, iv in zip(rm.sites, _positions(rm, bm), rm.interventions.values()):
        if _needs(iv):
            assert isinstance(iv, Sourced) and pos is not None  # _needs says so; _source_vectors refused 'all'
            v = next(vecs)
            if v.shape[1] != pos.shape[1] or not bool((pos >= 0).all()):
                raise ValueError(f"base and source give different numbers of positions at {site.hook}")
            bindings.append(Binding(site.hook, iv.bind(v.reshape(-1, v.shape[-1])), pos))
        else:
            bindings.append(Binding(site.hook, iv, pos))
    with attach(rm.hooked, bindings):
        logits = rm.model(input_ids=pairs.base_ids, attention_mask=bm, use_cache=False).logits
    return logits[torch.arange(len(logits)), _last_index(bm).to(logits.device)]


def _last_index(mask: Tensor) -> Tensor:
    """The last attended position of each row (left or right padding)."""
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), pos, torch.full_like(pos, -1)).max(1).values
