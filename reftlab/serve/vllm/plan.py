"""Which rows of vLLM's packed token batch each intervention edits, step by step (plain torch, no vLLM).

vLLM runs every scheduled request in one forward over a packed ``[tokens, d_model]`` stream:
request i owns rows ``query_start[i] : query_start[i + 1]``, which hold its sequence positions
``computed[i] ..`` (the tokens already in its KV cache come first; a long prompt may arrive in
several chunks, a decode step is one row). ``plan`` turns that layout and each request's ReFTs
into, per layer, an ordered list of ``Op``: an edit and the packed rows it reads and writes.

A site's positions are resolved once per request against its prompt length (``l1``, ``f1+l1``,
... as ``reftlab.generate`` resolves them); ``all`` edits every token, generated ones included.
Ops of one request keep its ReFTs' order (a sequential composition); requests never share a
row, so ops of different requests commute.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ...attach import Edit
from ...sites import Positions, resolve_positions


@dataclass(frozen=True)
class ServedSite:
    """One intervention of a served ReFT: the decoder layer whose output it edits, and where."""

    layer: int
    edit: Edit
    positions: Positions

    @property
    def arity(self) -> int:
        return int(self.edit.arity)

    @property
    def hook(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"


@dataclass(frozen=True)
class ServedReft:
    """A ReFT as the vLLM side needs it: its sites in binding order (no base model attached)."""

    name: str
    sites: tuple[ServedSite, ...]
    fingerprint: str = ""

    @property
    def interventions(self) -> dict[str, Edit]:
        """The edits by position in binding order (as ``ReftModel.interventions``, for model cards)."""
        return {str(i): s.edit for i, s in enumerate(self.sites)}

    def num_intervention_parameters(self) -> int:
        """Parameters of the edits, a shared module counted once."""
        unique = {id(s.edit): s.edit for s in self.sites}.values()
        return sum(p.numel() for e in unique if isinstance(e, torch.nn.Module) for p in e.parameters())

    @property
    def grouped(self) -> bool:
        """Some edit reads several positions at once: the prompt must arrive in one chunk."""
        return any(s.arity > 1 for s in self.sites)

    @property
    def length_dependent(self) -> bool:
        """Some site counts positions from the prompt's end: which rows are edited depends on its length."""
        return any(s.positions.last > 0 for s in self.sites)


@dataclass(frozen=True)
class Segment:
    """One request's rows in a step: ``width`` rows from ``start`` of the packed batch, holding its
    sequence positions ``computed .. computed + width - 1``; its prompt is ``prompt_len`` tokens."""

    route: tuple[str, ...]
    prompt_len: int
    computed: int
    width: int
    start: int


@dataclass(frozen=True)
class Op:
    """Apply ``edit`` to the packed rows ``rows`` (``[n]``, or ``[n, k]`` groups for an edit of arity k)."""

    edit: Edit
    rows: Tensor


@dataclass
class Resolved:
    """A request's sites with their absolute positions (``None``: every token), resolved once."""

    sites: list[tuple[ServedSite, Tensor | None]] = field(default_factory=list)


def resolve(route: Sequence[str], prompt_len: int, refts: Mapping[str, ServedReft]) -> Resolved:
    """The positions each site of ``route`` edits in a prompt of ``prompt_len`` tokens."""
    out = Resolved()
    mask = torch.ones(1, prompt_len, dtype=torch.long)
    for name in route:
        for site in refts[name].sites:
            idx = None if site.positions.all else resolve_positions(site.positions, mask)[0]  # [n], -1 = empty slot
            out.sites.append((site, idx))
    return out


def plan(
    segments: Sequence[Segment], resolved: Sequence[Resolved], device: torch.device | str = "cpu"
) -> dict[int, list[Op]]:
    """Per decoder layer, the ops of this step in application order (see the module docstring).

    Requests with the same route share one op per site (their rows concatenated): one gather
    per ReFT and layer, not one per request.
    """
    by_route: dict[tuple[str, ...], list[list[Tensor]]] = {}
    sites: dict[tuple[str, ...], list[ServedSite]] = {}
    for seg, res in zip(segments, resolved):
        rows = by_route.setdefault(seg.route, [[] for _ in res.sites])
        sites.setdefault(seg.route, [s for s, _ in res.sites])
        for i, (site, idx) in enumerate(res.sites):
            got = _rows(seg, site, idx)
            if got is not None and got.numel():
                rows[i].append(got)
    per_layer: dict[int, list[Op]] = {}
    for route, lists in by_route.items():
        for site, parts in zip(sites[route], lists):
            if parts:
                per_layer.setdefault(site.layer, []).append(Op(site.edit, torch.cat(parts).to(device)))
    return per_layer


def _rows(seg: Segment, site: ServedSite, idx: Tensor | None) -> Tensor | None:
    lo, hi = seg.computed, seg.computed + seg.width
    if idx is None:  # every token of the chunk
        return torch.arange(seg.start, seg.start + seg.width)
    if site.arity == 1:
        inside = idx[(idx >= lo) & (idx < hi)]
        return seg.start + inside - lo
    groups = idx.reshape(-1, site.arity)  # [n/k, k]
    groups = groups[(groups >= 0).all(dim=-1)]
    inside = (groups >= lo) & (groups < hi)
    whole = inside.all(dim=-1)
    if bool((inside.any(dim=-1) & ~whole).any()):
        raise ValueError(
            f"{site.edit.kind} reads {site.arity} positions at once, but vLLM split the prompt between them over "
            "two forwards (chunked prefill or a prefix-cache hit): serve such ReFTs with chunked prefill off "
            "(reftlab serve --engine vllm does) and a per-request cache salt"
        )
    return seg.start + groups[whole] - lo


def apply(x: Tensor, ops: Sequence[Op]) -> Tensor:
    """``x`` (``[tokens, d_model]``, the layer's output) with every op applied in order, in place."""
    from ...attach import call_edit

    for op in ops:
        flat = op.rows.reshape(-1)
        got = x.index_select(0, flat).reshape(*op.rows.shape, x.shape[-1])  # [n, d] or [n, k, d]
        x.index_copy_(0, flat, call_edit(op.edit, got).reshape(-1, x.shape[-1]))
    return x


def cache_salt(route: Sequence[ServedReft], prompt_len: int) -> str | None:
    """vLLM's prefix-cache salt for a request with these ReFTs, in order.

    None for the base. Otherwise a digest of the ReFTs (weights and positions) in order, plus the
    prompt length when a site counts positions from the end (the same tokens are edited only at
    the same length), so KV blocks computed under one set of edits never serve another. Edits
    that read several positions at once get a fresh salt per request: a cached prefix would hide
    positions they read.
    """
    if not route:
        return None
    if any(r.grouped for r in route):
        return uuid.uuid4().hex
    key = "|".join(f"{r.name}:{r.fingerprint}" for r in route)
    if any(r.length_dependent for r in route):
        key += f"|len={prompt_len}"
    return hashlib.sha256(key.encode()).hexdigest()
