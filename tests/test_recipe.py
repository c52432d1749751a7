"""Task recipes: BIG-bench sources, multiple choice and classification runs, held-out evaluation."""

import json

import pytest
import torch
import yaml
from bigbench_helpers import cached_archive
from helpers import REPO
from safetensors.torch import load_file

import reftlab
from reftlab.models.classifier import load_classifier
from reftlab.recipe import Recipe, run_recipe

EXAMPLES = REPO / "examples"
SIQA = [
    {"input": f"{who} {did}. What will {who} do?", "target_scores": {"sleep": int(i % 2 == 0), "eat": int(i % 2 == 1)}}
    for i, (who, did) in enumerate(
        [("Al", "ran"), ("Bo", "sang"), ("Cy", "cooked"), ("Di", "swam"), ("Ed", "read"), ("Fa", "sat")]
    )
]


@pytest.fixture
def tiny_dir(tmp_path):
    model_dir = tmp_path / "tiny"
    reftlab.tiny_llama(seed=0).save_pretrained(model_dir)
    reftlab.tiny_tokenizer().save_pretrained(model_dir)
    return model_dir


def write_recipe(tmp_path, **sections):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(sections))
    return Recipe.from_file(path)


@pytest.mark.parametrize("name", ["arithmetic", "social_iqa", "classify", "emoji"])
def test_example_recipes_parse_round_trip_and_keep_test_data_apart(name):
    recipe = Recipe.from_file(EXAMPLES / f"{name}.yaml")
    again = Recipe.from_mapping(recipe.to_mapping())
    assert again == recipe
    if recipe.data.bigbench is not None:
        train, test = recipe.data.bigbench, recipe.evaluation.data.bigbench
        assert (train.task, train.subtasks, train.seed) == (test.task, test.subtasks, test.seed)
        assert train.stop is not None and test.start >= train.stop  # disjoint slices of one shuffle
        assert recipe.evaluation.data.chat_template == recipe.data.chat_template  # inherited from data


