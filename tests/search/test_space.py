"""The search space: parameter counts (checked against real ReftModels), the cap, what a trial draws,
budgets and rungs."""

import optuna
import pytest

import reftlab
from reftlab.search.space import Candidate, SearchSettings, SearchSpace, params_of, parse_budget, suggest


def test_candidate_params_are_the_reft_models(tiny_hooked):
    for cand in [
        Candidate(layers=(1,), positions="l1", kind="loreft", rank=4, lr=1e-2),
        Candidate(layers=(0, 2), positions="f1+l1", kind="direft", rank=2, lr=1e-2),
        Candidate(layers=(1, 2, 3), positions="f3+l3", kind="noreft", rank=1, lr=1e-2),
        Candidate(layers=(0, 1, 2, 3), positions="f5+l5", kind="consreft", rank=2, lr=1e-2, epochs=3),
    ]:
        rm = reftlab.get_reft_model(tiny_hooked, reftlab.ReftConfig(representations=cand.representations()))
        assert cand.params(tiny_hooked.d_model) == rm.num_intervention_parameters()
    # SmolLM2's d_model: one rank-4 LoReFT is 2*576*4 + 4 = 4,612
    assert Candidate(layers=(15,), positions="l1", kind="loreft", rank=4, lr=1e-2).params(576) == 4612


def test_structures_under_the_cap():
    space = SearchSpace(layers=["1", "1;2"], positions=["l1"], kinds=["loreft"], ranks=[1, 4])
    assert len(space.structures(n_layers=4, d_model=64)) == 4
    capped = space.structures(n_layers=4, d_model=64, max_params=2 * 64 * 4 + 4)
    assert capped == [((1,), "loreft", 1), ((1,), "loreft", 4), ((1, 2), "loreft", 1)]
    with pytest.raises(ValueError, match="excludes every candidate"):
        space.structures(n_layers=4, d_model=64, max_params=10)
    # the default space under the recipes' cap keeps many layers only at low rank
    default = SearchSpace().structures(n_layers=30, d_model=576, max_params=23_040)
    assert {k for _, k, _ in default} == set(SearchSpace().kinds) and len(SearchSpace().kinds) == 6
    eight = {r for ls, k, r in default if len(ls) == 8 and k == "loreft"}
    assert eight and max(eight) <= 2 and {ls for ls, _, _ in default} >= {(6,), (6, 12, 18, 24)}


def test_a_trial_draws_a_candidate_from_the_space_and_an_enqueued_one_comes_back():
    space = SearchSpace(layers=["1", "1;3"], positions=["l1", "f1+l1"], kinds=["loreft"], ranks=[1], epochs=[2, 3])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        cand = suggest(study.ask(), space, n_layers=4)
        assert cand.layers in {(1,), (1, 3)} and cand.epochs in {2, 3} and 3e-3 <= cand.lr <= 4e-2
        assert cand.lr == float(f"{cand.lr:.3g}") and cand.key.endswith(f"|e{cand.epochs}")
    planted = Candidate(layers=(1, 3), positions="f1+l1", kind="loreft", rank=1, lr=0.0123, epochs=3)
    study.enqueue_trial(params_of(planted))
    assert suggest(study.ask(), space, n_layers=4) == planted


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="space.ranks=\\[0\\]"):
        SearchSpace(ranks=[0])
    with pytest.raises(ValueError, match="space.epochs=\\[0\\]"):
        SearchSpace(epochs=[0])
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['rank'\\] in space"):
        SearchSpace.from_mapping({"rank": [1]})
    with pytest.raises(ValueError, match="search.eta=1 must be an int >= 2"):
        SearchSettings(eta=1)
    with pytest.raises(ValueError, match="search.pruner='median'; use one of halving, hyperband, none"):
        SearchSettings(pruner="median")
    with pytest.raises(ValueError, match="use a wall-clock time"):
        parse_budget("soon")
    assert SearchSettings.from_mapping({"space": {"ranks": [2]}, "budget": "10m"}).space.ranks == (2,)


def test_budgets_and_rungs():
    assert parse_budget("2h") == ("seconds", 7200.0) and parse_budget("1 step") == ("steps", 1.0)
    assert parse_budget(30) == ("seconds", 30.0) and parse_budget(None) is None
    assert SearchSettings(eta=2, min_steps=5).rung_steps(40) == [5, 10, 20, 40]
    assert SearchSettings(min_steps=50).rung_steps(40) == [40]
