"""benchmarks/recipes.py on tiny models: the table's numbers come from real runs of both methods."""

import importlib.util
import json

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
