"""A recipe's ``search:`` section: what ``reftlab.search`` searches over, and how long it may take.

A ``Candidate`` is one complete ReFT setting: a set of layers (one intervention per
layer, on ``component``), the positions, the kind, the rank and the learning rate. A
``SearchSpace`` lists the values of each dimension; its grid is the product of them,
minus the candidates over the parameter cap. ``SearchSettings`` add the budget, the
cap and the successive-halving shape; a recipe's ``search:`` section and a
``--space SPACE.yaml`` file are read into them.

The default space (layers chosen from the model's depth ``L``):

- layers: ``round(L*f)`` for f = 0.2, 0.4, 0.6 alone, the pair {0.2, 0.6} and the
  four {0.2, 0.4, 0.6, 0.8} (SmolLM2, L=30: 6, 12, 18, "6;18", "6;12;18;24")
- positions: ``l1``, ``f1+l1``, ``f3+l3``;  kinds: ``loreft``, ``direft``
- ranks: 1, 2, 4, 8;  lr: 3e-3, 1e-2, 2e-2, 4e-2
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

from ..interventions import build, kinds
from ..mapping import check_keys
from ..sites import COMPONENTS, Positions, parse_layers

LAYER_FRACTIONS = ((0.2,), (0.4,), (0.6,), (0.2, 0.6), (0.2, 0.4, 0.6, 0.8))


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One setting: ``len(layers)`` interventions of ``kind``/``rank`` at ``positions``, trained at ``lr``."""

    layers: tuple[int, ...]
    positions: str
    kind: str
    rank: int
    lr: float
    component: str = "block_output"

    @property
    def key(self) -> str:
        """A stable, readable id: ``L6;18|f1+l1|loreft|r4|lr0.005``."""
        return f"L{';'.join(map(str, self.layers))}|{self.positions}|{self.kind}|r{self.rank}|lr{self.lr!r}"

    def describe(self) -> str:
        """For tables: ``direft r4 at layers 6;18, f1+l1, lr 0.01``."""
        return f"{self.kind} r{self.rank} at {'layers' if len(self.layers) > 1 else 'layer'} {';'.join(map(str, self.layers))}, {self.positions}, lr {self.lr:g}"

    def representations(self) -> list[dict[str, Any]]:
        """Recipe/ReftConfig entries, one per layer."""
        return [
            {
                "layer": layer,
                "component": self.component,
                "positions": self.positions,
                "kind": self.kind,
                "rank": self.rank,
            }
            for layer in self.layers
        ]

    def params(self, d_model: int) -> int:
        """Trainable parameters of the interventions (one per layer, none shared)."""
        return len(self.layers) * _kind_params(self.kind, self.rank, d_model)


@lru_cache(maxsize=256)
def _kind_params(kind: str, rank: int, d_model: int) -> int:
    return int(build({"kind": kind, "rank": rank, "d_model": d_model}).num_parameters())


def default_layers(n_layers: int) -> tuple[str, ...]:
    """Layer sets of the default space for a model with ``n_layers`` blocks.

    >>> default_layers(30)
    ('6', '12', '18', '6;18', '6;12;18;24')
    >>> default_layers(4)
    ('1', '2', '1;2', '1;2;3')
    """
    out: dict[str, None] = {}
    for fracs in LAYER_FRACTIONS:
        layers = sorted({min(n_layers - 1, max(0, round(n_layers * f))) for f in fracs})
        out[";".join(map(str, layers))] = None
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """The values tried per dimension; ``layers`` None = ``default_layers`` of the model."""

    layers: Sequence[str] | None = field(
        default=None, metadata={"help": "layer sets such as '12' or '6;12;18;24' (default: from the model's depth)"}
    )
    positions: Sequence[str] = field(default=("l1", "f1+l1", "f3+l3"), metadata={"help": "position specs"})
    kinds: Sequence[str] = field(default=("loreft", "direft"), metadata={"help": "intervention kinds"})
    ranks: Sequence[int] = field(default=(1, 2, 4, 8), metadata={"help": "ranks"})
    lrs: Sequence[float] = field(default=(3e-3, 1e-2, 2e-2, 4e-2), metadata={"help": "peak learning rates"})
    component: str = field(default="block_output", metadata={"help": f"site component, one of {', '.join(COMPONENTS)}"})

    def __post_init__(self) -> None:
        for name in ("layers", "positions", "kinds", "ranks", "lrs"):
            value = getattr(self, name)
            if value is None:
                continue
            value = (value,) if isinstance(value, (str, int, float)) else tuple(value)
            if not value:
                raise ValueError(f"space.{name} is empty; give at least one value")
            object.__setattr__(self, name, value)
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(str(x) for x in self.layers))
            for spec in self.layers:
                parse_layers(spec)
        for p in self.positions:
            Positions.parse(p)
        unknown = [k for k in self.kinds if k not in kinds()]
        if unknown:
            raise ValueError(f"space.kinds: unknown {unknown}; known: {', '.join(kinds())}")
        if not all(isinstance(r, int) and r >= 1 for r in self.ranks):
            raise ValueError(f"space.ranks={list(self.ranks)} must be ints >= 1")
        if not all(isinstance(x, (int, float)) and x > 0 for x in self.lrs):
            raise ValueError(f"space.lrs={list(self.lrs)} must be numbers > 0")
        object.__setattr__(self, "lrs", tuple(float(x) for x in self.lrs))
        if self.component not in COMPONENTS:
            raise ValueError(f"space.component={self.component!r}; use one of {', '.join(COMPONENTS)}")

    def grid(self, n_layers: int, d_model: int, max_params: int | None = None) -> list[Candidate]:
        """Every candidate, in a fixed order, without those over ``max_params``."""
        layer_sets = [tuple(parse_layers(s, n_layers)) for s in (self.layers or default_layers(n_layers))]
        out = [
            Candidate(layers=ls, positions=p, kind=k, rank=r, lr=lr, component=self.component)
            for ls in layer_sets
            for p in self.positions
            for k in self.kinds
            for r in self.ranks
            for lr in self.lrs
        ]
        if max_params is not None:
            out = [c for c in out if c.params(d_model) <= max_params]
            if not out:
                raise ValueError(f"max_params={max_params} excludes every candidate of the space; raise it")
        return out

    def to_json(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "space") -> "SearchSpace":
        check_keys(data, cls, where)
        return cls(**dict(data))


