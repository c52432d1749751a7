"""The search space: grid, parameter counts (checked against real ReftModels), cap, budgets, rungs."""

import pytest

import reftlab
from reftlab.search.space import Candidate, SearchSettings, SearchSpace, parse_budget, sample


def test_candidate_params_are_the_reft_models(tiny_hooked):
    for cand in [
        Candidate(layers=(1,), positions="l1", kind="loreft", rank=4, lr=1e-2),
        Candidate(layers=(0, 2), positions="f1+l1", kind="direft", rank=2, lr=1e-2),
        Candidate(layers=(1, 2, 3), positions="f3+l3", kind="noreft", rank=1, lr=1e-2),
    ]:
        rm = reftlab.get_reft_model(tiny_hooked, reftlab.ReftConfig(representations=cand.representations()))
        assert cand.params(tiny_hooked.d_model) == rm.num_intervention_parameters()
    # SmolLM2's d_model: one rank-4 LoReFT is 2*576*4 + 4 = 4,612
    assert Candidate(layers=(15,), positions="l1", kind="loreft", rank=4, lr=1e-2).params(576) == 4612


def test_grid_cap_and_sample():
    space = SearchSpace(layers=["1", "1;2"], positions=["l1"], kinds=["loreft"], ranks=[1, 4], lrs=[1e-2, 1e-3])
    grid = space.grid(n_layers=4, d_model=64)
    assert len(grid) == 8 and len({c.key for c in grid}) == 8
    capped = space.grid(n_layers=4, d_model=64, max_params=2 * 64 * 4 + 4)
    assert {c.key for c in capped} == {c.key for c in grid if c.params(64) <= 516} and len(capped) == 6
    with pytest.raises(ValueError, match="excludes every candidate"):
        space.grid(n_layers=4, d_model=64, max_params=10)
    assert sample(grid, 3, seed=0) == sample(grid, 3, seed=0) != sample(grid, 3, seed=1)
    assert sample(grid, 99, seed=0) == grid
    default = SearchSpace().grid(n_layers=30, d_model=576, max_params=23_040)
    assert all(c.params(576) <= 23_040 for c in default) and {c.layers for c in default} >= {(6,), (6, 12, 18, 24)}


def test_bad_spaces_and_settings_are_named():
    with pytest.raises(ValueError, match="space.kinds: unknown \\['lora'\\]"):
        SearchSpace(kinds=["lora"])
    with pytest.raises(ValueError, match="space.ranks=\\[0\\]"):
        SearchSpace(ranks=[0])
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['rank'\\] in space"):
        SearchSpace.from_mapping({"rank": [1]})
    with pytest.raises(ValueError, match="search.eta=1 must be an int >= 2"):
        SearchSettings(eta=1)
    with pytest.raises(ValueError, match="use a wall-clock time"):
        parse_budget("soon")
    assert SearchSettings.from_mapping({"space": {"ranks": [2]}, "budget": "10m"}).space.ranks == (2,)


def test_budgets_and_rungs():
    assert parse_budget("2h") == ("seconds", 7200.0) and parse_budget("1 step") == ("steps", 1.0)
    assert parse_budget(30) == ("seconds", 30.0) and parse_budget(None) is None
    assert SearchSettings(eta=2, min_steps=5).rung_steps(40) == [5, 10, 20, 40]
    assert SearchSettings(min_steps=50).rung_steps(40) == [40]
