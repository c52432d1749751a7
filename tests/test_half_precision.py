"""bfloat16 and float16 bases: parity with HF in the same dtype, training with float32 master
weights, generation, save/load and merge (tiny models on CPU)."""

import copy
import json

import pandas as pd
import pytest
import torch
import yaml
from helpers import no_hooks_anywhere

import reftlab
from reftlab.cli import main
from reftlab.data import build_dataset, collator_for
from reftlab.models import tiny_model
from reftlab.train.fast_forward import FastForward
from reftlab.train.loss import plain_loss

DF = pd.DataFrame(
    {"prompt": ["Hello there, how are you", "Hi", "What is up with you today?"], "response": ["fine", "a hey", "x"]}
)
cases = pytest.mark.parametrize(
    "family,dtype",
    [("llama", torch.bfloat16), ("llama", torch.float16), ("gpt2", torch.bfloat16), ("gpt2", torch.float16)],
    ids=["llama-bf16", "llama-fp16", "gpt2-bf16", "gpt2-fp16"],
)


def base(family, dtype):
    return tiny_model(family, d_model=32, n_layers=2, dtype=dtype)


def reft(hooked, reps, seed=1):
    torch.manual_seed(seed)
    rm = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=reps))
    with torch.no_grad():
        for p in rm.interventions.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return rm


def left_padded(tok, prompts):
    tok.padding_side = "left"
    return tok(prompts, return_tensors="pt", padding=True)


@cases
def test_logits_and_greedy_tokens_equal_hf_in_the_same_dtype(tok, family, dtype):
    ref = base(family, dtype)
    hooked = reftlab.load_model(copy.deepcopy(ref), tok)
    assert hooked.dtype == dtype
    enc = left_padded(tok, ["Hello there, how are you", "Hi"])
    every = [(n, lambda x, hook: x) for n in hooked.hook_dict]
    with torch.no_grad():
        want = ref(**enc).logits
        assert torch.equal(hooked(**enc).logits, want)
        tapped = hooked.run_with_hooks(enc["input_ids"], attention_mask=enc["attention_mask"], fwd_hooks=every)
        assert torch.equal(tapped.logits, want)
    kw = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 256}
    for prompts in (["Hi"], ["Hello there, how are you", "Hi"]):
        enc = left_padded(tok, prompts)
        assert torch.equal(hooked.generate(**enc, **kw), ref.generate(**enc, **kw))
    assert no_hooks_anywhere(hooked)


@cases
def test_training_keeps_float32_master_weights_and_tracks_a_float32_base(tok, family, dtype):
    reps = [{"layer": 0, "component": "block_output", "positions": "f1+l1", "kind": "loreft", "rank": 4}]
    ds = build_dataset(DF, tok, positions="f1+l1")
    batch = collator_for(tok)([ds[i] for i in range(3)])
    curves = {}
    for dt in (dtype, torch.float32):
        torch.manual_seed(1)
        rm = reftlab.get_reft_model(reftlab.load_model(base(family, dt), tok), reftlab.ReftConfig(representations=reps))
        iv = next(iter(rm.interventions.values()))
        assert iv.R.dtype == torch.float32  # master weights, not the base's half precision
        if dt == dtype:
            fast, plain = FastForward(rm).loss(batch), plain_loss(rm, batch)
            assert abs(fast.item() - plain.item()) <= 1e-3 * plain.item()
        result = reftlab.train(rm, ds, epochs=20, batch_size=3, lr=5e-2, progress=False, log_every=0)
        assert result.fast
        assert (iv.R @ iv.R.T - torch.eye(4)).abs().max() < 1e-5  # orthonormal to float32 accuracy
        curves[dt] = result.losses
    assert curves[dtype][-1] < curves[dtype][0] - 0.1
    # the same steps as on a float32 copy of the base, to half-precision rounding of the activations
    assert curves[dtype] == pytest.approx(curves[torch.float32], abs=5e-3)


@cases
def test_generation_save_load_and_merge(tok, family, dtype, tmp_path):
    hooked = reftlab.load_model(base(family, dtype), tok)
    rm = reft(hooked, [{"layer": 0, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2}])
    rm.eval()
    out = reftlab.generate(rm, ["Hello there, how are you", "Hi"], max_new_tokens=6)
    plain = reftlab.generate(hooked, ["Hello there, how are you", "Hi"], max_new_tokens=6)
    alone = reftlab.generate(rm, ["Hi"], max_new_tokens=6)
    assert out.ids[1].tolist() == alone.ids[0].tolist()  # batched = alone, in half precision
    assert [t.tolist() for t in out.ids] != [t.tolist() for t in plain.ids]  # the edit acts
    enc = left_padded(tok, ["Hello there, how are you", "Hi"])
    with torch.no_grad():
        want = rm.run(enc["input_ids"], enc["attention_mask"]).logits
    assert want.dtype == dtype
    rm.save(tmp_path / "ckpt")
    again = reftlab.ReftModel.load(tmp_path / "ckpt", hooked)
    a, b = rm.interventions.state_dict(), again.interventions.state_dict()
    assert all(b[k].dtype == torch.float32 and torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(again.run(enc["input_ids"], enc["attention_mask"]).logits, want)

    merge_hooked = reftlab.load_model(base(family, dtype), tok)
    rep = {
        "layer": 1,
        "component": "attention_output",
        "positions": "all",
        "intervention": {"kind": "loreft", "rank": 2},
    }
    mm = reft(merge_hooked, [rep])
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = mm.run(ids).logits.float()
        merged = mm.merge_into_base()
        assert merged.dtype == dtype
        got = merged(input_ids=ids).logits.float()
    # The fold is exact in float64; storing the weights in half precision rounds them once.
    assert (got - want).abs().max() <= 4 * torch.finfo(dtype).eps * want.abs().max()


def test_recipe_trains_a_bfloat16_base(tmp_path, tok):
    model_dir = tmp_path / "tiny"
    reftlab.tiny_llama().save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"prompt": p, "response": "ok!"}) + "\n" for p in DF.prompt))
    cfg = tmp_path / "r.yaml"
    recipe = {
        "model": str(model_dir),
        "dtype": "bfloat16",
        "data": {"path": "d.jsonl"},
        "interventions": [{"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2}],
        "training": {"epochs": 3, "batch_size": 3, "lr": 1e-2},
        "generation": {"prompts": ["Hi"], "max_new_tokens": 4},
        "output_dir": str(tmp_path / "o"),
    }
    cfg.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert len(run["losses"]) == 3 and all(loss == loss for loss in run["losses"])
    hooked = reftlab.load_model(model_dir, dtype="bfloat16")
    loaded = reftlab.ReftModel.load(tmp_path / "o", hooked)
    assert hooked.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in loaded.interventions.parameters())
