"""reftlab.search on tiny models: the study's table and page, the honest test score, a diverging trial
pruned, resuming an interrupted study, two worker processes on one SQLite study, budgets, settings."""

import math
import time

import optuna
import pytest
import torch
from helpers import tiny_classifier

import reftlab
from reftlab.search import Candidate
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
    "lr": [2e-2, 5e-2],
}
TRAIN = TrainConfig(epochs=4, batch_size=4)  # 6 training examples: 2 steps per epoch, 8 in all


@pytest.fixture
def hooked(tok):
    return reftlab.load_model(reftlab.tiny_llama(seed=0), tok)


def run(hooked, **kw):
    args = dict(
        space=SPACE,
        metric="loss",
        training=TRAIN,
        candidates=4,
        eta=2,
        min_steps=2,
        held_out=0.4,
        progress=False,
        log=lambda m: None,
    )
    return reftlab.search(hooked, DATA, **{**args, **kw})


def study_of(out):
    return optuna.load_study(study_name="reftlab-search", storage=f"sqlite:///{out / 'study.db'}")


def test_the_winner_is_chosen_on_validation_and_scored_on_a_test_split_no_trial_saw(hooked, tmp_path):
    result = run(hooked, out=tmp_path)
    t = result.trials
    assert len(t) == 4 and set(t["state"]) <= {"complete", "pruned"} and (t["state"] == "complete").any()
    best = t.sort_values(["score", "params", "trial"]).query("state == 'complete'").iloc[0]
    assert result.best.key == best["key"] and result.score == best["score"]
    assert not result.higher_is_better and result.metric == "loss" and result.stopped is None
    expected = [len(row.layers.split(";")) * (2 * 64 * row.rank + row.rank) for row in t.itertuples()]
    assert t["params"].tolist() == expected
    assert all(t.loc[t["state"] == "pruned", "steps"] < 8) and all(t.loc[t["state"] == "complete", "steps"] == 8)
    # the log on disk is the table, and the page holds the figures and the table
    disk = read_trials(tmp_path / "trials.csv")
    assert [r["key"] for r in disk] == list(t["key"]) and [r["score"] for r in disk] == pytest.approx(t["score"])
    page = (tmp_path / "search.html").read_text()
    assert page.count("class='figure'") == 7 and result.best.key in page
    # the splits: 10 examples, 4 held out and halved; the test score is the winner retrained on fit +
    # validation (8 examples, 8 steps) and scored on the 2 test examples
    fit, held = reftlab.data.tasks.split_held_out(reftlab.data.tasks.read_examples(DATA), 0.4, 0)
    validation, test = reftlab.data.tasks.split_held_out(held, 0.5, 0)
    assert result.test_n == 2 and not {e["prompt"] for e in test} & {e["prompt"] for e in fit + validation}
    win = result.best
    torch.manual_seed(0)
    rm = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=win.representations()))
    rows = reftlab.data.tasks.encode_task_examples(
        hooked.tokenizer, fit + validation, "generation", positions=win.positions, num_interventions=len(win.layers)
    )
    reftlab.train(rm, rows, TRAIN.replace(max_steps=8, lr=win.lr, progress=False, log_every=0))
    assert reftlab.evaluate(rm, test, metric="loss").score == pytest.approx(result.test_score, rel=1e-5)


def test_a_diverging_trial_is_pruned_where_its_loss_stops_being_finite(hooked):
    def cand(lr):
        return Candidate(layers=(1,), positions="l1", kind="noreft", rank=1, lr=lr)

    space = {**SPACE, "kinds": ["noreft"], "lr": [1e-2, 1e20]}
    result = run(hooked, space=space, candidates=2, first=[cand(2e-2), cand(1e20)])
    good, bad = result.trials.to_dict("records")
    assert good["state"] == "complete" and good["steps"] == 8
    assert bad["state"] == "pruned" and bad["steps"] < 8 and bad["pruned"].startswith("diverged: the loss is nan")


