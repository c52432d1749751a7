"""pyreft 0.1.0 and reftlab train pyreft's scripts along the same loss curve, step for step.

pyreft runs in its own venv (``make pyreft-venv``: ``.venv-pyreft``) through
``benchmarks/_pyreft_parity_arm.py`` on a tiny random Llama; reftlab runs the same script
(``import reftlab as pyreft``) from pyreft's initial parametrization, as
``benchmarks/pyreft_parity.py`` does on SmolLM2. float32 throughout.

- ``LoreftIntervention``'s default (``orthogonal="householder"``, pyreft's parametrization of R)
  stays within 1e-3 relative of pyreft's loss at every step; reftlab's native ``"qr"`` map,
  from the same R, W, b, leaves it (so the comparison can fail).
- pyreft's Alpaca script with ``pyreft_positions=True`` sees pyreft's token ids and positions
  and follows its curve; reftlab's own positions differ from pyreft's there (its ``l1``).
"""

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import transformers
from helpers import REPO

import reftlab
import reftlab as pyreft

PYREFT_VENV = Path(os.environ.get("PYREFT_VENV", REPO / ".venv-pyreft"))
PROMPTS = ["hi there:", "who are you?", "two plus two:", "say a word:", "a colour:", "the sky is"]
RESPONSES = [" hello", " a model", " four", " cat", " red", " blue"]
ALPACA = [
    {"instruction": "Rhyme with the input.", "input": w, "output": r}
    for w, r in [("cat", "hat"), ("sun", "fun"), ("tree", "bee"), ("cake", "lake")]
]


