"""Sites: where an intervention reads and writes, as frozen, JSON-round-trippable data.

A site is a hook name (``"blocks.15.hook_resid_post"``) plus a position policy. It
never holds a model. pyreft's ``{"layer": 15, "component": "block_output"}`` maps onto
the same data through ``COMPONENTS``.

Positions are resolved per example against an attention mask, so they are right under
left and right padding alike: ``"f3+l3"`` is the first three and last three *prompt*
tokens of each example, ``"l1"`` its last prompt token, ``"all"`` every position.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

# pyreft/pyvene component names -> hook point suffix inside ``blocks.{layer}``.
COMPONENTS: dict[str, str] = {
    "block_input": "hook_resid_pre",
    "block_output": "hook_resid_post",
    "attention_input": "hook_attn_in",
    "attention_output": "hook_attn_out",
    "mlp_input": "hook_mlp_in",
    "mlp_output": "hook_mlp_out",
}
_HOOK_TO_COMPONENT = {v: k for k, v in COMPONENTS.items()}
# a hook inside block L: "blocks.L.<part>" (group 1: L, group 2: the part)
BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_POSITIONS = re.compile(r"^(?:f(\d+))?(?:\+?l(\d+))?$")
# pyvene's string component access: a module path relative to the model plus ".input"/".output",
# e.g. "base_model.model.model.layers[15].output"; HookedModel makes a hook point for it on demand.
MODULE_SITE = re.compile(r"^(?P<path>[A-Za-z_][\w.\[\]]*)\.(?P<tap>input|output)$")


@dataclass(frozen=True, kw_only=True)
class Positions:
    """Which prompt positions an intervention touches: the first ``first`` and last ``last``, or all.

    >>> Positions.parse("f3+l3")
    Positions(first=3, last=3, all=False)
    >>> str(Positions.parse("l1"))
    'l1'
    """

    first: int = 0
    last: int = 0
    all: bool = False

    def __post_init__(self) -> None:
        if self.first < 0 or self.last < 0:
            raise ValueError(f"positions need first >= 0 and last >= 0, got first={self.first}, last={self.last}")
        if not self.all and self.first == 0 and self.last == 0:
            raise ValueError("positions select nothing; use e.g. 'l1', 'f3+l3' or 'all'")
        if self.all and (self.first or self.last):
            raise ValueError("positions 'all' cannot be combined with first/last counts")

    @classmethod
    def parse(cls, spec: "str | Positions") -> "Positions":
        if isinstance(spec, Positions):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"positions must be a string like 'l1', 'f3+l3' or 'all', got {spec!r}")
        text = spec.strip().lower()
        if text == "all":
            return cls(all=True)
        m = _POSITIONS.match(text)
        if not m or not text:
            raise ValueError(f"cannot parse positions {spec!r}; expected 'l1', 'f1', 'f3+l3' or 'all'")
        return cls(first=int(m.group(1) or 0), last=int(m.group(2) or 0))

    def __str__(self) -> str:
        if self.all:
            return "all"
        parts = ([f"f{self.first}"] if self.first else []) + ([f"l{self.last}"] if self.last else [])
        return "+".join(parts)

    @property
    def count(self) -> int:
        """Positions per example (duplicates included) when the prompt is long enough."""
        return self.first + self.last


@dataclass(frozen=True, kw_only=True)
class Site:
    """A hook name plus a position policy (None: positions are given at call time).

    >>> s = Site.from_pyreft(layer=15, component="block_output", positions="l1")
    >>> s.hook, s.layer, s.component
    ('blocks.15.hook_resid_post', 15, 'block_output')
    >>> Site.from_json(s.to_json()) == s
    True
    """

    hook: str
    positions: Positions | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.hook, str) or not self.hook:
            raise ValueError(f"site hook must be a non-empty hook name, got {self.hook!r}")
        if isinstance(self.positions, str):
            object.__setattr__(self, "positions", Positions.parse(self.positions))

    @classmethod
    def from_pyreft(cls, *, layer: int, component: str, positions: "str | Positions | None" = None) -> "Site":
        if isinstance(component, str) and component not in COMPONENTS and MODULE_SITE.match(component):
            return cls(hook=component, positions=_maybe(positions))  # the module path decides; layer is unused
        if component not in COMPONENTS:
            raise ValueError(
                f"component={component!r} is not known; valid components: {', '.join(COMPONENTS)}"
                " (or a hook name such as 'blocks.3.hook_resid_post', or a module path"
                " such as 'model.layers[3].output')"
            )
        if not isinstance(layer, int) or layer < 0:
            raise ValueError(f"layer={layer!r} must be a non-negative int")
        return cls(hook=f"blocks.{layer}.{COMPONENTS[component]}", positions=_maybe(positions))

    @property
    def layer(self) -> int | None:
        m = BLOCK_HOOK.match(self.hook)
        return int(m.group(1)) if m else None

    @property
    def component(self) -> str | None:
        m = BLOCK_HOOK.match(self.hook)
        return _HOOK_TO_COMPONENT.get(m.group(2)) if m else None

    def to_json(self) -> dict[str, Any]:
        return {"hook": self.hook, "positions": None if self.positions is None else str(self.positions)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Site":
        extra = set(data) - {"hook", "positions"}
        if extra or "hook" not in data:
            raise ValueError(f"site JSON needs exactly 'hook' and 'positions', got keys {sorted(data)}")
        return cls(hook=data["hook"], positions=_maybe(data.get("positions")))

    def __str__(self) -> str:
        return self.hook if self.positions is None else f"{self.hook}[{self.positions}]"


# What a caller passes as ``positions`` (``ReftModel.run``, ``generate``, ``route``, the analyses):
# for one intervention a spec (``"l1"``, ``"f3+l3"``, ``"all"``, a ``Positions``), ``[batch, n]``
# absolute indices (a tensor or nested list of ints; -1 an empty slot), or None (the site's own);
# or one of those per intervention, as a list in binding order or a dict by intervention key.
PositionIndices = Tensor | Sequence[Sequence[int]]
OnePositions = str | Positions | PositionIndices | None
PositionsArg = OnePositions | Sequence[OnePositions] | Mapping[str, OnePositions]


def _maybe(positions: "str | Positions | None") -> Positions | None:
    return None if positions is None else Positions.parse(positions)


def resolve_positions(
    positions: "str | Positions",
    attention_mask: Int[Tensor, "batch pos"],
    prompt_lengths: Int[Tensor, " batch"] | Sequence[int] | None = None,
) -> Int[Tensor, "batch n"]:
    """Absolute indices into the padded sequence for each example; -1 marks a missing slot.

    The prompt of example i starts at its first attended token (so left and right
    padding both work) and is ``prompt_lengths[i]`` tokens long (default: all attended
    tokens). First-k slots beyond a short prompt are -1; last-k slots before its start
    are -1. ``"all"`` returns every attended prompt position, -1 padded.

    >>> mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])       # left padding
    >>> resolve_positions("f1+l1", mask).tolist()
    [[1, 3], [0, 3]]
    """
    spec = Positions.parse(positions)
    if not isinstance(attention_mask, Tensor) or attention_mask.ndim != 2:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
        raise ValueError(f"attention_mask must be [batch, pos], got {shape}")
    mask = attention_mask.bool()
    batch, seq = mask.shape
    attended = mask.sum(dim=1)
    start = torch.where(attended > 0, mask.int().argmax(dim=1), torch.zeros_like(attended))
    if prompt_lengths is None:
        lengths = attended
    else:
        lengths = torch.as_tensor(prompt_lengths, dtype=torch.long, device=mask.device)
        if lengths.shape != (batch,):
            raise ValueError(f"prompt_lengths has shape {tuple(lengths.shape)}, expected ({batch},)")
        if bool((lengths > attended).any()):
            i = int((lengths > attended).nonzero()[0])
            raise ValueError(
                f"example {i}: prompt length {int(lengths[i])} exceeds its {int(attended[i])} attended tokens"
            )
    if spec.all:
        offsets = torch.arange(seq, device=mask.device).expand(batch, seq)
        valid = offsets < lengths[:, None]
        return torch.where(valid, start[:, None] + offsets, -1)
    first = torch.arange(spec.first, device=mask.device).expand(batch, spec.first)
    first_valid = first < lengths[:, None]
    last = lengths[:, None] - spec.last + torch.arange(spec.last, device=mask.device)
    last_valid = last >= 0
    rel = torch.cat([first, last], dim=1)
    valid = torch.cat([first_valid, last_valid], dim=1)
    return torch.where(valid, start[:, None] + rel, -1)


# What explicit positions mean, in one place (docs/concepts.md repeats it):
POSITIONS_RULES = (
    "explicit positions are absolute indices into the padded input, one row per example; "
    "-1 marks an empty slot (nothing is edited there, it never means 'last token'); "
    "for positions counted from the end use a spec such as 'l1' or 'f3+l3'"
)


def as_position_tensor(positions: Any, what: str = "positions") -> Int[Tensor, "..."]:
    """``positions`` (a tensor, array or nested list of ints) as a long tensor.

    Floats, bools and ragged lists are errors (a float index is never silently rounded).

    >>> as_position_tensor([[3, -1], [0, 2]]).tolist()
    [[3, -1], [0, 2]]
    >>> as_position_tensor([[3], [0, 2]])
    Traceback (most recent call last):
    ValueError: positions is a ragged list (rows of different lengths); pad short rows with -1 (an empty slot)
    """
    if isinstance(positions, Tensor):
        t = positions
    else:
        try:
            t = torch.as_tensor(positions)
        except (ValueError, TypeError) as e:
            if _ragged(positions):
                raise ValueError(
                    f"{what} is a ragged list (rows of different lengths); pad short rows with -1 (an empty slot)"
                ) from None
            raise TypeError(
                f"{what} must be integer indices (a tensor or nested list of ints), got {positions!r}"
            ) from e
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{what} must hold integer indices, got dtype {t.dtype}; {POSITIONS_RULES}")
    return t.long()


def check_positions(
    positions: Int[Tensor, "batch n"],
    attention_mask: Int[Tensor, "batch pos"],
    what: str = "positions",
    *,
    allow_empty: bool = False,
) -> Int[Tensor, "batch n"]:
    """Check explicit ``[batch, n]`` positions against the batch they index; returns them.

    Errors (each names the example and the index): not 2-D, a batch size that differs from
    the input's, an index below -1 or past the sequence, an index on a padding token
    (``attention_mask`` 0), and positions that are -1 everywhere (they would edit nothing:
    -1 is an empty slot, not the last token) unless ``allow_empty`` (a batch of a larger
    prompt set, checked as a whole by its caller).

    >>> mask = torch.tensor([[0, 1, 1], [1, 1, 1]])            # example 0 is left-padded
    >>> check_positions(torch.tensor([[2], [-1]]), mask).tolist()
    [[2], [-1]]
    >>> check_positions(torch.tensor([[0], [2]]), mask)
    Traceback (most recent call last):
    ValueError: positions: example 0 points at position 0, a padding token (attention_mask 0); positions index the padded input (e.g. after left padding, the last token is at the end)
    """
    batch, width = attention_mask.shape
    if positions.ndim != 2:
        raise ValueError(f"{what} must be [batch, n], got shape {tuple(positions.shape)}; {POSITIONS_RULES}")
    if positions.shape[0] != batch:
        raise ValueError(f"{what} cover {positions.shape[0]} examples but the batch has {batch}")
    if positions.numel() == 0:
        return positions
    low = positions < -1
    if bool(low.any()):
        i, j = (int(x) for x in low.nonzero()[0])
        raise ValueError(
            f"{what}: example {i} has position {int(positions[i, j])}; negative indices are not counted from the end: "
            f"{POSITIONS_RULES}"
        )
    high = positions >= width
    if bool(high.any()):
        i, j = (int(x) for x in high.nonzero()[0])
        raise ValueError(
            f"{what}: example {i} has position {int(positions[i, j])}, beyond its sequence of {width} tokens; "
            "positions index the padded input"
        )
    valid = positions >= 0
    if not allow_empty and not bool(valid.any()):
        raise ValueError(f"{what} are -1 everywhere, so nothing would be edited; {POSITIONS_RULES}")
    mask = attention_mask.to(positions.device).bool()
    on_pad = valid & ~mask.gather(1, positions.clamp(min=0))
    if bool(on_pad.any()):
        i, j = (int(x) for x in on_pad.nonzero()[0])
        raise ValueError(
            f"{what}: example {i} points at position {int(positions[i, j])}, a padding token (attention_mask 0); "
            "positions index the padded input (e.g. after left padding, the last token is at the end)"
        )
    return positions


def _ragged(x: Any) -> bool:
    if not isinstance(x, (list, tuple)) or not x:
        return False
    if all(isinstance(r, (list, tuple)) for r in x):
        return len({len(r) for r in x}) > 1 or any(_ragged(r) for r in x)
    return False


def positions_per_intervention(positions: PositionsArg, keys: list[str]) -> list[Any]:
    """``positions`` as ``ReftModel.run`` takes them (a spec, a ``[batch, n]`` tensor, a list or a
    dict by key) -> one entry per key; None stands for the site's own positions."""
    if positions is None or isinstance(positions, (str, Positions)):
        return [positions] * len(keys)
    if isinstance(positions, Tensor) and positions.ndim == 2:
        return [positions] * len(keys)
    if isinstance(positions, Mapping):
        unknown = set(positions) - set(keys)
        if unknown:
            raise ValueError(f"positions name unknown interventions {sorted(unknown)}; known: {keys}")
        return [positions.get(k) for k in keys]
    if not isinstance(positions, (list, tuple, Tensor)):
        raise TypeError(
            f"positions must be a spec such as 'l1', a [batch, n] index tensor, or a list/dict of those per "
            f"intervention, got a {type(positions).__name__}: {positions!r}"
        )
    items = list(positions)
    if items and not isinstance(items[0], (str, Positions, Tensor, type(None))) and _depth(items) == 2:
        return [as_position_tensor(items)] * len(keys)
    if len(items) != len(keys):
        raise ValueError(f"got positions for {len(items)} interventions, the model has {len(keys)}")
    return items


def _depth(x: Any) -> int:
    d = 0
    while isinstance(x, (list, tuple)) and x:
        x, d = x[0], d + 1
    return d


def parse_layers(layers: str | int | Sequence[int], n_layers: int | None = None) -> list[int]:
    """pyreft's ``-l``: ``"all"``, ``"3;9;18"``, an int or a list of ints.

    >>> parse_layers("3;9;18"), parse_layers("all", n_layers=4)
    ([3, 9, 18], [0, 1, 2, 3])
    """
    if isinstance(layers, str):
        if layers.strip() == "all":
            if n_layers is None:
                raise ValueError("layers='all' needs n_layers (the model's number of blocks)")
            return list(range(n_layers))
        try:
            out = [int(x) for x in layers.split(";") if x.strip()]
        except ValueError:
            raise ValueError(f"layers={layers!r}: use 'all', '3;9;18' or a list of ints") from None
    else:
        out = [layers] if isinstance(layers, int) else [int(x) for x in layers]
    bad = [L for L in out if L < 0 or (n_layers is not None and n_layers <= L)]
    if not out or bad:
        raise ValueError(f"layers={layers!r} gives no layers or bad ones {bad}; valid: 0..{(n_layers or 1) - 1}")
    return out
