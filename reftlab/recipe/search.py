"""A recipe's ``search:`` section: what ``reftlab.search`` searches over, and how long it may take.

A ``Candidate`` is one complete ReFT setting: a set of layers (one intervention per
layer, on ``component``), the positions, the kind, the rank, the learning rate and (when the
space lists them) the epochs. A ``SearchSpace`` lists the values of each dimension; the
learning rate is a range searched on a log scale. ``SearchSettings`` add the budget, the
parameter cap, the number of trials and the pruner's shape; a recipe's ``search:`` section and
a ``--space SPACE.yaml`` file are read into them.

The default space (layers chosen from the model's depth ``L``):

- layers: ``round(L*f)`` for f = 0.2, 0.4, 0.6 alone, the pair {0.2, 0.6}, the four
  {0.2, 0.4, 0.6, 0.8} and the eight {0.1, ..., 0.8} (many layers, which the parameter cap
  keeps at low rank) (SmolLM2, L=30: 6, 12, 18, "6;18", "6;12;18;24", "3;6;9;12;15;18;21;24")
- positions: ``l1``, ``f1+l1``, ``f3+l3``, ``f5+l5``
- kinds: the six low-rank ReFTs ``loreft``, ``direft``, ``noreft``, ``nodireft``, ``lobireft``, ``consreft``
- ranks: 1, 2, 4, 8;  lr: 3e-3 to 4e-2 (log scale);  epochs: the recipe's
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

LAYER_FRACTIONS = ((0.2,), (0.4,), (0.6,), (0.2, 0.6), (0.2, 0.4, 0.6, 0.8), tuple(i / 10 for i in range(1, 9)))
KINDS = ("loreft", "direft", "noreft", "nodireft", "lobireft", "consreft")


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One setting: ``len(layers)`` interventions of ``kind``/``rank`` at ``positions``, trained at ``lr``
    (for ``epochs``; None: the recipe's schedule)."""

    layers: tuple[int, ...]
    positions: str
    kind: str
    rank: int
    lr: float
    component: str = "block_output"
    epochs: int | None = None

    @property
    def key(self) -> str:
        """A stable, readable id: ``L6;18|f1+l1|loreft|r4|lr0.005`` (``|e3`` added when epochs are searched)."""
        key = f"L{';'.join(map(str, self.layers))}|{self.positions}|{self.kind}|r{self.rank}|lr{self.lr!r}"
        return key if self.epochs is None else f"{key}|e{self.epochs}"

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
    ('6', '12', '18', '6;18', '6;12;18;24', '3;6;9;12;15;18;21;24')
    >>> default_layers(4)
    ('1', '2', '1;2', '1;2;3', '0;1;2;3')
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
    positions: Sequence[str] = field(default=("l1", "f1+l1", "f3+l3", "f5+l5"), metadata={"help": "position specs"})
    kinds: Sequence[str] = field(default=KINDS, metadata={"help": "intervention kinds"})
    ranks: Sequence[int] = field(default=(1, 2, 4, 8), metadata={"help": "ranks"})
    lr: Sequence[float] = field(
        default=(3e-3, 4e-2), metadata={"help": "[low, high]: the peak learning rate's range, searched on a log scale"}
    )
    epochs: Sequence[int] | None = field(
        default=None, metadata={"help": "epoch counts to try (default: the recipe's training schedule)"}
    )
    component: str = field(default="block_output", metadata={"help": f"site component, one of {', '.join(COMPONENTS)}"})

    def __post_init__(self) -> None:
        for name in ("layers", "positions", "kinds", "ranks", "epochs"):
            value = getattr(self, name)
            if value is None:
                continue
            value = (value,) if isinstance(value, (str, int, float)) else tuple(value)
            if not value:
                raise ValueError(f"space.{name} is empty; give at least one value (or leave it out for the default)")
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
        for name in ("ranks", "epochs"):
            values = getattr(self, name) or ()
            if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in values):
                raise ValueError(f"space.{name}={list(values)} must be ints >= 1")
        object.__setattr__(self, "lr", _lr_range(self.lr))
        if self.component not in COMPONENTS:
            raise ValueError(f"space.component={self.component!r}; use one of {', '.join(COMPONENTS)}")

    def layer_sets(self, n_layers: int) -> list[tuple[int, ...]]:
        """The layer sets for a model with ``n_layers`` blocks (each checked against the depth)."""
        try:
            return [tuple(parse_layers(s, n_layers)) for s in (self.layers or default_layers(n_layers))]
        except ValueError as e:
            raise ValueError(f"space.layers: {e} (this model has {n_layers} blocks)") from None

    def structures(
        self, n_layers: int, d_model: int, max_params: int | None = None
    ) -> list[tuple[tuple[int, ...], str, int]]:
        """Every (layers, kind, rank), in a fixed order, without those over ``max_params`` (positions, lr and
        epochs do not change the parameter count)."""
        out = [(ls, k, r) for ls in self.layer_sets(n_layers) for k in self.kinds for r in self.ranks]
        if max_params is not None:
            out = [s for s in out if len(s[0]) * _kind_params(s[1], s[2], d_model) <= max_params]
            if not out:
                raise ValueError(f"max_params={max_params} excludes every candidate of the space; raise it")
        return out

    def to_json(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "space") -> "SearchSpace":
        if "lrs" in data:
            raise ValueError(
                f"{where}.lrs (a list of values) is now {where}.lr: [low, high], a range searched on a log scale, "
                "e.g. lr: [0.003, 0.04]"
            )
        check_keys(data, cls, where)
        return cls(**dict(data))


