"""Automatic search for a good ReFT: successive halving over layers, positions, kind, rank and lr.

``reftlab.search(model, train, eval, space=..., budget=..., max_params=...)`` (``halving``)
returns the best ``Candidate`` and the trial table (``search_with`` takes a ``SearchSettings`` and
an ``reftlab.evaluate.EvalSettings`` instead of their keywords); ``search_recipe`` (``best``) runs it on a
recipe and writes ``best.yaml``; ``SearchSpace``/``SearchSettings`` (``space``) say what is
searched; ``trial`` trains and scores one candidate; ``log`` keeps the resumable trial log.
"""

from ..recipe.search import Candidate, SearchSettings, SearchSpace, default_layers, parse_budget
from .best import best_recipe, search_recipe, write_best
from .halving import SearchResult, search, search_with

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
