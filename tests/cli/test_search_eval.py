"""``reftlab search`` and ``reftlab eval`` on a tiny model: best.yaml retrains, a SIGINT'd search resumes,
``--workers`` and ``--storage``."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from helpers import REPO

import reftlab
from reftlab.cli import main
from reftlab.search.log import read_trials

WORDS = ["cat", "dog", "sun", "sky", "red", "big", "hot", "ice", "car", "bus"]


@pytest.fixture
def tiny_recipe(tmp_path):
    model_dir = tmp_path / "tiny"
    reftlab.tiny_llama(seed=0).save_pretrained(model_dir)
    reftlab.tiny_tokenizer().save_pretrained(model_dir)
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps({"prompt": f"say {w}", "response": w}) for w in WORDS))
    (tmp_path / "test.jsonl").write_text(
        "\n".join(json.dumps({"prompt": f"say {w}!", "response": w}) for w in WORDS[:4])
    )
    recipe = {
        "model": str(model_dir),
        "data": {"path": "train.jsonl"},
        "evaluation": {"data": "test.jsonl", "metric": "loss"},
        "interventions": [{"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 1}],
        "training": {"epochs": 4, "batch_size": 4, "lr": 1e-2},
        "search": {
            "space": {
                "layers": ["1", "2;3"],
                "positions": ["l1", "f1+l1"],
                "kinds": ["loreft"],
                "ranks": [1, 2],
                "lr": [2e-2, 5e-2],
            },
            "candidates": 6,
            "eta": 2,
            "min_steps": 1,
        },
        "output_dir": str(tmp_path / "plain"),
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def test_search_writes_trials_page_and_a_best_recipe_that_trains(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["search", str(tiny_recipe), "-o", str(out), "--no-progress", "--max-params", "400"]) == 0
    summary = last_json(capsys.readouterr().out)
    trials = read_trials(out / "trials.csv")
    assert summary["trials"] == len(trials) == 6 and summary["metric"] == "loss" and summary["test_n"] == 1
    assert summary["storage"] == f"sqlite:///{(out / 'study.db').resolve()}" and summary["study"] == "reftlab-search"
    assert all(t["params"] <= 400 for t in trials)  # the cap: no 2-layer rank-2 candidate (516 params)
    assert (out / "search.html").stat().st_size > 1_000_000  # plotly.js inlined: it opens offline
    best = yaml.safe_load((out / "best.yaml").read_text())
    (winner,) = [t for t in trials if t["key"] == summary["best"]]
    assert winner["state"] == "complete" and best["training"]["lr"] == winner["lr"]
    assert best["training"]["epochs"] == 4 and "search" not in best  # the full schedule, on all the data
    assert [r["positions"] for r in best["interventions"]] == [winner["positions"]] * len(best["interventions"])
    assert best["output_dir"] == str((out / "best").resolve())
    # a second search with a lower cap starts from the first's trials under it
    second = ["search", str(tiny_recipe), "-o", str(tmp_path / "again"), "--no-progress", "--max-params", "200"]
    assert main([*second, "--warm-start", str(out)]) == 0
    again = read_trials(tmp_path / "again" / "trials.csv")
    copied = [t for t in again if t["warm_start"]]
    assert sorted(t["key"] for t in copied) == sorted(t["key"] for t in trials if t["params"] <= 200)
    summary = last_json(capsys.readouterr().out)
    assert summary["trials"] == len(again) - len(copied) == 6 and summary["copied"] == len(copied)
    # the best recipe retrains and reports its held-out score on the recipe's test set
    assert main(["train", str(out / "best.yaml"), "--no-progress"]) == 0
    run = json.loads((out / "best" / "run.json").read_text())
    assert run["evaluation"]["metric"] == "loss" and run["evaluation"]["n"] == 4
    assert len(run["losses"]) == 4 * 3  # 10 examples, batch 4: 3 steps per epoch, all data used
    # reftlab eval on that checkpoint agrees with the score the training run reported
    table = tmp_path / "table.csv"  # no --model: the base the checkpoint records (the tiny folder)
    args = ["eval", str(out / "best"), "--data", str(tmp_path / "test.jsonl"), "--metric", "loss"]
    assert main([*args, "-o", str(table), "--compare", "base"]) == 0
    ev = last_json(capsys.readouterr().out)
    assert (
        ev["metric"] == "loss" and ev["n"] == 4 and ev["score"] == pytest.approx(run["evaluation"]["score"], rel=1e-4)
    )
    assert ev["trainable_params"] == winner["params"] and "base" in ev["compare"]
    import pandas as pd

    assert list(pd.read_csv(table).columns) == [
        "prompt",
        "reference",
        "prediction",
        "score",
        "base_prediction",
        "base_score",
    ]
    # against another checkpoint on the same data: the recipe's own settings, trained as written
    assert main(["train", str(tiny_recipe), "--no-progress"]) == 0
    assert main([*args, "--compare", str(tmp_path / "plain")]) == 0
    other = last_json(capsys.readouterr().out)
    plain = json.loads((tmp_path / "plain" / "run.json").read_text())["evaluation"]
    assert other["score"] == ev["score"] and other["compare"] == {"plain": pytest.approx(plain["score"], rel=1e-4)}


def test_cli_errors_are_one_line(tiny_recipe, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope"), "--data", str(tmp_path / "test.jsonl")]) == 2
    assert "no checkpoint folder" in capsys.readouterr().err
    assert main(["search", str(tiny_recipe), "-o", str(tmp_path / "o"), "--budget", "soon"]) == 2
    assert "use a wall-clock time" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["search", str(tiny_recipe), "-o", str(tmp_path / "o"), "--storage", "foo://x"]) == 2
    assert "unknown database 'foo'; use sqlite:///PATH/study.db" in capsys.readouterr().err
    assert main(["search", str(tiny_recipe), "-o", str(tmp_path / "o"), "--resume", "--no-progress"]) == 2
    assert "no study 'reftlab-search' in sqlite:///" in capsys.readouterr().err
    assert main(["search", str(tiny_recipe), "-o", str(tmp_path / "w"), "--warm-start", str(tmp_path / "none")]) == 2
    assert "warm start " in capsys.readouterr().err


def test_an_interrupted_search_resumes_where_it_stopped(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # Each logged trial is followed by a pause, so the interrupt lands mid-search however loaded
    # the machine is (tiny trials otherwise finish all 6 before this process polls again).
    slow = (
        "import importlib, signal, sys, time\n"
        # SIGINT as a terminal gives it, whatever the runner left ignored or blocked (children inherit both)
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})\n"
        "h = importlib.import_module('reftlab.search.study')  # reftlab.search is also a function\n"
        "write = h.write_trials\n"
        "h.write_trials = lambda out, rows: (write(out, rows), time.sleep(0.5))[0]\n"
        "from reftlab.cli import main\n"
        "raise SystemExit(main(sys.argv[1:]))\n"
    )
    cmd = [sys.executable, "-c", slow, "search", str(tiny_recipe), "-o", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "trials.csv").is_file() and len(read_trials(out / "trials.csv")) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
    before = [t["trial"] for t in read_trials(out / "trials.csv")]
    assert 2 <= len(before) < 6 and not (out / "best.yaml").exists()
    # resumed by two processes: the second loads the recipe's model itself
    assert main(["search", str(tiny_recipe), "-o", str(out), "--no-progress", "--resume", "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"resuming {len(before)} finished trials" in printed and last_json(printed)["trials"] in (6, 7)
    after = [t["trial"] for t in read_trials(out / "trials.csv")]
    assert after[: len(before)] == before and len(set(after)) == len(after)  # none run again
