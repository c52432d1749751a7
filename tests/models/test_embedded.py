"""Parity and parameter counts on the embedded SmolLM2-135M-Instruct (slower; runs in CI)."""

import io
from contextlib import redirect_stdout

import pytest
import torch
from helpers import no_hooks_anywhere

import reftlab

pytestmark = pytest.mark.embedded
PROMPTS = ["The capital of France is", "Hi", "Write one sentence about the sea and the sky above it."]


def test_embedded_folder_loads_with_plain_transformers(smol):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(reftlab.embedded_model_path())
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == ("llama", 576, 30, 49152)


def test_logits_and_hidden_states_match_untouched_model(smol):
    hooked, ref, tok = smol
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        a = ref(**enc, output_hidden_states=True)
        logits, cache = hooked.run_with_cache(
            enc["input_ids"], attention_mask=enc["attention_mask"], names_filter=lambda n: n.endswith("hook_resid_post")
        )
    assert torch.equal(a.logits, logits.logits)
    for L in (0, 14, 28):
        assert torch.equal(cache[f"blocks.{L}.hook_resid_post"], a.hidden_states[L + 1])
    assert no_hooks_anywhere(hooked)


@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["single", "batch"])
def test_greedy_32_tokens_with_kv_cache_match_untouched_model(smol, prompts):
    hooked, ref, tok = smol
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    kw = {"max_new_tokens": 32, "do_sample": False, "use_cache": True, "pad_token_id": tok.pad_token_id}
    expected = ref.generate(**enc, **kw)
    assert torch.equal(hooked.generate(**enc, **kw), expected)
    if len(prompts) == 1:
        assert tok.decode(expected[0, enc["input_ids"].shape[1] :]).startswith(" Paris")


def test_rank4_loreft_at_one_layer_has_4612_params(smol):
    hooked, _, _ = smol
    cfg = reftlab.ReftConfig(
        representations={
            "layer": 15,
            "component": "block_output",
            "low_rank_dimension": 4,
            "intervention": reftlab.LoreftIntervention(embed_dim=hooked.d_model, low_rank_dimension=4),
        }
    )
    rm = reftlab.get_reft_model(hooked, cfg)
    buf = io.StringIO()
    with redirect_stdout(buf):
        rm.print_trainable_parameters()
    assert buf.getvalue().startswith(
        "trainable intervention params: 4,612 || trainable model params: 0\nmodel params: 134,515,008"
    )
