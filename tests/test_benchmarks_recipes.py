"""benchmarks/recipes.py on tiny models: the table's numbers come from real runs of both methods."""

import importlib.util
import json
import re
import subprocess

import pytest
import yaml
from helpers import REPO

import reftlab

WORDS = ["cat", "dog", "sun", "sky", "red", "big", "hot", "ice", "car", "bus", "box", "pen"]


def load_script():
    spec = importlib.util.spec_from_file_location("bench_recipes", REPO / "benchmarks" / "recipes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reft_and_lora_rows_for_generation_and_classification(tmp_path, capsys):
    model_dir = tmp_path / "tiny"
    reftlab.tiny_llama(seed=0).save_pretrained(model_dir)
    reftlab.tiny_tokenizer().save_pretrained(model_dir)
    gen = [{"prompt": f"say {w}", "response": w} for w in WORDS]
    cls = [
        {"prompt": f"{w} is {'good' if i % 2 else 'bad'}", "label": ["bad", "good"][i % 2]} for i, w in enumerate(WORDS)
    ]
    for name, rows in (("gen", gen), ("cls", cls)):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:8]))
        (tmp_path / f"{name}_test.jsonl").write_text("\n".join(json.dumps(r) for r in rows[8:]))
    common = {
        "model": str(model_dir),
        "interventions": [{"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 1}],
        "training": {"epochs": 2, "batch_size": 4},
        "search": {
            "space": {"layers": ["1", "2"], "positions": ["l1"], "kinds": ["loreft"], "ranks": [1], "lr": [1e-2, 1e-2]},
            "candidates": 2,
            "min_steps": 1,
        },
    }
    (tmp_path / "gen.yaml").write_text(
        yaml.safe_dump(
            {
                **common,
                "data": "gen.jsonl",
                "evaluation": {"data": "gen_test.jsonl", "metric": "loss"},
                "output_dir": str(tmp_path / "g"),
            }
        )
    )
    (tmp_path / "cls.yaml").write_text(
        yaml.safe_dump(
            {
                **common,
                "task": "classification",
                "data": {"path": "cls.jsonl", "labels": ["bad", "good"]},
                "evaluation": {"data": "cls_test.jsonl"},
                "output_dir": str(tmp_path / "c"),
            }
        )
    )
    bench = load_script()
    out = tmp_path / "out"
    rows = bench.main(
        [
            "--recipes",
            str(tmp_path / "gen.yaml"),
            str(tmp_path / "cls.yaml"),
            "--out",
            str(out),
            "--lora-lrs",
            "1e-3",
            "1e-2",
        ]
    )
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-2:] == [json.dumps(r) for r in rows]
    assert printed[-4].startswith("| gen | loss (n=4) |") and printed[-3].startswith("| cls | accuracy (n=4) | - |")
    g, c = rows
    assert g["reft"]["params"] == 2 * 64 + 1  # one rank-1 LoReFT on d_model 64
    # LoRA r=4 on q_proj (64 -> 64) and v_proj (64 -> 32) of 4 layers; plus the 2 x 64 head for classification
    assert (
        g["lora"]["params"] == 4 * (4 * (64 + 64) + 4 * (64 + 32)) and c["lora"]["params"] == g["lora"]["params"] + 128
    )
    assert set(g["lora"]["val_scores"]) == {"0.001", "0.01"} and g["lora"]["lr"] in (1e-3, 1e-2)
    # the LoRA score is the tuned lr's, retrained on all the data: the cached JSON says so
    assert json.loads((out / "gen" / "lora_test.json").read_text())["score"] == g["lora"]["score"]
    assert 0 <= c["reft"]["score"] <= 1 and c["base"] is None and g["base"] > 0  # the base model scored
    again = bench.main(["--recipes", str(tmp_path / "gen.yaml"), "--out", str(out), "--lora-lrs", "1e-3", "1e-2"])
    assert again[0]["reft"] == g["reft"] and again[0]["lora"] == g["lora"]  # cached: nothing retrained


def test_old_search_beside_the_new_one(tmp_path, capsys):
    """--old: the hand-written search of OLD_COMMIT (from git history) runs at the same time; both winners scored."""
    bench = load_script()
    has = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{bench.OLD_COMMIT}^{{commit}}"], capture_output=True
    )
    if has.returncode != 0:
        pytest.skip(f"commit {bench.OLD_COMMIT[:12]} is not in this clone's history (a shallow clone)")
    model_dir = tmp_path / "tiny"
    reftlab.tiny_llama(seed=0).save_pretrained(model_dir)
    reftlab.tiny_tokenizer().save_pretrained(model_dir)
    rows = [{"prompt": f"say {w}", "response": w} for w in WORDS]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gen.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:8]))
    (tmp_path / "data" / "gen_test.jsonl").write_text("\n".join(json.dumps(r) for r in rows[8:]))
    recipe = {
        "model": str(model_dir),
        "data": {"path": "gen.jsonl"},  # relative to the recipe: the old arm's copy must resolve it
        "evaluation": {"data": "gen_test.jsonl", "metric": "loss"},
        "interventions": [{"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 1}],
        "training": {"epochs": 2, "batch_size": 4},
        "search": {"candidates": 3, "min_steps": 1, "max_params": 200},
    }
    (tmp_path / "data" / "gen.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    argv = [
        "--recipes",
        str(tmp_path / "data" / "gen.yaml"),
        "--out",
        str(out),
        "--lora-lrs",
        "1e-2",
        "--old",
        "--seeds",
        "2",
    ]
    (row,) = bench.main(argv)
    printed = capsys.readouterr().out.strip().splitlines()
    assert "old search (halving)" in printed[-4] and printed[-1] == json.dumps(row)
    old, new = row["old"], row["reft"]
    assert row["threads"] == 1 and old["trials"] >= 1 and new["trials"] >= 1
    assert old["params"] <= 200 and new["params"] <= 200  # both searches kept the cap
    # the old arm ran the old code: its log has the halving's rung lines, the new one Optuna's trial lines
    assert "[rung 0" in (out / "gen" / "old" / "search.log").read_text()
    assert re.search(r"^\[trial \d+\] ", (out / "gen" / "search" / "search.log").read_text(), re.M)
    assert (out / "_old" / bench.OLD_COMMIT[:12] / "reftlab" / "search" / "halving.py").is_file()
    for arm in ("old", "search"):  # each winner retrained on all the data, twice (seeds 0, 1), scored on the test set
        runs = [json.loads((out / "gen" / f"{arm}_test{tail}.json").read_text()) for tail in ("", "_seed1")]
        assert [r["n"] for r in runs] == [4, 4] and runs[0]["score"] != runs[1]["score"]  # loss: seeds differ
        assert (old if arm == "old" else new)["scores"] == [r["score"] for r in runs]
        assert (old if arm == "old" else new)["score"] == pytest.approx(sum(r["score"] for r in runs) / 2)
    assert len(row["lora"]["scores"]) == 2 and row["lora"]["score"] == pytest.approx(sum(row["lora"]["scores"]) / 2)


def load_tasks():
    spec = importlib.util.spec_from_file_location("bench_tasks", REPO / "benchmarks" / "tasks" / "make.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shipped_tasks_are_what_the_script_writes_and_hold_no_test_example_in_training(tmp_path):
    tasks = load_tasks()
    written = tasks.main(tmp_path)
    assert len(written) == 2 * len(tasks.TASKS)
    for path in written:  # the committed files are this script's output, byte for byte
        assert path.read_bytes() == (REPO / "benchmarks" / "tasks" / path.name).read_bytes(), path.name
    assert [tasks.words(n) for n in (7, 13, 40, 21, 100, 110, 347, 999)] == [
        "seven",
        "thirteen",
        "forty",
        "twenty-one",
        "one hundred",
        "one hundred ten",
        "three hundred forty-seven",
        "nine hundred ninety-nine",
    ]
    for name in tasks.TASKS:
        recipe = reftlab.recipe.Recipe.from_file(REPO / "benchmarks" / "tasks" / f"{name}.yaml")
        train = reftlab.recipe.recipe_examples(recipe)
        test = reftlab.recipe.recipe_examples(recipe, recipe.evaluation.data)
        seen = {(e["prompt"], tuple(e["choices"] or ())) for e in train}
        assert not any((e["prompt"], tuple(e["choices"] or ())) in seen for e in test), name
    for row in tasks.categories()[0]:  # exactly one choice belongs to the asked category
        cat = row["prompt"].removeprefix("Which of these is ").removesuffix("?")
        inside = [c for c in row["choices"] if c in tasks.CATEGORIES[cat].split()]
        assert inside == [row["choices"][row["answer"]]], row
    for row in tasks.compare()[1]:
        a, b = map(int, row["prompt"].removeprefix("Is ").removesuffix("?").split(" greater than "))
        assert row["label"] == ("yes" if a > b else "no")
    for row in tasks.arithmetic_1digit()[0]:
        a, op, b = row["prompt"].removeprefix("What is ").removesuffix("?").split()
        assert int(row["response"]) == (int(a) + int(b) if op == "plus" else int(a) - int(b))
