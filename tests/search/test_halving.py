"""reftlab.search on tiny models: the halving schedule, ranking, resume after an interruption, budgets."""

import math
import time

import pytest
import torch
from helpers import tiny_classifier

import reftlab
from reftlab.search import trial as trial_module
from reftlab.search.log import read_trials
from reftlab.train import TrainConfig

WORDS = ["cat", "dog", "sun", "sky", "red", "big", "hot", "ice", "car", "bus"]
DATA = [{"prompt": f"say {w}", "response": w} for w in WORDS]
SPACE = {
    "layers": ["1", "1;3"],
    "positions": ["l1", "f1+l1"],
    "kinds": ["loreft"],
    "ranks": [1, 2],
    "lrs": [2e-2, 5e-2],
}
TRAIN = TrainConfig(epochs=4, batch_size=4)  # 8 training examples: 2 steps per epoch, 8 in all


@pytest.fixture
def hooked(tok):
    return reftlab.load_model(reftlab.tiny_llama(seed=0), tok)


def run(hooked, **kw):
    args = dict(
        space=SPACE, metric="loss", training=TRAIN, candidates=4, eta=2, min_steps=2, progress=False, log=lambda m: None
    )
    return reftlab.search(hooked, DATA, **{**args, **kw})


def test_halving_keeps_the_best_half_and_picks_the_best_of_the_last_rung(hooked, tmp_path):
    result = run(hooked, out=tmp_path)
    t = result.trials
    assert list(t.groupby("rung")["steps"].first()) == [2, 4, 8] and list(t.groupby("rung").size()) == [4, 2, 1]
    for r in (1, 2):
        prev = t[t["rung"] == r - 1].sort_values(["score", "params", "trial"])
        assert set(t[t["rung"] == r]["key"]) == set(prev["key"][: len(t[t["rung"] == r])])
    assert result.best.key == t[t["rung"] == 2]["key"].item() and result.score == t["score"].iloc[-1]
    assert not result.higher_is_better and result.metric == "loss" and result.stopped is None
    expected = [len(row.layers.split(";")) * (2 * 64 * row.rank + row.rank) for row in t.itertuples()]
    assert t["params"].tolist() == expected
    # the log on disk is the table, and the page holds the figures and the table
    import pandas as pd

    disk = pd.read_csv(tmp_path / "trials.csv")
    assert list(disk["key"]) == list(t["key"]) and disk["score"].tolist() == pytest.approx(t["score"].tolist())
    page = (tmp_path / "search.html").read_text()
    assert page.count("class='figure'") == 7 and result.best.key in page
    # a trial's score is what evaluate() says of that candidate trained alone for that many steps
    best = result.best
    torch.manual_seed(0)
    rm = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=best.representations()))
    train, held = reftlab.data.tasks.split_held_out(reftlab.data.tasks.read_examples(DATA), 0.2, 0)
    rows = reftlab.data.tasks.encode_task_examples(
        hooked.tokenizer, train, "generation", positions=best.positions, num_interventions=len(best.layers)
    )
    reftlab.train(rm, rows, TRAIN.replace(max_steps=8, lr=best.lr, progress=False, log_every=0))
    assert reftlab.evaluate(rm, held, metric="loss").score == pytest.approx(result.score, rel=1e-5)


