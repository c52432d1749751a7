"""benchmarks/search.py: the three strategies run through the search's loop within the step budget,
and the regret is measured against the true best of the planted objective."""

import importlib.util
import json

from helpers import REPO


def test_search_benchmark_keeps_the_budget_and_measures_regret_from_the_true_best(capsys):
    spec = importlib.util.spec_from_file_location("bench_search", REPO / "benchmarks" / "search.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.main(["--budget", "120 steps", "--seeds", "2"])
    out = capsys.readouterr().out.strip().splitlines()
    assert [r["strategy"] for r in rows] == ["random + halving", "tpe + halving", "tpe + hyperband"]
    assert json.loads(out[-1]) == rows and out[2].startswith("| random + halving | 120 steps |")
    assert all(r["steps_max"] <= 120 and r["trained"] >= r["complete"] >= 1 for r in rows)
    assert all(r["regret_median"] >= 0 for r in rows)  # nothing beats the enumerated best
    space = mod.SearchSettings().space
    best = min(
        mod.planted(mod.Candidate(layers=ls, positions=p, kind=k, rank=r, lr=1.5e-2))
        for ls, k, r in space.structures(30, 576, None)
        for p in space.positions
    )
    assert mod.best_possible(space) >= best  # the cap only removes settings
