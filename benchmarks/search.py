"""The search strategies at equal step budgets, on a planted objective whose best setting is known.

reftlab's search was hand-written successive halving: ``candidates`` settings drawn at random
from the grid, the best ``1/eta`` of each rung trained ``eta`` times longer. It is now an Optuna
study; the old schedule is, in Optuna's terms, a random sampler with the successive-halving
pruner. This script runs three strategies through the search's own loop
(``reftlab.search.objective.Worker``: the cap, the budget, the rungs, the pruner):

- ``random + halving``: the old search's draws and schedule;
- ``tpe + halving``: the default now (a seeded TPE sampler learns from earlier trials);
- ``tpe + hyperband``: ``pruner: hyperband``.

The objective is planted, not trained: a trial's validation loss at step ``s`` is
``planted(setting) + 1.5 / sqrt(s)`` plus seeded noise (sd 0.02), where ``planted`` adds an effect
per dimension (layer set, positions, kind, rank, a quadratic in log10 lr around 1.5e-2) and
penalises rank x layers above 16. The space is the default space for a 30-layer, d_model-576
model (SmolLM2-135M) under the recipes' cap (23,040 parameters); a trial's schedule is 48 steps
(rungs at 4, 12, 36). Reported per strategy, over ``--seeds`` seeds: trials trained, trials
completed, and the regret (the chosen setting's planted loss minus the best achievable one).
Training a real model per trial would measure the same loop at 10^4 times the cost; the
planted objective isolates what the strategy decides. Last line JSON.

    python benchmarks/search.py [--budget "600 steps"] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from typing import Any

import optuna

from reftlab.metrics import METRICS
from reftlab.search.objective import Budget, Worker, trained
from reftlab.search.space import Candidate, SearchSettings, SearchSpace
from reftlab.search.trial import OutOfTime
from reftlab.search.workers import make_pruner
from reftlab.train import TrainConfig

N_LAYERS, D_MODEL, CAP = 30, 576, 23_040
STRATEGIES = {"random + halving": ("random", "halving"), "tpe + halving": ("tpe", "halving")}
STRATEGIES |= {"tpe + hyperband": ("tpe", "hyperband")}
LAYERS = {"6": 0.6, "12": 0.3, "18": 0.4, "6;18": 0.2, "6;12;18;24": 0.0, "3;6;9;12;15;18;21;24": 0.1}
POSITIONS = {"l1": 0.3, "f1+l1": 0.1, "f3+l3": 0.0, "f5+l5": 0.15}
KINDS = {"loreft": 0.0, "direft": 0.05, "noreft": 0.3, "nodireft": 0.25, "lobireft": 0.2, "consreft": 0.4}
TRAINING = TrainConfig(epochs=3, batch_size=16)  # 256 examples: 16 steps an epoch, 48 in all


def planted(c: Candidate) -> float:
    """The setting's loss after full training (see the module docstring)."""
    return (
        LAYERS[";".join(map(str, c.layers))]
        + POSITIONS[c.positions]
        + KINDS[c.kind]
        + 0.1 * abs(math.log2(c.rank / 4))
        + 0.8 * (math.log10(c.lr) - math.log10(1.5e-2)) ** 2
        + 0.2 * (c.rank * len(c.layers) > 16)
    )


class PlantedRunner:
    """What a worker uses of ``TrialRunner``, with the planted learning curve instead of training."""

    def __init__(self, seed: int) -> None:
        self.hooked = type("Model", (), {"n_layers": N_LAYERS, "d_model": D_MODEL})()
        self.train_examples = [{}] * 256
        self.metric = METRICS["loss"]
        self.seed = seed

    def loss(self, cand: Candidate, step: int) -> float:
        noise = random.Random(f"{self.seed}|{cand.key}|{step}").gauss(0, 0.02)
        return planted(cand) + 1.5 / math.sqrt(step) + noise

    def run(self, cand: Candidate, steps: int, *, rungs: Any = (), on_rung: Any = None, **limits: Any) -> dict:
        step_limit = limits.get("step_limit")
        for step in sorted(r for r in rungs if r < steps):
            if step_limit is not None and step > step_limit:
                raise OutOfTime("step", step_limit, steps)
            if on_rung is not None:
                on_rung(step, self.loss(cand, step), self.loss(cand, step))
        if step_limit is not None and steps > step_limit:
            raise OutOfTime("step", step_limit, steps)
        score = self.loss(cand, steps)
        row = {"key": cand.key, "layers": ";".join(map(str, cand.layers)), "positions": cand.positions}
        row |= {"kind": cand.kind, "rank": cand.rank, "lr": cand.lr, "epochs": cand.epochs, "steps": steps}
        row |= {"params": cand.params(D_MODEL), "seconds": 0.0, "train_seconds": 0.0}
        return row | {"train_loss": score, "score": score, "eval_loss": score}


def best_possible(space: SearchSpace) -> float:
    """The lowest planted loss under the cap (every structure and position, at the best lr)."""
    return min(
        planted(Candidate(layers=ls, positions=p, kind=k, rank=r, lr=1.5e-2))
        for ls, k, r in space.structures(N_LAYERS, D_MODEL, CAP)
        for p in space.positions
    )


def one_search(sampler: str, pruner: str, budget: str, seed: int) -> dict[str, Any]:
    settings = SearchSettings(max_params=CAP, candidates=100_000, sampler=sampler, pruner=pruner, seed=seed)
    draw = optuna.samplers.RandomSampler(seed=seed) if sampler == "random" else optuna.samplers.TPESampler(seed=seed)
    pruner = make_pruner(settings, max_steps=48)  # Hyperband's brackets follow the study's name: a fixed one
    study = optuna.create_study(study_name=f"planted-{seed}", direction="minimize", sampler=draw, pruner=pruner)
    runner = PlantedRunner(seed)
    worker = Worker(runner, settings, TRAINING, Budget.of(budget, time.time()), lambda m: None)
    worker.work(study)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    chosen = min(done, key=lambda t: t.value).user_attrs["key"] if done else None
    regret = math.nan
    if chosen is not None:
        best = next(t for t in done if t.user_attrs["key"] == chosen)
        p = best.params
        cand = Candidate(
            layers=tuple(int(x) for x in p["layers"].split(";")),
            positions=p["positions"],
            kind=p["kind"],
            rank=p["rank"],
            lr=best.user_attrs["lr"],
        )
        regret = planted(cand) - best_possible(settings.space)
    steps = sum(t.user_attrs.get("steps", 0) for t in study.trials)
    return {"trained": trained(study), "complete": len(done), "regret": regret, "steps": steps}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", default="600 steps", help="each search's step budget, e.g. '300 steps'")
    ap.add_argument("--seeds", type=int, default=5, help="searches per strategy (seeds 0..N-1)")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for name, (sampler, pruner) in STRATEGIES.items():
        runs = [one_search(sampler, pruner, args.budget, seed) for seed in range(args.seeds)]
        regrets = [r["regret"] for r in runs]
        rows.append(
            {
                "strategy": name,
                "budget": args.budget,
                "seeds": args.seeds,
                "steps_max": max(r["steps"] for r in runs),
                "trained": statistics.mean(r["trained"] for r in runs),
                "complete": statistics.mean(r["complete"] for r in runs),
                "regret_median": statistics.median(regrets),
                "regret_max": max(regrets),
            }
        )
    print(f"| strategy | budget | trials trained | completed | regret (median) | regret (worst of {args.seeds}) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['strategy']} | {r['budget']} | {r['trained']:.1f} | {r['complete']:.1f} | "
            f"{r['regret_median']:.3f} | {r['regret_max']:.3f} |"
        )
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
