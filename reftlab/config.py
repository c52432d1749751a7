"""ReftConfig: which interventions sit at which sites, as validated, serialisable data.

pyreft's form works unchanged::

    ReftConfig(representations={"layer": 15, "component": "block_output",
                                "low_rank_dimension": 4,
                                "intervention": LoreftIntervention(embed_dim=576, low_rank_dimension=4)})

and so does a native, file-friendly form::

    ReftConfig(representations=[{"hook": "blocks.15.hook_resid_post", "positions": "l1",
                                 "intervention": {"kind": "loreft", "rank": 4}}])
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_text
from .interventions import Intervention, build, intervention_class, kinds
from .mapping import check_keys, load_mapping
from .sites import COMPONENTS, Positions, Site

_REP_KEYS = {
    "layer": "block index (with 'component')",
    "component": f"one of {', '.join(COMPONENTS)}",
    "hook": "a hook name such as 'blocks.15.hook_resid_post' (instead of layer/component)",
    "positions": "default positions: 'l1', 'f3+l3', 'all' (optional; else given per call)",
    "low_rank_dimension": "rank (pyreft's name)",
    "rank": "rank",
    "intervention": "an Intervention object or a spec dict {'kind': 'loreft', ...}",
    "kind": f"intervention kind, one of {', '.join(kinds())} (with 'rank')",
    "unit": "pyreft's unit; only 'pos' is meaningful",
    "max_number_of_units": "pyreft's field; accepted and ignored (positions decide)",
    "share": "a group name: representations with the same name share ONE intervention (pyreft's share_weights)",
}


class TaskType(str, enum.Enum):
    """pyreft's task types: which head the base model has and which trainer fits it.

    ``CAUSAL_LM``: an ``*ForCausalLM`` model with ``ReftTrainerForCausalLM`` (or ``ReftTrainer``);
    ``SEQ_CLS``: an ``*ForSequenceClassification`` model with ``ReftTrainerForSequenceClassification``.
    Labels only, as in pyreft: nothing reads them, the model's class decides.

    >>> TaskType.SEQ_CLS == "SEQ_CLS"
    True
    """

    SEQ_CLS = "SEQ_CLS"
    CAUSAL_LM = "CAUSAL_LM"


@dataclass(frozen=True, kw_only=True)
class Representation:
    """One intervention at one site. ``intervention`` is a built module or a spec dict.

    Representations with the same ``share`` name hold one intervention between them
    (one set of parameters, counted and trained once).
    """

    site: Site
    intervention: Intervention | Mapping[str, Any]
    share: str | None = None

    def spec(self, d_model: int | None = None) -> dict[str, Any]:
        if isinstance(self.intervention, Intervention):
            return self.intervention.spec()
        spec = dict(self.intervention)
        if d_model is not None:
            spec.setdefault("d_model", d_model)
        return spec

    def build(self, d_model: int) -> Intervention:
        if isinstance(self.intervention, Intervention):
            return self.intervention
        return build(self.spec(d_model))

    def to_json(self) -> dict[str, Any]:
        shared = {} if self.share is None else {"share": self.share}
        return {**self.site.to_json(), "intervention": self.spec(), **shared}


@dataclass(frozen=True, kw_only=True)
class ReftConfig:
    """A validated list of representations (pyreft's name and constructor)."""

    representations: tuple[Representation, ...] = field(default_factory=tuple)

    def __init__(self, *, representations: Mapping[str, Any] | Sequence[Mapping[str, Any] | Representation]) -> None:
        if isinstance(representations, (str, bytes)) or not isinstance(representations, (Mapping, Sequence)):
            raise TypeError(
                "ReftConfig.representations must be a dict or a list of dicts such as "
                f"{{'layer': 15, 'component': 'block_output', 'kind': 'loreft', 'rank': 4}}, got {representations!r}"
            )
        items = [representations] if isinstance(representations, Mapping) else list(representations)
        if not items:
            raise ValueError("ReftConfig.representations is empty; give at least one {'layer', 'component', ...} dict")
        reps = tuple(r if isinstance(r, Representation) else _parse(r, i) for i, r in enumerate(items))
        object.__setattr__(self, "representations", _name_shared(reps))

    def validate(self, *, d_model: int, n_layers: int, hook_names: Sequence[str]) -> None:
        """Check the config against a model; errors name the field, the value and what is valid."""
        names = set(hook_names)
        for i, rep in enumerate(self.representations):
            where = f"representations[{i}]"
            layer = rep.site.layer
            if layer is not None and not 0 <= layer < n_layers:
                raise ValueError(f"{where}.layer={layer} is out of range; this model has layers 0..{n_layers - 1}")
            if rep.site.hook not in names:
                raise ValueError(f"{where}.hook={rep.site.hook!r} is not a hook point of this model")
            spec = rep.spec(d_model)
            if spec.get("d_model") != d_model:
                raise ValueError(
                    f"{where}: intervention embed_dim/d_model={spec.get('d_model')} != the model's d_model={d_model}"
                )
            rank = spec.get("rank")
            if rank is None and intervention_class(spec["kind"]).derives_rank:
                continue  # a composite's rank comes from its children, checked when it is built
            if not isinstance(rank, int) or not 1 <= rank <= d_model:
                raise ValueError(f"{where}: rank/low_rank_dimension={rank!r} must be in [1, d_model={d_model}]")

    def to_json(self) -> dict[str, Any]:
        return {"representations": [r.to_json() for r in self.representations]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ReftConfig":
        extra = set(data) - {"representations"}
        if extra:
            raise ValueError(f"unknown ReftConfig keys {sorted(extra)}; the only key is 'representations'")
        if "representations" not in data:
            raise ValueError("ReftConfig file has no 'representations' list")
        return cls(representations=data["representations"])

    def to_file(self, path: str | os.PathLike[str]) -> None:
        """Write JSON (``.json``) or YAML (``.yaml``/``.yml``), atomically."""
        path = Path(path)
        write_text(path, _dump(self.to_json(), path))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "ReftConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {path}")
        return cls.from_json(load_mapping(path.read_text(), path))

    def __repr__(self) -> str:
        lines = [f"  {r.site}: {r.spec().get('kind')} rank={r.spec().get('rank')}" for r in self.representations]
        return "ReftConfig(\n" + "\n".join(lines) + "\n)"


def _parse(rep: Mapping[str, Any], i: int) -> Representation:
    where = f"representations[{i}]"
    if not isinstance(rep, Mapping):
        raise TypeError(f"{where} must be a dict, got {type(rep).__name__}")
    check_keys(rep, _REP_KEYS, where)
    if rep.get("unit", "pos") != "pos":
        raise ValueError(f"{where}.unit={rep['unit']!r}: reftlab intervenes on token positions, use 'pos'")
    positions = rep.get("positions")
    if "hook" in rep:
        if "layer" in rep or "component" in rep:
            raise ValueError(f"{where}: give either 'hook' or 'layer' + 'component', not both")
        site = Site(hook=rep["hook"], positions=None if positions is None else Positions.parse(positions))
    else:
        if "layer" not in rep or "component" not in rep:
            raise ValueError(f"{where} needs 'layer' and 'component' (or a 'hook' name)")
        try:
            site = Site.from_pyreft(layer=rep["layer"], component=rep["component"], positions=positions)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    rank = rep.get("low_rank_dimension", rep.get("rank"))
    iv = rep.get("intervention")
    if isinstance(iv, Intervention):
        if rank is not None and rank != iv.rank:
            raise ValueError(f"{where}: low_rank_dimension={rank} but the intervention has rank {iv.rank}")
        return Representation(site=site, intervention=iv, share=rep.get("share"))
    if iv is None:
        if "kind" not in rep:
            raise ValueError(
                f"{where} needs an 'intervention' (object or spec) or a 'kind'; kinds: {', '.join(kinds())}"
            )
        iv = {"kind": rep["kind"]}
    if not isinstance(iv, Mapping) or "kind" not in iv:
        raise ValueError(f"{where}.intervention must be an Intervention or a dict with 'kind', got {iv!r}")
    cls = intervention_class(iv["kind"])  # unknown kinds fail here, naming the valid ones
    spec = dict(iv)
    if rank is not None:
        if "rank" in spec and spec["rank"] != rank:
            raise ValueError(f"{where}: rank given twice ({rank} and {spec['rank']})")
        spec["rank"] = rank
    if "rank" not in spec and not cls.derives_rank:
        raise ValueError(f"{where} needs 'low_rank_dimension' (or 'rank')")
    return Representation(site=site, intervention=spec, share=rep.get("share"))


def _name_shared(reps: tuple[Representation, ...]) -> tuple[Representation, ...]:
    """Give one intervention object used by several representations a share name; check each group's specs agree."""
    by_object: dict[int, list[int]] = {}
    for i, r in enumerate(reps):
        if isinstance(r.intervention, Intervention):
            by_object.setdefault(id(r.intervention), []).append(i)
    out = list(reps)
    for n, idx in enumerate(i for i in by_object.values() if len(i) > 1):
        names = {reps[i].share for i in idx} - {None}
        name = names.pop() if len(names) == 1 else f"shared{n}"
        if names:
            raise ValueError(f"representations {idx} hold one intervention object but different share names")
        out = [
            Representation(site=r.site, intervention=r.intervention, share=name) if i in idx else r
            for i, r in enumerate(out)
        ]
    groups: dict[str, int] = {}
    for i, r in enumerate(out):
        if r.share is None:
            continue
        if not isinstance(r.share, str) or not r.share:
            raise ValueError(f"representations[{i}].share={r.share!r} must be a non-empty group name")
        first = groups.setdefault(r.share, i)
        if r.spec() != out[first].spec():
            raise ValueError(
                f"representations[{first}] and [{i}] share {r.share!r} but their interventions differ: "
                f"{out[first].spec()} vs {r.spec()}"
            )
    return tuple(out)


def _dump(data: dict[str, Any], path: Path) -> str:
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_dump(data, sort_keys=False)
    if path.suffix == ".json":
        return json.dumps(data, indent=2) + "\n"
    raise ValueError(f"config file {path} must end in .json, .yaml or .yml")
