"""A quantized frozen base on the CPU (torchao weight-only int8): hooks, training, generation, checkpoints."""

import warnings

import pandas as pd
import pytest
import torch
from torch import nn

import reftlab
from reftlab.io import FingerprintMismatch
from reftlab.models.quantize import describe, quantization_config

pytest.importorskip("torchao")

DF = pd.DataFrame({"prompt": ["Say a", "Say bb", "Name c", "Go dd"], "response": ["a", "bb", "cc", "d"]})
REP = {"layer": 1, "component": "block_output", "positions": "l1", "intervention": {"kind": "loreft", "rank": 4}}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    reftlab.tiny_llama(seed=0).save_pretrained(path)
    reftlab.tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def quantized(folder):
    return reftlab.load_model(folder, quantization="torchao-int8")


def test_the_base_is_int8_at_the_same_module_paths_with_the_same_hook_points(folder, quantized):
    full = reftlab.load_model(folder)
    o_proj = quantized.hf_model.model.layers[1].self_attn.o_proj
    assert type(o_proj) is nn.Linear and "Int8" in type(o_proj.weight).__name__
    assert describe(quantized.hf_model) == "torchao Int8WeightOnlyConfig" and describe(full.hf_model) is None
    assert quantized.dtype == torch.float32  # the compute dtype: interventions are built in it
    assert list(quantized.hook_dict) == list(full.hook_dict)
    ids = torch.randint(0, 250, (2, 7))
    names = ["blocks.1.hook_resid_post", "blocks.2.attn.hook_z", "blocks.2.hook_mlp_out", "blocks.0.hook_attn_in"]
    _, q_cache = quantized.run_with_cache(ids, names_filter=names)
    _, f_cache = full.run_with_cache(ids, names_filter=names)
    assert torch.equal(q_cache[names[-1]], f_cache[names[-1]])  # before any Linear: the same numbers
    for name in names[:-1]:  # taps after int8 Linears fire, near the full-precision values
        assert q_cache[name].shape == f_cache[name].shape
        assert 0 < (q_cache[name] - f_cache[name]).abs().max() < 0.05 * f_cache[name].abs().max()
    assert not quantized.taps()


def test_trains_generates_and_round_trips_on_the_quantized_base(quantized, tmp_path):
    torch.manual_seed(0)
    reft = reftlab.get_reft_model(quantized, reftlab.ReftConfig(representations=[REP]))
    assert all(p.dtype == torch.float32 and p.requires_grad for p in reft.interventions.parameters())
    ds = reftlab.build_dataset(DF, quantized.tokenizer, positions="l1")
    result = reftlab.train(reft, ds, epochs=30, batch_size=4, lr=0.1, progress=False, log_every=0)
    assert result.losses[-1] < result.losses[0] - 0.2

    # Generation: without interventions the hooked quantized model is the HF quantized model.
    enc = quantized.tokenizer(["Say a"], return_tensors="pt")
    plain = quantized.hf_model.generate(**enc, max_new_tokens=5, do_sample=False)
    same = reftlab.generate(quantized, ["Say a"], max_new_tokens=5)
    edited = reftlab.generate(reft, ["Say a"], max_new_tokens=5)
    assert same.ids[0].tolist() == plain[0, enc["input_ids"].shape[1] :].tolist()
    assert len(edited.ids[0]) == 5

    saved = reft.save(tmp_path / "ckpt")
    assert '"quantization": "torchao Int8WeightOnlyConfig"' in (saved / "reftlab_config.json").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FingerprintMismatch)  # the same quantized base: no warning
        loaded = reftlab.ReftModel.load(saved, quantized)
    assert torch.equal(reft.run(**enc).logits, loaded.run(**enc).logits)


def test_a_full_precision_checkpoint_loads_onto_the_quantized_copy_with_a_warning(folder, quantized, tmp_path):
    full = reftlab.load_model(folder)
    reft = reftlab.get_reft_model(full, reftlab.ReftConfig(representations=[REP]))
    saved = reft.save(tmp_path / "ckpt")
    with pytest.warns(FingerprintMismatch, match="full-precision base and this base is torchao .* quantized copy"):
        loaded = reftlab.ReftModel.load(saved, quantized)
    assert torch.equal(next(iter(loaded.interventions.values())).weight, next(iter(reft.interventions.values())).weight)
    with pytest.raises(ValueError, match="strict=True"):
        reftlab.ReftModel.load(saved, quantized, strict=True)


def test_merge_refuses_a_quantized_base_and_bad_requests_say_what_to_do(folder, quantized):
    rep = {**REP, "component": "attention_output", "positions": "all"}
    rep["intervention"] = {"kind": "direft", "rank": 2}  # affine, all positions, after o_proj: mergeable in fp
    reft = reftlab.get_reft_model(quantized, reftlab.ReftConfig(representations=[rep]))
    with pytest.raises(ValueError, match=r"cannot merge into a quantized base \(torchao"):
        reft.merge_into_base()
    with pytest.raises(ValueError, match="not one of nf4, fp4, int8, torchao-int8"):
        reftlab.load_model(folder, quantization="fp8")
    with pytest.raises(ValueError, match="quantization= .* apply when loading by name"):
        reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer(), quantization="torchao-int8")
    assert quantization_config("torchao-int8").quant_method.value == "torchao"
