"""The search space as ``reftlab.search`` samples it.

The schema (``Candidate``, ``SearchSpace``, ``SearchSettings``, budgets) is a recipe's
``search:`` section and lives in ``reftlab.recipe.search``; its names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..recipe.search import Candidate, SearchSettings, SearchSpace, default_layers, parse_budget

__all__ = ["Candidate", "SearchSettings", "SearchSpace", "default_layers", "parse_budget", "sample"]


def sample(grid: Sequence[Candidate], n: int, seed: int) -> list[Candidate]:
    """``n`` candidates of ``grid`` drawn without replacement by a seeded RNG (all if n >= len)."""
    import random

    if n >= len(grid):
        return list(grid)
    idx = sorted(random.Random(seed).sample(range(len(grid)), n))
    return [grid[i] for i in idx]