def _lr_range(value: Any) -> tuple[float, float]:
    """``[low, high]`` with 0 < low <= high (one number: that lr alone)."""
    pair = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if len(pair) != 2 or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < math.inf for x in pair
    ):
        raise ValueError(f"space.lr={value!r} must be [low, high], two numbers > 0 (e.g. [0.003, 0.04])")
    low, high = float(pair[0]), float(pair[1])
    if low > high:
        raise ValueError(f"space.lr=[{low:g}, {high:g}] is inverted: give [low, high], e.g. [{high:g}, {low:g}]")
    return low, high


PRUNERS = ("halving", "hyperband", "none")
SAMPLERS = ("tpe", "random")  # random: each trial drawn alone, as the hand-written halving drew its candidates
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
    """A search's space, budget, cap, trial count and pruner (a recipe's ``search:`` section)."""

    space: SearchSpace = field(default_factory=SearchSpace, metadata={"help": "the values tried (SearchSpace)"})
    budget: str | None = field(default=None, metadata={"help": "'15m', '2h', '400 steps' (None: no limit)"})
    max_params: int | None = field(
        default=None, metadata={"help": "the parameter cap: a trial over it is pruned before it trains"}
    )
    candidates: int = field(
        default=27, metadata={"help": "trials the study trains (pruned ones included; those over the cap not)"}
    )
    pruner: str = field(
        default="halving", metadata={"help": f"how bad trials stop early: {', '.join(PRUNERS)} (Optuna's pruners)"}
    )
    sampler: str = field(
        default="tpe", metadata={"help": f"how trials are drawn: {', '.join(SAMPLERS)} (Optuna's samplers, seeded)"}
    )
    eta: int = field(default=3, metadata={"help": "the pruner's reduction factor: a rung keeps its best 1/eta"})
    min_steps: int = field(default=4, metadata={"help": "training steps before the first rung (the first report)"})
    seed: int = field(default=0, metadata={"help": "seeds the sampler, the splits and every trial"})

    def __post_init__(self) -> None:
        parse_budget(self.budget)
        if self.max_params is not None and (not isinstance(self.max_params, int) or self.max_params < 1):
            raise ValueError(f"search.max_params={self.max_params!r} must be None or an int >= 1")
        for name, low in (("candidates", 1), ("eta", 2), ("min_steps", 1), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"search.{name}={value!r} must be an int >= {low}")
        for name, known in (("pruner", PRUNERS), ("sampler", SAMPLERS)):
            if getattr(self, name) not in known:
                raise ValueError(f"search.{name}={getattr(self, name)!r}; use one of {', '.join(known)}")

    def rung_steps(self, full_steps: int) -> list[int]:
        """The steps at which a trial reports its held-out score: ``min_steps * eta^k`` below
        ``full_steps`` (the pruners' rungs), then ``full_steps``.

        >>> SearchSettings(eta=3, min_steps=4).rung_steps(100)
        [4, 12, 36, 100]
        """
        steps: list[int] = []
        while (step := self.min_steps * self.eta ** len(steps)) < full_steps:
            steps.append(step)
        return [*steps, full_steps]

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