def test_an_interrupted_search_resumes_from_its_trial_log(hooked, tmp_path, monkeypatch):
    whole = run(hooked).trials
    seen = []

    def stop_after_two(row):
        seen.append(row["key"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(hooked, out=tmp_path, on_trial=stop_after_two)
    assert len(read_trials(tmp_path / "trials.csv")) == 2
    # now an interruption in the middle of the third trial's training: nothing half-written
    real = trial_module.train_task

    def interrupted(*a, **kw):
        kw["on_step"] = lambda step, loss: (_ for _ in ()).throw(KeyboardInterrupt())
        return real(*a, **kw)

    monkeypatch.setattr(trial_module, "train_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(hooked, out=tmp_path)
    monkeypatch.setattr(trial_module, "train_task", real)
    assert len(read_trials(tmp_path / "trials.csv")) == 2
    later = []
    resumed = run(hooked, out=tmp_path, on_trial=lambda row: later.append(row["key"]))
    assert later == list(whole["key"][2:])  # the two finished trials were not run again
    assert list(resumed.trials["key"]) == list(whole["key"])
    assert resumed.trials["score"].tolist() == pytest.approx(whole["score"].tolist(), rel=1e-5)
    with pytest.raises(ValueError, match="other settings \\(different: settings\\)"):
        run(hooked, out=tmp_path, candidates=3)


def test_budgets_are_kept(hooked, tmp_path):
    steps = run(hooked, budget="14 steps", out=tmp_path)
    assert steps.trials["steps"].sum() <= 14 and "step budget" in steps.stopped
    assert list(steps.trials["steps"]) == [2, 2, 2, 2, 4]  # the next 4-step trial would make 16
    later = []
    more = run(hooked, budget="30 steps", out=tmp_path, on_trial=lambda row: later.append(row["steps"]))
    assert later == [4, 8] and more.stopped is None  # a larger budget continues the stopped search
    with pytest.raises(RuntimeError, match="finished no trial: the time budget"):
        run(hooked, budget=1, started=time.monotonic() - 0.999)
    # A budget that fits at least one trial even on a loaded machine (a 3 s budget did not, at load 6 on
    # 2 cores); the deadline itself is tested above with a clock that starts almost spent.
    t0 = time.monotonic()
    timed = run(hooked, budget=30, started=t0)
    assert time.monotonic() - t0 < 30 + 30  # at most one step and one evaluation past the deadline
    assert len(timed.trials) >= 1 and (timed.stopped is None or "time budget" in timed.stopped)


def test_classification_search_resets_the_head_between_trials(tok):
    torch.manual_seed(0)
    hooked = reftlab.load_model(tiny_classifier(tok, n_layers=4), tok)
    data = [{"prompt": f"{w} is {'good' if i % 2 else 'bad'}", "label": i % 2} for i, w in enumerate(WORDS * 2)]
    space = {"layers": ["2"], "positions": ["l1"], "kinds": ["loreft"], "ranks": [1], "lrs": [1e-2, 5e-2]}
    head = hooked.hf_model.score.weight.detach().clone()
    runs = [
        reftlab.search(
            hooked,
            data,
            task="classification",
            labels=["bad", "good"],
            space=space,
            metric="accuracy",
            training=TrainConfig(epochs=2, batch_size=8),
            candidates=2,
            min_steps=99,
            progress=False,
            log=lambda m: None,
        )
        for _ in range(2)
    ]
    # the second search starts from the same head: each trial starts from the untrained head
    assert runs[0].trials["score"].tolist() == runs[1].trials["score"].tolist()
    assert runs[0].trials["train_loss"].tolist() == pytest.approx(runs[1].trials["train_loss"].tolist())
    assert torch.equal(hooked.hf_model.score.weight, head) and not hooked.hf_model.score.weight.requires_grad
    assert runs[0].params == 2 * 64 + 1 + 2 * 64  # the rank-1 LoReFT plus the 2 x 64 head
    assert not math.isnan(runs[0].trials["train_loss"][0])


def test_search_with_takes_the_settings_objects(hooked):
    from reftlab.evaluate import EvalSettings
    from reftlab.search import SearchSettings, SearchSpace, search_with

    settings = SearchSettings(space=SearchSpace.from_mapping(SPACE), candidates=2, eta=2, min_steps=2)
    with pytest.raises(ValueError, match="task"):
        search_with(hooked, DATA, None, settings, EvalSettings(metric="loss"), training=TRAIN)
    a = search_with(
        hooked,
        DATA,
        None,
        settings,
        EvalSettings(task="generation", metric="loss", chat_template=False),
        training=TRAIN,
        progress=False,
        log=lambda m: None,
    )
    b = run(hooked, candidates=2)
    assert list(a.trials["key"]) == list(b.trials["key"]) and a.trials["score"].tolist() == b.trials["score"].tolist()