def bench():
    spec = importlib.util.spec_from_file_location("bench_pyreft_parity", REPO / "benchmarks" / "pyreft_parity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def pyreft_python():
    if not (PYREFT_VENV / ".complete").is_file():
        if os.environ.get("CI") or os.environ.get("REFTLAB_REQUIRE_PYREFT"):  # make test sets it
            pytest.fail(f"pyreft's venv is missing at {PYREFT_VENV}: `make test` builds it (make pyreft-venv)")
        pytest.skip(f"pyreft's venv is not built at {PYREFT_VENV} (make pyreft-venv)")
    return PYREFT_VENV / "bin" / "python"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    reftlab.tiny_llama(d_model=64, n_layers=4).save_pretrained(path)
    tok = reftlab.tiny_tokenizer()
    tok.unk_token = "<pad>"  # pyreft's Alpaca script pads with unk_token
    tok.save_pretrained(path)
    return path


def hooked_model(folder):
    tok = transformers.AutoTokenizer.from_pretrained(folder, padding_side="right")
    hooked = reftlab.load_model(transformers.AutoModelForCausalLM.from_pretrained(folder).eval(), tok)
    return hooked, tok


def run_arm(python, job, tmp_path):
    job = {**job, "init_dir": str(tmp_path / "init"), "threads": 1, "model_max_length": 512}
    proc = subprocess.run(
        [str(python), str(REPO / "benchmarks" / "_pyreft_parity_arm.py")],
        input=json.dumps(job) + "\n",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def train(mod, reft_model, data_module, tmp_path, steps, batch_size):
    trainer = mod.Recording(
        model=reft_model,
        tokenizer=data_module.pop("tokenizer"),
        args=mod.train_args(tmp_path / "run", 0, batch_size, 2e-2, steps),
        **data_module,
    )
    trainer.recorded = []
    trainer.train()
    return trainer.recorded


def representations(d_model, layers, orthogonal):
    return [
        {
            "layer": layer,
            "component": "block_output",
            "low_rank_dimension": 2,
            "intervention": pyreft.LoreftIntervention(embed_dim=d_model, low_rank_dimension=2, orthogonal=orthogonal),
        }
        for layer in layers
    ]


def gaps(ours, theirs):
    assert len(ours) == len(theirs)
    return [abs(a / b - 1) for a, b in zip(ours, theirs)]


def test_walkthrough_script_follows_pyreft_step_by_step(pyreft_python, folder, tmp_path):
    mod = bench()
    layers = [1, 3]
    job = dict(
        script="walkthrough",
        model=str(folder),
        layers=layers,
        rank=2,
        lr=2e-2,
        epochs=6,
        batch_size=6,
        seed=0,
        dtype="float32",
        intervention_dtype="float32",
        heldout=[],
        max_new_tokens=4,
        prompts=PROMPTS,
        responses=RESPONSES,
    )
    theirs = run_arm(pyreft_python, job, tmp_path)
    assert len(theirs["losses"]) == 6
    curves = {}
    for orthogonal in ("householder", "qr"):
        hooked, tok = hooked_model(folder)
        rm = pyreft.get_reft_model(hooked, pyreft.ReftConfig(representations=representations(64, layers, orthogonal)))
        mod.start_from(rm, tmp_path / "init")
        dm = pyreft.make_last_position_supervised_data_module(tok, hooked.model, PROMPTS, RESPONSES, len(layers))
        mod.check_data("tiny walkthrough", dm["train_dataset"], theirs, positions=True)
        curves[orthogonal] = train(mod, rm, {**dm, "tokenizer": tok}, tmp_path / orthogonal, {"num_train_epochs": 6}, 6)
    assert max(gaps(curves["householder"], theirs["losses"])) <= 1e-3, (curves["householder"], theirs["losses"])
    assert gaps(curves["qr"], theirs["losses"])[0] <= 1e-5  # same start
    assert max(gaps(curves["qr"], theirs["losses"])) > 1e-3  # reftlab's own map takes other steps


def test_alpaca_script_with_pyreft_positions_follows_pyreft(pyreft_python, folder, tmp_path):
    mod = bench()
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(ALPACA))
    job = dict(
        script="alpaca",
        model=str(folder),
        layers=[1, 3],
        rank=2,
        lr=2e-2,
        max_steps=4,
        batch_size=4,
        seed=0,
        dtype="float32",
        intervention_dtype="float32",
        heldout=[],
        max_new_tokens=4,
        data_path=str(data),
        position="f1+l1",
    )
    theirs = run_arm(pyreft_python, job, tmp_path)
    hooked, tok = hooked_model(folder)
    tok.model_max_length = 512
    tok.pad_token = tok.unk_token
    rm = pyreft.get_reft_model(
        hooked, pyreft.ReftConfig(representations=representations(64, [1, 3, 1, 3], "householder"))
    )
    mod.start_from(rm, tmp_path / "init")

    def dataset(pyreft_positions):
        return pyreft.ReftSupervisedDataset(
            "alpaca",
            str(data),
            tok,
            data_split="train",
            seed=0,
            input_field="input",
            instruction_field="instruction",
            output_field="output",
            num_interventions=4,
            position="f1+l1",
            share_weights=False,
            pyreft_positions=pyreft_positions,
        )

    own = dataset(False)
    mod.check_data("tiny alpaca", own, theirs, positions=False)  # same token ids
    with pytest.raises(AssertionError, match="positions differ"):  # reftlab's l1 is the last prompt token
        mod.check_data("tiny alpaca", own, theirs, positions=True)
    train_set = dataset(True)
    mod.check_data("tiny alpaca", train_set, theirs, positions=True)
    collator = transformers.DataCollatorForSeq2Seq(tokenizer=tok, model=hooked.model, label_pad_token_id=-100)
    dm = {
        "train_dataset": train_set,
        "data_collator": pyreft.ReftDataCollator(data_collator=collator),
        "tokenizer": tok,
    }
    ours = train(mod, rm, dm, tmp_path / "alpaca", {"max_steps": 4}, 4)
    assert max(gaps(ours, theirs["losses"])) <= 1e-3, (ours, theirs["losses"])
    assert torch.tensor(theirs["losses"][-1]) < theirs["losses"][0]
