"""Hook points on an unmodified HF model: parity with the untouched model, TL semantics, no residue."""

import copy

import pytest
import torch
from helpers import no_hooks_anywhere

import reftlab


def batch(tok, prompts, side="left"):
    tok.padding_side = side
    return tok(prompts, return_tensors="pt", padding=True)


PROMPTS = ["Hi", "The capital of France is", "a b c d e f g h i j"]


def test_logits_equal_untouched_model(tiny_hf, tok):
    ref = copy.deepcopy(tiny_hf)
    hooked = reftlab.load_model(tiny_hf, tok)
    enc = batch(tok, PROMPTS)
    with torch.no_grad():
        assert (hooked(**enc).logits - ref(**enc).logits).abs().max() <= 1e-5


def test_resid_post_equals_hf_hidden_states(tiny_hooked, tok):
    enc = batch(tok, PROMPTS, "right")
    with torch.no_grad():
        hs = tiny_hooked.model(**enc, output_hidden_states=True).hidden_states
        _, cache = tiny_hooked.run_with_cache(enc["input_ids"], attention_mask=enc["attention_mask"])
    n = tiny_hooked.n_layers
    for L in range(n - 1):  # HF's last hidden state is after the final norm
        torch.testing.assert_close(cache[f"blocks.{L}.hook_resid_post"], hs[L + 1], atol=0, rtol=0)
        torch.testing.assert_close(cache[f"blocks.{L}.hook_resid_pre"], hs[L], atol=0, rtol=0)
    assert cache["blocks.0.attn.hook_z"].shape[2] == tiny_hooked.cfg["n_heads"]
    assert no_hooks_anywhere(tiny_hooked)


def test_classic_hook_names_and_canonical_aliases(tiny_hooked):
    names = tiny_hooked.hook_dict
    for L in range(tiny_hooked.n_layers):
        for s in [
            "hook_resid_pre",
            "hook_resid_post",
            "hook_attn_out",
            "hook_mlp_out",
            "hook_attn_in",
            "hook_mlp_in",
            "attn.hook_z",
        ]:
            assert f"blocks.{L}.{s}" in names
        assert tiny_hooked.mod_dict[f"blocks.{L}.hook_out"] is names[f"blocks.{L}.hook_resid_post"]
    with pytest.raises(ValueError, match="no hook point 'blocks.99.hook_resid_post'"):
        tiny_hooked.hook_point("blocks.99.hook_resid_post")


def test_residual_decomposes_into_attn_and_mlp_outputs(tiny_hooked, tok):
    enc = batch(tok, PROMPTS)
    with torch.no_grad():
        _, c = tiny_hooked.run_with_cache(enc["input_ids"], attention_mask=enc["attention_mask"])
    for L in range(tiny_hooked.n_layers):
        total = c[f"blocks.{L}.hook_resid_pre"] + c[f"blocks.{L}.hook_attn_out"] + c[f"blocks.{L}.hook_mlp_out"]
        torch.testing.assert_close(total, c[f"blocks.{L}.hook_resid_post"], atol=1e-5, rtol=1e-5)


def test_run_with_hooks_edits_and_leaves_nothing_behind(tiny_hooked, tok):
    enc = batch(tok, PROMPTS)
    with torch.no_grad():
        clean = tiny_hooked(**enc).logits
        zeroed = tiny_hooked.run_with_hooks(
            enc["input_ids"],
            attention_mask=enc["attention_mask"],
            fwd_hooks=[("blocks.1.hook_mlp_out", lambda x, hook: torch.zeros_like(x))],
        ).logits
        again = tiny_hooked(**enc).logits
    assert (clean - zeroed).abs().max() > 1e-4
    assert torch.equal(clean, again)
    assert no_hooks_anywhere(tiny_hooked)


@pytest.mark.parametrize("side", ["single", "batch"])
def test_greedy_generation_with_kv_cache_matches_untouched_model(tiny_hf, tok, side):
    ref = copy.deepcopy(tiny_hf)
    hooked = reftlab.load_model(tiny_hf, tok)
    enc = batch(tok, PROMPTS if side == "batch" else PROMPTS[1:2])
    kw = {"max_new_tokens": 32, "do_sample": False, "use_cache": True, "pad_token_id": tok.pad_token_id}
    out_ref = ref.generate(**enc, **kw)
    out = hooked.generate(**enc, **kw)
    assert torch.equal(out, out_ref)
    # A cached hook that does nothing must not change generation either.
    with hooked.hooks(fwd_hooks=[("blocks.1.hook_resid_post", lambda x, hook: x)]):
        assert torch.equal(hooked.generate(**enc, **kw), out_ref)
    assert no_hooks_anywhere(hooked)


def test_no_hook_survives_an_exception(tiny_hooked, tok):
    enc = batch(tok, PROMPTS)

    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        tiny_hooked.run_with_hooks(
            enc["input_ids"],
            fwd_hooks=[("blocks.2.hook_attn_out", boom), ("blocks.0.hook_resid_pre", lambda x, hook: x)],
        )
    assert tiny_hooked.taps() == []
    assert no_hooks_anywhere(tiny_hooked)


def test_load_model_from_local_folder_and_cache_override(tmp_path, tok, monkeypatch):
    hf = reftlab.tiny_llama(seed=3)
    hf.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    hooked = reftlab.load_model(tmp_path / "m")
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(hooked(ids).logits, hf(ids).logits)
    assert hooked.tokenizer is not None
    monkeypatch.setenv("REFTLAB_CACHE", str(tmp_path / "cache"))
    from reftlab.models import cache_dir

    assert cache_dir() == tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="no such folder: ./some-missing-model .*looks like a path"):
        reftlab.load_model("./some-missing-model")


def test_unsupported_architecture_is_named(tok):
    from transformers import BertConfig, BertForMaskedLM

    with pytest.raises(ValueError, match="model_type='bert' is not supported; supported: .*llama"):
        reftlab.load_model(
            BertForMaskedLM(
                BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64)
            ),
            tok,
        )