_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|steps?)?\s*$")


def parse_budget(budget: str | int | float | None) -> tuple[str, float] | None:
    """``"15m"`` -> ("seconds", 900); ``"400 steps"`` -> ("steps", 400); a bare number = seconds.

    >>> parse_budget("15m"), parse_budget("90s"), parse_budget("1.5h"), parse_budget("400 steps")
    (('seconds', 900.0), ('seconds', 90.0), ('seconds', 5400.0), ('steps', 400.0))
    """
    if budget is None:
        return None
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        if budget <= 0:
            raise ValueError(f"budget={budget!r} must be > 0")
        return ("seconds", float(budget))
    m = _BUDGET.match(str(budget))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"budget={budget!r}: use a wall-clock time ('90s', '15m', '2h') or a step count ('400 steps')")
    value, unit = float(m.group(1)), m.group(2) or "s"
    if unit.startswith("step"):
        return ("steps", value)
    return ("seconds", value * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[unit])


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """A search's space, budget, cap and successive-halving shape (a recipe's ``search:`` section)."""

    space: SearchSpace = field(default_factory=SearchSpace, metadata={"help": "the values tried (SearchSpace)"})
    budget: str | None = field(default=None, metadata={"help": "'15m', '2h', '400 steps' (None: no limit)"})
    max_params: int | None = field(default=None, metadata={"help": "the parameter cap of a candidate"})
    candidates: int = field(default=27, metadata={"help": "candidates in the first rung (sampled from the grid)"})
    eta: int = field(default=3, metadata={"help": "each rung keeps the best 1/eta, trained eta times longer"})
    min_steps: int = field(default=4, metadata={"help": "fewest training steps of a first-rung run"})
    seed: int = field(default=0, metadata={"help": "seeds the candidate sample, the split and every trial"})

    def __post_init__(self) -> None:
        parse_budget(self.budget)
        if self.max_params is not None and (not isinstance(self.max_params, int) or self.max_params < 1):
            raise ValueError(f"search.max_params={self.max_params!r} must be None or an int >= 1")
        for name, low in (("candidates", 1), ("eta", 2), ("min_steps", 1), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"search.{name}={value!r} must be an int >= {low}")

    def rung_steps(self, full_steps: int) -> list[int]:
        """Steps of each rung, last = ``full_steps``; each earlier one 1/eta of the next, >= min_steps.

        >>> SearchSettings(eta=3, min_steps=4).rung_steps(100)
        [11, 33, 100]
        """
        steps = [full_steps]
        while math.floor(steps[0] / self.eta) >= self.min_steps:
            steps.insert(0, math.floor(steps[0] / self.eta))
        return steps

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["space"] = self.space.to_json()
        return out

    def to_mapping(self) -> dict[str, Any]:
        """The settings that differ from the defaults, as a recipe's ``search:`` section holds them."""
        default = SearchSettings()
        out = {k: v for k, v in self.to_json().items() if k != "space" and v != getattr(default, k)}
        space = {k: v for k, v in self.space.to_json().items() if v != SearchSpace().to_json()[k]}
        return out | ({"space": space} if space else {})

    def replace(self, **changes: Any) -> "SearchSettings":
        import dataclasses

        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, where: str = "search") -> "SearchSettings":
        data = dict(data or {})
        check_keys(data, cls, where)
        if "space" in data:
            data["space"] = SearchSpace.from_mapping(data["space"] or {}, f"{where}.space")
        return cls(**data)
