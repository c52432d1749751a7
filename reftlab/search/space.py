"""The search space as an Optuna trial samples it.

The schema (``Candidate``, ``SearchSpace``, ``SearchSettings``, budgets) is a recipe's
``search:`` section and lives in ``reftlab.recipe.search``; its names are importable from here too.
Each dimension is one Optuna parameter: ``layers``, ``positions``, ``kind``, ``rank`` and (when the
space lists epochs) ``epochs`` are categorical, ``lr`` a float on a log scale.
"""

from __future__ import annotations

from typing import Any

from ..recipe.search import Candidate, SearchSettings, SearchSpace, default_layers, parse_budget

__all__ = ["Candidate", "SearchSettings", "SearchSpace", "default_layers", "distributions", "parse_budget", "suggest"]


def distributions(space: SearchSpace, n_layers: int) -> dict[str, Any]:
    """The Optuna distribution of each parameter ``suggest`` draws (a layer set as its key, '6;18')."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    out: dict[str, Any] = {
        "layers": CategoricalDistribution([";".join(map(str, ls)) for ls in space.layer_sets(n_layers)]),
        "positions": CategoricalDistribution(list(space.positions)),
        "kind": CategoricalDistribution(list(space.kinds)),
        "rank": CategoricalDistribution(list(space.ranks)),
        "lr": FloatDistribution(space.lr[0], space.lr[1], log=True),
    }
    if space.epochs is not None:
        out["epochs"] = CategoricalDistribution(list(space.epochs))
    return out


def suggest(trial: Any, space: SearchSpace, n_layers: int) -> Candidate:
    """The candidate ``trial`` (an ``optuna.Trial``) draws from ``space`` for a model of ``n_layers`` blocks.

    The lr is rounded to three significant digits: the key, best.yaml and the table carry a readable value.
    """
    d = distributions(space, n_layers)
    epochs = None if space.epochs is None else int(trial.suggest_categorical("epochs", d["epochs"].choices))
    layers = trial.suggest_categorical("layers", d["layers"].choices)
    return Candidate(
        layers=tuple(int(x) for x in layers.split(";")),
        positions=trial.suggest_categorical("positions", d["positions"].choices),
        kind=trial.suggest_categorical("kind", d["kind"].choices),
        rank=int(trial.suggest_categorical("rank", d["rank"].choices)),
        lr=float(f"{trial.suggest_float('lr', d['lr'].low, d['lr'].high, log=True):.3g}"),
        component=space.component,
        epochs=epochs,
    )


def params_of(candidate: Candidate) -> dict[str, Any]:
    """``candidate`` as the Optuna parameters ``suggest`` would draw it from (for ``study.enqueue_trial``)."""
    out: dict[str, Any] = {
        "layers": ";".join(map(str, candidate.layers)),
        "positions": candidate.positions,
        "kind": candidate.kind,
        "rank": candidate.rank,
        "lr": candidate.lr,
    }
    return out if candidate.epochs is None else {**out, "epochs": candidate.epochs}
