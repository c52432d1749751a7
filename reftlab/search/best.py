"""``reftlab search RECIPE.yaml``: search a recipe's settings, then write the winner as a recipe.

The recipe gives the model, the task, the data, the prompt format, the metric and the
full training schedule; its ``search:`` section (or ``--space``, ``--budget``,
``--max-params``) the space and limits. The trials are scored on ``evaluation.held_out`` (20%)
of the recipe's data (the validation split); the winner, retrained, is scored once on a test
split: ``--eval FILE`` if given, else half of that held-out fifth (then the validation split is
the other half). The recipe's own ``evaluation.data`` (its test set) is never used by the search.

``OUT/best.yaml`` is the recipe with the best candidate's interventions and lr: ``reftlab
train OUT/best.yaml`` retrains them on all of the recipe's data with the full schedule
and writes the checkpoint to ``OUT/best/``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..atomic import write_text
from ..recipe import DataSpec, Recipe, load_base, recipe_examples
from ..recipe.search import Candidate, SearchSpace
from .result import SearchResult
from .study import search_with


def search_recipe(
    recipe: Recipe,
    out: str | os.PathLike,
    *,
    eval_data: str | os.PathLike | Mapping[str, Any] | None = None,
    space: SearchSpace | Mapping[str, Any] | None = None,
    budget: str | None = None,
    max_params: int | None = None,
    storage: str | None = None,
    study: str = "reftlab-search",
    workers: int = 1,
    resume: bool = False,
    warm_start: str | os.PathLike | None = None,
    warm_study: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    started: float | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Run ``reftlab.search`` on ``recipe`` and write ``OUT/best.yaml`` (see the module docstring); the
    other arguments are ``reftlab.search``'s. Each worker process loads the recipe's model itself."""
    started = time.monotonic() if started is None else started
    out = Path(out)
    settings = recipe.search.replace(budget=budget, max_params=max_params)
    if space is not None:
        settings = settings.replace(space=space if isinstance(space, SearchSpace) else SearchSpace.from_mapping(space))
    train = recipe_examples(recipe)
    held = None
    if eval_data is not None:
        inherited = {k: v for k, v in recipe.data.to_json().items() if k not in ("path", "bigbench")}
        own = dict(eval_data) if isinstance(eval_data, Mapping) else {"path": str(eval_data)}
        held = recipe_examples(recipe, DataSpec.from_mapping({**inherited, **own}, ".", "--eval"))
    n_labels = len(train[0]["choices"]) if recipe.task == "classification" else 0
    result = search_with(
        functools.partial(load_base, recipe, n_labels),
        train,
        held,
        settings,
        recipe.eval_settings(),
        training=recipe.training,
        held_out=recipe.evaluation.held_out,
        out=out,
        storage=storage,
        study=study,
        workers=workers,
        resume=resume,
        warm_start=None if warm_start is None else str(warm_start),
        warm_study=warm_study,
        progress=progress,
        log=log,
        started=started,
        on_trial=on_trial,
    )
    write_best(recipe, result.best, out / "best.yaml", output_dir=out / "best")
    return result


def best_recipe(recipe: Recipe, best: Candidate, *, output_dir: str | os.PathLike) -> dict[str, Any]:
    """``recipe`` as plain data with ``best``'s interventions and lr, no search section."""
    data = recipe.to_mapping()
    data["interventions"] = best.representations()
    data["training"] = {**data.get("training", {}), "lr": best.lr}
    if best.epochs is not None:  # the searched epochs replace the recipe's schedule length
        data["training"] = {k: v for k, v in data["training"].items() if k != "max_steps"} | {"epochs": best.epochs}
    data["output_dir"] = str(Path(output_dir).resolve())
    data.pop("search", None)
    Recipe.from_mapping(data)  # what we write must read back
    return data


def write_best(recipe: Recipe, best: Candidate, path: Path, *, output_dir: str | os.PathLike) -> Path:
    import yaml

    data = best_recipe(recipe, best, output_dir=output_dir)
    header = (
        f"# The best setting found by `reftlab search` ({best.key}).\n"
        f"# `reftlab train {path}` retrains it on all of the recipe's data with the full schedule.\n"
    )
    return write_text(path, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
