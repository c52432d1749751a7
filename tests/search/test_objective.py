"""The study's loop on a planted objective (no model): the best setting is found within the budget,
the parameter cap prunes before training, the pruner stops trailing trials at their rungs."""

import math
import re
import time
from types import SimpleNamespace

import optuna
import pytest

from reftlab.metrics import METRICS
from reftlab.search.objective import OVER_CAP, Budget, Worker, trained
from reftlab.search.space import Candidate, SearchSettings, SearchSpace, params_of
from reftlab.search.trial import OutOfTime
from reftlab.search.workers import make_pruner
from reftlab.train import TrainConfig

SPACE = SearchSpace(
    layers=["0", "1", "2", "1;2"],
    positions=["l1", "f1+l1"],
    kinds=["loreft", "direft"],
    ranks=[1, 2, 4],
    lr=(1e-3, 1e-1),
)
BEST = {"layers": (1, 2), "positions": "f1+l1", "kind": "direft", "rank": 2}


def planted(cand: Candidate) -> float:
    """A loss whose minimum is BEST at lr 1e-2; every dimension adds its own penalty."""
    return (
        (cand.layers != BEST["layers"]) * 1.0
        + (cand.positions != BEST["positions"]) * 0.5
        + (cand.kind != BEST["kind"]) * 0.7
        + abs(math.log2(cand.rank / BEST["rank"])) * 0.4
        + (math.log10(cand.lr) + 2) ** 2
    )


class PlantedRunner:
    """TrialRunner's surface: the validation loss falls with steps towards the planted value."""

    def __init__(self):
        self.hooked = SimpleNamespace(n_layers=4, d_model=64)
        self.train_examples = [{}] * 16  # batch 4: 4 steps an epoch
        self.metric = METRICS["loss"]
        self.ran = []

    def run(self, cand, steps, *, rungs=(), on_rung=None, deadline=None, step_limit=None):
        self.ran.append(cand.key)
        for step in sorted(rungs):
            if step_limit is not None and step > step_limit:
                raise OutOfTime("step", step_limit, steps)
            if step < steps and on_rung is not None:
                on_rung(step, planted(cand) + 4 / step, planted(cand) + 4 / step)
        score = planted(cand) + 4 / steps
        row = {"key": cand.key, "layers": ";".join(map(str, cand.layers)), "positions": cand.positions}
        row |= {"kind": cand.kind, "rank": cand.rank, "lr": cand.lr, "epochs": cand.epochs}
        row |= {"params": cand.params(64), "steps": steps, "seconds": 0.0, "train_seconds": 0.0}
        return row | {"train_loss": score, "score": score, "eval_loss": score}


def study_with(settings, runner=None, budget=None):
    sampler = optuna.samplers.TPESampler(seed=settings.seed)
    pruner = make_pruner(settings, max_steps=16)  # Hyperband assigns brackets from the study name: a fixed one
    study = optuna.create_study(study_name="planted", direction="minimize", sampler=sampler, pruner=pruner)
    runner = runner or PlantedRunner()
    worker = Worker(
        runner, settings, TrainConfig(epochs=4, batch_size=4), Budget.of(budget, time.time()), lambda m: None
    )
    return study, runner, worker


@pytest.mark.parametrize(("seed", "pruner"), [(0, "halving"), (1, "halving"), (0, "hyperband")])
def test_the_planted_best_setting_is_found_within_the_step_budget(seed, pruner):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = SearchSettings(space=SPACE, candidates=1000, pruner=pruner, eta=2, min_steps=2, seed=seed)
    study, _runner, worker = study_with(settings, budget="500 steps")  # 31 full trials; 48 settings x lr
    assert "step budget" in worker.work(study)
    assert sum(t.user_attrs["steps"] for t in study.trials) <= 500 and trained(study) > 31
    best = study.best_trial
    assert {k: best.params[k] for k in ("positions", "kind", "rank")} == {
        "positions": BEST["positions"],
        "kind": BEST["kind"],
        "rank": BEST["rank"],
    }
    assert best.params["layers"] == "1;2" and 5e-3 < best.user_attrs["lr"] < 2e-2
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned and all(t.user_attrs["steps"] < 16 for t in pruned)  # stopped at a rung, not trained out
    assert all(t.intermediate_values for t in pruned)


def test_the_study_stops_at_its_trial_count_or_where_the_budget_cuts_a_trial():
    settings = SearchSettings(space=SPACE, candidates=5, eta=2, min_steps=2, seed=0)
    study, runner, worker = study_with(settings)
    assert worker.work(study) is None and trained(study) == 5 == len(runner.ran)
    study, runner, worker = study_with(settings.replace(candidates=50), budget="21 steps")
    assert re.fullmatch(r"the step budget ran out at step \d+ of 16; that trial is dropped", worker.work(study))
    assert sum(t.user_attrs["steps"] for t in study.trials) == 21 and study.trials[-1].state.name == "FAIL"


def test_a_trial_over_the_cap_is_pruned_before_it_trains():
    settings = SearchSettings(space=SPACE, candidates=2, max_params=2 * 64 * 2 + 2, eta=2, min_steps=2)
    study, runner, worker = study_with(settings)
    over = Candidate(layers=(1, 2), positions="l1", kind="loreft", rank=2, lr=1e-2)  # 2 x 258 params
    under = Candidate(layers=(1,), positions="l1", kind="loreft", rank=1, lr=1e-2)
    for cand in (over, under):
        study.enqueue_trial(params_of(cand))
    worker.work(study)
    first = study.trials[0]
    assert first.state.name == "PRUNED" and first.user_attrs["pruned"] == OVER_CAP
    assert first.user_attrs["params"] == 516 and first.user_attrs["steps"] == 0 and not first.intermediate_values
    assert over.key not in runner.ran and runner.ran[0] == under.key  # never trained
    assert trained(study) == 2 and len(study.trials) == 3  # the capped trial does not count


def test_the_pruner_stops_a_trial_that_trails_at_its_first_rung():
    space = SearchSpace.from_mapping({**SPACE.to_json(), "lr": [1e-3, 1e3]})
    settings = SearchSettings(space=space, candidates=3, eta=2, min_steps=2)
    study, _runner, worker = study_with(settings)
    good = dict(layers=(1, 2), positions="f1+l1", kind="direft", rank=2)
    # the second beats the first; the third's loss explodes (its planted lr penalty is 25)
    for lr in (2e-2, 1e-2, 1e3):
        study.enqueue_trial(params_of(Candidate(**good, lr=lr)))
    worker.work(study)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"]
    diverging = study.trials[2]
    assert diverging.user_attrs["pruned"] == "by the pruner at step 2" and list(diverging.intermediate_values) == [2]


def test_a_space_that_the_cap_rules_out_is_refused_before_any_trial():
    with pytest.raises(ValueError, match="max_params=10 excludes every candidate"):
        SPACE.structures(4, 64, max_params=10)