def test_an_interrupted_study_resumes_without_repeating_finished_trials(hooked, tmp_path, monkeypatch):
    seen = []

    def stop_after_two(row):
        seen.append(row["trial"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(hooked, out=tmp_path, on_trial=stop_after_two)
    assert [r["trial"] for r in read_trials(tmp_path / "trials.csv")] == [0, 1]
    # now an interruption in the middle of the third trial's training: that trial fails, nothing half-written
    real = trial_module.train_task

    def interrupted(*a, **kw):
        kw["on_step"] = lambda step, loss: (_ for _ in ()).throw(KeyboardInterrupt())
        return real(*a, **kw)

    monkeypatch.setattr(trial_module, "train_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(hooked, out=tmp_path)
    monkeypatch.setattr(trial_module, "train_task", real)
    first = read_trials(tmp_path / "trials.csv")
    assert [r["trial"] for r in first] == [0, 1] and study_of(tmp_path).trials[2].state.name == "FAIL"
    later = []
    resumed = run(hooked, out=tmp_path, resume=True, on_trial=lambda row: later.append(row["trial"]))
    assert later == [3, 4]  # two more trials: the finished ones were not run again
    again = resumed.trials.to_dict("records")
    assert [r["trial"] for r in again] == [0, 1, 3, 4]
    assert [(r["key"], r["state"], r["score"]) for r in again[:2]] == [
        (r["key"], r["state"], r["score"]) for r in first
    ]
    with pytest.raises(ValueError, match="other settings \\(different: settings\\)"):
        run(hooked, out=tmp_path, eta=3)
    with pytest.raises(ValueError, match="no study 'other' in sqlite:///.*to resume"):
        run(hooked, out=tmp_path, study="other", resume=True)


def test_two_worker_processes_share_one_sqlite_study(hooked, tmp_path):
    def wait_for_the_other_process(row):  # however fast this one is, the other must join the study
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(
            t.user_attrs.get("worker") == 1 for t in study_of(tmp_path).trials
        ):
            time.sleep(0.1)

    result = run(hooked, out=tmp_path, workers=2, candidates=4, on_trial=wait_for_the_other_process)
    study = study_of(tmp_path)
    trained = [t for t in study.trials if t.user_attrs.get("trained")]
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}  # none failed, none left running
    assert 4 <= len(trained) <= 5  # both check the count before a trial: at most one more than asked
    assert len({t.number for t in trained}) == len(trained) == len(result.trials)
    assert {t.user_attrs["worker"] for t in trained} == {0, 1}


def test_budgets_are_kept(hooked, tmp_path):
    steps = run(hooked, budget="14 steps", out=tmp_path, candidates=20)
    used = sum(t.user_attrs["steps"] for t in study_of(tmp_path).trials)
    assert used <= 14 and "step budget" in steps.stopped
    with pytest.raises(RuntimeError, match="finished no trial: the time budget"):
        run(hooked, budget=1, started=time.monotonic() - 0.999)


def test_classification_search_resets_the_head_between_trials(tok):
    torch.manual_seed(0)
    hooked = reftlab.load_model(tiny_classifier(tok, n_layers=4), tok)
    data = [{"prompt": f"{w} is {'good' if i % 2 else 'bad'}", "label": i % 2} for i, w in enumerate(WORDS * 2)]
    space = {"layers": ["2"], "positions": ["l1"], "kinds": ["loreft"], "ranks": [1], "lr": [1e-2, 5e-2]}
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
    assert runs[0].test_score == runs[1].test_score
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
        held_out=0.4,
        progress=False,
        log=lambda m: None,
    )
    b = run(hooked, candidates=2)
    assert list(a.trials["key"]) == list(b.trials["key"]) and a.trials["score"].tolist() == b.trials["score"].tolist()


# --- warm starts: a second search on the same data starts from the first's trials -----------------


def test_a_second_search_starts_from_the_first_ones_trials_inside_its_space(hooked, tmp_path):
    run(hooked, out=tmp_path / "a", candidates=6, pruner="none")
    earlier = {t.number: t for t in study_of(tmp_path / "a").trials}
    narrower = {**SPACE, "layers": ["1"]}  # the first's '1;3' trials cannot be drawn here
    fits = [t for t in earlier.values() if t.params["layers"] == "1"]
    assert 0 < len(fits) < len(earlier)
    said = []
    second = run(
        hooked,
        out=tmp_path / "b",
        space=narrower,
        candidates=2,
        pruner="none",
        warm_start=tmp_path / "a",
        log=said.append,
    )
    assert (
        f"{len(fits)} finished trials copied, {len(earlier) - len(fits)} outside this space or cap left out" in said[0]
    )
    rows = read_trials(tmp_path / "b" / "trials.csv")
    copied = [r for r in rows if r["warm_start"]]
    own = [r for r in rows if not r["warm_start"]]
    assert len(own) == 2  # the copied trials do not count towards candidates
    assert sorted(r["key"] for r in copied) == sorted(t.user_attrs["key"] for t in fits)
    for r in copied:  # each keeps its score and names the trial it came from
        source = earlier[int(r["warm_start"].rsplit("#", 1)[1])]
        assert r["key"] == source.user_attrs["key"] and r["score"] == source.value
    # the copies were in the study before its first own trial (the sampler drew knowing them),
    # and the winner is the best of both (same data, split and seed: the scores compare)
    study = study_of(tmp_path / "b")
    assert [t.number for t in study.trials if "warm_start" in t.user_attrs] == list(range(len(fits)))
    assert second.score == min(r["score"] for r in rows if r["state"] == "complete")


def test_a_warm_start_needs_the_same_data_and_a_real_source(hooked, tmp_path):
    run(hooked, out=tmp_path / "a", candidates=2, pruner="none")
    with pytest.raises(ValueError, match=r"it scored other trials \(different: data\); a warm start needs the same"):
        reftlab.search(
            hooked,
            DATA[::-1],
            space=SPACE,
            metric="loss",
            training=TRAIN,
            candidates=1,
            held_out=0.4,
            progress=False,
            log=lambda m: None,
            out=tmp_path / "b",
            warm_start=tmp_path / "a",
        )
    with pytest.raises(ValueError, match="no study.db there; give an earlier search's output folder"):
        run(hooked, out=tmp_path / "c", warm_start=tmp_path / "nothing")
    with pytest.raises(ValueError, match="no study 'other' in sqlite:///.*; name it with --warm-study"):
        run(hooked, out=tmp_path / "d", warm_start=tmp_path / "a", warm_study="other")
