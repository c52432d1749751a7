"""Warm starts: a new study begins with the finished trials of an earlier search on the same data.

``reftlab search ... --warm-start EARLIER`` (``warm_start=`` in Python; ``EARLIER`` is that
search's output folder or its storage URL) copies the earlier study's finished trials (complete
and pruned, with the scores they reported at each rung) into the new study before it samples.
The sampler then draws from what they taught it and the pruner compares new trials with their
curves; the winner may be one of them. Only trials that the new space could have drawn, within
its parameter cap, are copied (a narrower space drops the rest), and only from a search that
scored the same thing:
the same task, metric, model, training and validation examples and schedule (the ``record``
each study keeps). Copied trials keep their scores but are not this search's trials: they do
not count towards ``candidates`` or a step budget, and ``trials.csv`` names their source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..recipe.search import SearchSpace
from .space import distributions
from .storage import RECORD, open_storage, shown

SAME = ("task", "metric", "model", "data", "held_out", "training", "format", "generation")
ATTR = "warm_start"  # user attribute of a copied trial: where it came from


def source_url(source: str | Path) -> str:
    """An earlier search's output folder (its ``study.db``) or a storage URL, as a URL."""
    text = str(source)
    if "://" in text:
        return text
    db = Path(text) / "study.db"
    if not db.is_file():
        raise ValueError(
            f"warm start {text!r}: no study.db there; give an earlier search's output folder or its --storage URL"
        )
    return f"sqlite:///{db.resolve()}"


def fits(params: dict[str, Any], dists: dict[str, Any]) -> bool:
    """Whether the new space could have drawn ``params`` (the same names, every value inside)."""
    if set(params) != set(dists):
        return False
    from optuna.distributions import FloatDistribution

    for name, dist in dists.items():
        value = params[name]
        inside = dist.low <= value <= dist.high if isinstance(dist, FloatDistribution) else value in dist.choices
        if not inside:
            return False
    return True


def warm_start(
    study: Any,
    source: str | Path,
    name: str,
    record: dict[str, Any],
    space: SearchSpace,
    n_layers: int,
    max_params: int | None = None,
) -> tuple[int, int]:
    """Copy the finished trials of study ``name`` at ``source`` into the empty ``study``; (copied, left out)."""
    import optuna
    from optuna.trial import TrialState

    url = source_url(source)
    storage = open_storage(url)
    if name not in optuna.study.get_all_study_names(storage):
        raise ValueError(f"warm start: no study {name!r} in {shown(url)}; name it with --warm-study (warm_study=)")
    earlier = optuna.load_study(study_name=name, storage=storage)
    theirs = earlier.user_attrs.get(RECORD) or {}
    differ = [k for k in SAME if theirs.get(k) != record.get(k)]
    if differ:
        raise ValueError(
            f"warm start from study {name!r} in {shown(url)}: it scored other trials (different: {', '.join(differ)}); "
            "a warm start needs the same task, metric, model, data, split and training schedule"
        )
    dists = distributions(space, n_layers)
    done = earlier.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    done = [t for t in done if t.user_attrs.get("trained")]
    copied = [
        optuna.trial.create_trial(
            state=t.state,
            value=t.value if t.state == TrialState.COMPLETE else None,
            params=t.params,
            distributions={k: dists[k] for k in t.params},
            user_attrs={**t.user_attrs, ATTR: f"{shown(url)} {name} #{t.number}"},
            intermediate_values=t.intermediate_values,
        )
        for t in done
        if fits(t.params, dists) and (max_params is None or int(t.user_attrs.get("params", 0)) <= max_params)
    ]
    study.add_trials(copied)
    return len(copied), len(done) - len(copied)