def test_recipe_errors_name_the_problem(tmp_path):
    base = {
        "interventions": [{"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 1}]
    }
    with pytest.raises(ValueError, match="exactly one source"):
        Recipe.from_mapping({**base, "data": {"path": "a.jsonl", "bigbench": {"task": "social_iqa"}}})
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['metrics'\\] in evaluation"):
        Recipe.from_mapping({**base, "data": "a.jsonl", "evaluation": {"metrics": "accuracy"}})
    with pytest.raises(ValueError, match="evaluation.metric='bleu' is unknown"):
        Recipe.from_mapping({**base, "data": "a.jsonl", "evaluation": {"metric": "bleu"}})
    with pytest.raises(ValueError, match="task='summarise' is not a task type"):
        Recipe.from_mapping({**base, "data": "a.jsonl", "task": "summarise"})
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['budgets'\\] in search"):
        Recipe.from_mapping({**base, "data": "a.jsonl", "search": {"budgets": "1m"}})
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['stopp'\\] in bigbench"):
        Recipe.from_mapping({**base, "data": {"bigbench": {"task": "social_iqa", "stopp": 3}}})


def test_multiple_choice_recipe_on_bigbench_data(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setenv("REFTLAB_CACHE", str(tmp_path / "cache"))
    cached_archive(tmp_path / "cache", {"social_iqa": {"examples": SIQA}})
    recipe = write_recipe(
        tmp_path,
        model=str(tiny_dir),
        task="multiple_choice",
        data={"bigbench": {"task": "social_iqa", "stop": 4}},
        evaluation={"data": {"bigbench": {"task": "social_iqa", "start": 4}}, "max_new_tokens": 3},
        interventions=[{"layer": 1, "component": "block_output", "positions": "f1+l1", "kind": "loreft", "rank": 1}],
        training={"epochs": 2, "batch_size": 2, "progress": False},
        output_dir=str(tmp_path / "out"),
    )
    result = run_recipe(recipe, log=lambda m: None)
    ev = result["evaluation"]
    assert ev["metric"] == "accuracy" and ev["n"] == 2 and 0 <= ev["score"] <= 1 and "base" in ev["compare"]
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "eval.csv")
    assert set(table["reference"]) <= {"sleep", "eat"} and list(table.columns)[:4] == [
        "prompt",
        "reference",
        "prediction",
        "score",
    ]
    assert json.loads((tmp_path / "out" / "run.json").read_text())["evaluation"] == ev
    # the prompts the model saw listed the choices
    examples = reftlab.recipe.recipe_examples(recipe)
    assert len(examples) == 4 and all(e["choices"] in (["sleep", "eat"],) for e in examples)


def test_classification_recipe_trains_the_head_and_reports_accuracy(tmp_path, tiny_dir, capsys):
    words = ["cat", "dog", "sun", "sky", "red", "big", "hot", "ice", "car", "bus"]
    rows = [
        {"prompt": f"{w} is {'good' if i % 2 else 'bad'}", "label": ["bad", "good"][i % 2]} for i, w in enumerate(words)
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:8]))
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows[8:]))
    recipe = write_recipe(
        tmp_path,
        model=str(tiny_dir),
        task="classification",
        data={"path": "train.jsonl", "labels": ["bad", "good"]},
        evaluation={"data": "test.jsonl"},
        interventions=[{"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 1}],
        training={"epochs": 2, "batch_size": 4, "lr": 1e-2, "progress": False},
        output_dir=str(tmp_path / "out"),
    )
    torch.manual_seed(0)
    head0 = load_classifier(str(tiny_dir), num_labels=2).hf_model.score.weight.clone()
    result = run_recipe(recipe, log=lambda m: None)
    ev = result["evaluation"]
    assert ev["metric"] == "accuracy" and ev["n"] == 2 and ev["trainable_params"] == 2 * 64 + 1 + 2 * 64
    assert len(result["losses"]) == 4
    table = (tmp_path / "out" / "eval.csv").read_text().splitlines()
    assert table[0] == "prompt,reference,prediction,score" and len(table) == 3
    # Without a model, the checkpoint rebuilds its classifier on the recorded folder; the head comes back trained.
    loaded = reftlab.ReftModel.load(tmp_path / "out")
    assert type(loaded.hooked.hf_model).__name__ == "LlamaForSequenceClassification"
    saved = load_file(str(tmp_path / "out" / "base_parameters.safetensors"))
    assert torch.equal(loaded.hooked.hf_model.score.weight, saved["score.weight"])
    again = reftlab.evaluate(loaded, tmp_path / "test.jsonl", task="classification", labels=["bad", "good"])
    assert again.summary()["score"] == ev["score"]
    # the trained head is in the checkpoint, and reftlab eval rebuilds the classifier from it
    assert saved["score.weight"].shape == head0.shape == (2, 64) and not torch.equal(saved["score.weight"], head0)
    from reftlab.cli import main

    args = ["eval", str(tmp_path / "out"), "--data", str(tmp_path / "test.jsonl"), "--model", str(tiny_dir)]
    assert main(args[:4]) == 0  # the base the checkpoint records
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["score"] == ev["score"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {
        **{k: ev[k] for k in ("metric", "score", "n", "trainable_params")},
        "positions": {"layer_1_comp_block_output#0": "l1"},  # what the run edited (saved with the sites)
    }
    (tmp_path / "out" / "run.json").unlink()  # without the run record the class names must be given
    assert main(args) == 2 and "needs --labels" in capsys.readouterr().err
    assert main([*args, "--labels", "bad,good,ugly"]) == 2 and "names 3 classes" in capsys.readouterr().err
    assert main([*args, "--labels", "bad,good"]) == 0


def test_a_recipe_trains_on_a_quantized_base_and_only_rank_0_writes(tmp_path, tiny_dir, monkeypatch):
    pytest.importorskip("torchao")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}", "response": w}) + "\n" for w in ("a", "bb", "cc")))
    sections = dict(
        model=str(tiny_dir),
        quantization="torchao-int8",
        data=str(data),
        interventions=[{"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 1}],
        training={"epochs": 2, "batch_size": 3, "progress": False, "log_every": 0},
        output_dir=str(tmp_path / "out"),
    )
    run_recipe(write_recipe(tmp_path, **sections), log=lambda m: None)
    saved = json.loads((tmp_path / "out" / "reftlab_config.json").read_text())
    assert saved["base_model"]["quantization"] == "torchao Int8WeightOnlyConfig"

    monkeypatch.setenv("RANK", "1")  # another process of a torchrun launch: it trains, but neither logs nor writes
    said = []
    result = run_recipe(write_recipe(tmp_path, **{**sections, "output_dir": str(tmp_path / "rank1")}), log=said.append)
    assert len(result["losses"]) == 2 and said == [] and not (tmp_path / "rank1").exists()


def test_recipe_placement_errors_name_the_problem(tmp_path, tiny_dir):
    base = {
        "model": str(tiny_dir),
        "data": "a.jsonl",
        "interventions": [{"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 1}],
    }
    with pytest.raises(ValueError, match="device .* or device_map .* not both"):
        Recipe.from_mapping({**base, "device": "cpu", "device_map": "auto"})
    with pytest.raises(ValueError, match="quantization='fp8' must be one of nf4, fp4, int8, torchao-int8"):
        Recipe.from_mapping({**base, "quantization": "fp8"})
    with pytest.raises(ValueError, match="device='gpu0' is not a device"):
        Recipe.from_mapping({**base, "device": "gpu0"})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device; use device: cpu"):
            reftlab.recipe.load_base(Recipe.from_mapping({**base, "device": "cuda"}))
