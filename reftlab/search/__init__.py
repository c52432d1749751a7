"""Automatic search for a good ReFT: an Optuna study over layers, positions, kind, rank, lr and epochs.

``reftlab.search(model, train, eval, space=..., budget=..., max_params=...)`` (``study``)
returns the best ``Candidate``, its validation and test scores and the trial table
(``search_with`` takes a ``SearchSettings`` and an ``reftlab.evaluate.EvalSettings`` instead of
their keywords); ``search_recipe`` (``best``) runs it on a recipe and writes ``best.yaml``;
``SearchSpace``/``SearchSettings`` (``space``) say what is searched; ``objective`` runs a
process's trials (cap, budget, pruning); ``trial`` trains and scores one candidate; ``storage``
opens the study (SQLite, PostgreSQL); ``workers`` runs it in several processes; ``log`` writes
the trial table; ``result`` retrains the winner and scores it on the test split.
"""

from ..recipe.search import Candidate, SearchSettings, SearchSpace, default_layers, parse_budget
from .best import best_recipe, search_recipe, write_best
from .result import SearchResult
from .study import search, search_with

__all__ = [
    "Candidate",
    "SearchResult",
    "SearchSettings",
    "SearchSpace",
    "best_recipe",
    "default_layers",
    "parse_budget",
    "search",
    "search_recipe",
    "search_with",
    "write_best",
]
