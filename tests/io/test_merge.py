"""Merging affine all-position interventions into o_proj/down_proj/c_proj, and the refusals."""

import pytest
import torch
from transformers import AutoModelForCausalLM

import reftlab
from reftlab.io import affine_parts
from reftlab.models import tiny_gpt2, tiny_llama, tiny_tokenizer


def reft(model_fn, reps):
    rm = reftlab.get_reft_model(
        reftlab.load_model(model_fn(), tiny_tokenizer()), reftlab.ReftConfig(representations=reps)
    )
    with torch.no_grad():
        for p in rm.interventions.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return rm


@pytest.mark.parametrize("kind", ["loreft", "noreft", "direft", "nodireft", "consreft", "lobireft"])
def test_affine_parts_reproduce_the_edit(kind):
    iv = reftlab.interventions.build({"kind": kind, "d_model": 16, "rank": 3})
    A, c = affine_parts(iv)
    h = torch.randn(5, 16, dtype=torch.float64)
    torch.testing.assert_close(h @ A.T + c, iv.double().edit(h))


@pytest.mark.parametrize("model_fn", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_merged_model_saves_and_reloads_with_plain_transformers(tmp_path, model_fn):
    rm = reft(
        model_fn,
        [
            {
                "layer": 1,
                "component": "attention_output",
                "positions": "all",
                "intervention": {"kind": "loreft", "rank": 4},
            },
            {"layer": 2, "component": "mlp_output", "positions": "all", "intervention": {"kind": "noreft", "rank": 3}},
            {"layer": 2, "component": "mlp_output", "positions": "all", "intervention": {"kind": "loreft", "rank": 2}},
        ],
    )
    ids = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        want = rm.run(ids).logits
        plain = rm.model(input_ids=ids).logits
    assert not torch.allclose(want, plain, atol=1e-3)
    merged = rm.merge_into_base()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, want, atol=2e-5, rtol=1e-4)
    merged.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, want, atol=2e-5, rtol=1e-4)
    assert rm.merged  # a declared field of the ReftModel, read by bindings()
    with pytest.raises(RuntimeError, match="merged into the base model"):
        rm.run(ids)


def test_llama_bias_flags_follow_the_merge():
    rm = reft(
        tiny_llama,
        [
            {
                "layer": 1,
                "component": "attention_output",
                "positions": "all",
                "intervention": {"kind": "lobireft", "rank": 2},
            }
        ],
    )
    merged = rm.merge_into_base()
    assert merged.config.attention_bias is True and merged.config.mlp_bias is False
    attn = merged.model.layers[3].self_attn
    assert all(
        torch.equal(
            getattr(attn, n).bias,
            torch.zeros(attn.o_proj.out_features if n == "o_proj" else getattr(attn, n).out_features),
        )
        for n in ("q_proj", "k_proj", "v_proj", "o_proj")
    )


def test_module_path_site_on_a_linear_output_merges(tmp_path):
    rm = reft(
        tiny_llama,
        [
            {
                "hook": "model.layers[0].self_attn.q_proj.output",
                "positions": "all",
                "intervention": {"kind": "direft", "rank": 2},
            }
        ],
    )
    ids = torch.randint(0, 256, (1, 6))
    with torch.no_grad():
        want = rm.run(ids).logits
    merged = rm.merge_into_base()
    merged.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "rep, reason",
    [
        (
            {
                "layer": 1,
                "component": "attention_output",
                "positions": "l1",
                "intervention": {"kind": "loreft", "rank": 2},
            },
            r"position-specific \(positions 'l1'\)",
        ),
        (
            {"layer": 1, "component": "attention_output", "intervention": {"kind": "loreft", "rank": 2}},
            "position-specific \\(positions given per call\\)",
        ),
        (
            {
                "layer": 1,
                "component": "attention_output",
                "positions": "all",
                "intervention": {"kind": "loreft", "rank": 2, "act": "relu"},
            },
            r"non-linear \(act='relu'\)",
        ),
        (
            {
                "layer": 1,
                "component": "mlp_output",
                "positions": "all",
                "intervention": {"kind": "noreft", "rank": 2, "dropout": 0.1},
            },
            "dropout=0.1",
        ),
        (
            {
                "layer": 1,
                "component": "block_output",
                "positions": "all",
                "intervention": {"kind": "loreft", "rank": 2},
            },
            "residual-stream site",
        ),
        (
            {"layer": 1, "component": "mlp_input", "positions": "all", "intervention": {"kind": "loreft", "rank": 2}},
            "an input site",
        ),
        (
            {"hook": "model.layers[1].mlp.output", "positions": "all", "intervention": {"kind": "loreft", "rank": 2}},
            "is a LlamaMLP, not a linear layer",
        ),
        (
            {"hook": "lm_head.output", "positions": "all", "intervention": {"kind": "loreft", "rank": 2}},
            "no bias and no config flag adds one",
        ),
    ],
)
def test_refusals_name_the_reason(rep, reason):
    rm = reft(tiny_llama, [rep])
    before = {n: p.clone() for n, p in rm.model.named_parameters()}
    with pytest.raises(ValueError, match="cannot merge into the base model: .*" + reason):
        rm.merge_into_base()
    assert all(torch.equal(p, before[n]) for n, p in rm.model.named_parameters())  # nothing changed


def test_peft_model_is_refused():
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["o_proj"]))
    rm = reftlab.get_reft_model(
        pm,
        reftlab.ReftConfig(
            representations={
                "layer": 1,
                "component": "mlp_output",
                "positions": "all",
                "intervention": {"kind": "loreft", "rank": 2},
            }
        ),
    )
    with pytest.raises(ValueError, match="merge the LoRA adapter first"):
        rm.merge_into_base()
