"""The fast path computes the same numbers as the plain hooked forward (per family: tests/models/test_architectures.py)."""

import pandas as pd
import pytest
import torch
from helpers import REPO, no_hooks_anywhere

import reftlab
from reftlab.data import build_dataset, collator_for
from reftlab.train.fast_forward import FastForward, why_not
from reftlab.train.loss import batch_positions, plain_loss
from reftlab.train.packing import Layout, content_keys

DF = pd.DataFrame({"prompt": ["Hello there", "Hi", "What is up with you"], "response": ["yo", "a longer answer", "x"]})


def setup(tok, reps, positions, hf=None):
    hooked = reftlab.load_model(hf or reftlab.tiny_llama(), tok)
    rm = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=reps))
    with torch.no_grad():  # away from the identity init, so every parameter has a gradient
        for p in rm.interventions.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ds = build_dataset(DF, tok, positions=positions, num_interventions=len(reps))
    return rm, collator_for(tok)([ds[i] for i in range(len(ds))])


def assert_same_loss_and_grads(rm, batch, keys=None, ff=None):
    params = list(rm.interventions.parameters())
    fast = (ff or FastForward(rm)).loss(batch, keys=keys)
    ref = plain_loss(rm, batch)
    assert abs(fast.item() - ref.item()) < 1e-5
    for a, b in zip(torch.autograd.grad(fast, params), torch.autograd.grad(ref, params)):
        assert (a - b).abs().max() < 1e-5


def test_packed_blocks_match_the_hf_forward(tok):
    """All blocks on the packed row (no interventions) give the padded forward's logits, to float rounding:
    packing changes the shapes of the matmuls, so the bound is 1e-5, not bitwise."""
    hf = reftlab.tiny_llama()
    rm, batch = setup(tok, [{"layer": 0, "component": "block_input", "kind": "loreft", "rank": 2}], "l1", hf)
    ff = FastForward(rm)
    lengths = [int(x) for x in batch["attention_mask"].sum(1)]
    ids = torch.cat([batch["input_ids"][b, :t] for b, t in enumerate(lengths)])[None]
    with torch.no_grad():
        h = ff.run_blocks(hf.model.embed_tokens(ids), Layout.packed(lengths, [0] * 3, "cpu"), 0, 4)
        logits = hf.lm_head(h)[0].split(lengths)
        ref = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    for b, t in enumerate(lengths):
        assert (logits[b] - ref[b, :t]).abs().max() < 1e-5
    assert all("forward" not in layer.__dict__ for layer in hf.model.layers)  # skipped blocks are restored


@pytest.mark.parametrize(
    "positions,sites",
    [
        ("l1", [("block_output", 1)]),
        ("f1+l1", [("block_output", 1), ("mlp_output", 2)]),
        ("f2+l2", [("block_input", 2), ("attention_output", 3)]),
        ("l2", [("block_output", 0), ("block_output", 3)]),
    ],
)
def test_fast_loss_and_grads_equal_the_plain_path(tok, positions, sites):
    reps = [{"layer": L, "component": c, "kind": "loreft", "rank": 2} for c, L in sites]
    rm, batch = setup(tok, reps, positions)
    ff = FastForward(rm)
    for keys in (None, [0, 1, 2], [0, 1, 2]):  # uncached, filling the cache, from the cache
        assert_same_loss_and_grads(rm, batch, keys, ff)
    ref = rm.run(
        batch["input_ids"], batch["attention_mask"], positions=batch_positions(batch, len(reps)), labels=batch["labels"]
    ).loss
    assert abs(plain_loss(rm, batch).item() - ref.item()) < 1e-5  # the sparse loss is HF's loss


def test_concatenated_positions_with_mixed_empty_slots_pair_within_each_example(tok):
    """Groups of 2 positions with -1 slots in some examples: each group stays inside its example
    (a group with an empty slot is skipped), exactly as in the padded forward."""
    rep = {"layer": 1, "component": "block_output", "intervention": {"kind": "concat_loreft", "rank": 2, "arity": 2}}
    rm, batch = setup(tok, [rep], "l2")
    batch["intervention_locations"] = torch.tensor([[[-1, 3, 5, 6]], [[0, 1, -1, -1]], [[2, -1, 7, 9]]])
    assert_same_loss_and_grads(rm, batch)
    batch["intervention_locations"] = torch.tensor([[[1, 2, 3]], [[0, 1, -1]], [[2, 3, 4]]])
    with pytest.raises(ValueError, match="reads groups of 2 positions but got 3 per example"):
        FastForward(rm).loss(batch)


def test_start_block_and_prefix_reuse_skip_work(tok):
    rm, batch = setup(tok, [{"layer": 2, "component": "block_output", "kind": "loreft", "rank": 2}], "l1")
    ff = FastForward(rm)
    assert (ff.start, ff.boundary) == (3, "blocks.2.hook_resid_post")
    h, lengths, prefixes, _ = ff.hidden(batch, keys=[0, 1, 2])
    assert prefixes == [int(p) - 1 for p in batch["prompt_lengths"]]  # everything before l1 is reused
    assert h.shape[1] == sum(lengths) - sum(prefixes)


def test_content_keys_reuse_the_cache_across_batch_orders(tok):
    rm, batch = setup(tok, [{"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2}], "l1")
    ff = FastForward(rm)
    assert_same_loss_and_grads(rm, batch, content_keys(batch), ff)
    assert len(ff._cache) == 3
    order = [2, 0, 1]
    shuffled = {k: v[order] for k, v in batch.items()}
    assert_same_loss_and_grads(rm, shuffled, content_keys(shuffled), ff)
    assert len(ff._cache) == 3  # the same three examples, found by content
    assert content_keys(shuffled)[0] == content_keys(batch)[2]


def test_an_error_inside_the_fast_forward_leaves_the_model_as_it_was(tok):
    rm, batch = setup(tok, [{"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2}], "l1")
    ff = FastForward(rm)
    hf = rm.hooked.hf_model

    def boom(module, args):
        raise RuntimeError("boom")

    handle = hf.model.layers[3].register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            ff.loss(batch)
    finally:
        handle.remove()
    assert all("forward" not in layer.__dict__ for layer in hf.model.layers)
    assert not hf.model.layers[2]._forward_pre_hooks and not hf.model.norm._forward_pre_hooks
    assert no_hooks_anywhere(rm.hooked)
    assert_same_loss_and_grads(rm, batch)


def test_why_not_names_the_reason_and_training_falls_back(tok):
    rm, _ = setup(tok, [{"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2}], "l1")
    assert why_not(rm) is None
    emb = reftlab.get_reft_model(
        reftlab.load_model(reftlab.tiny_llama(), tok),
        reftlab.ReftConfig(representations=[{"hook": "hook_embed", "kind": "loreft", "rank": 2}]),
    )
    assert why_not(emb) == "llama: an intervention sits outside the transformer blocks"
    result = reftlab.train(emb, build_dataset(DF, tok), epochs=1, batch_size=3, progress=False, log_every=0)
    assert not result.fast and len(result.losses) == 1
    with pytest.raises(ValueError, match="fast=True but the fast path does not apply"):
        reftlab.train(emb, build_dataset(DF, tok), epochs=1, fast=True, progress=False)
    rm.hooked.hf_model.model.embed_tokens.weight.requires_grad_(True)
    assert "parameters below block 2 are trainable" in why_not(rm)
    rm.hooked.hf_model.model.embed_tokens.weight.requires_grad_(False)
    gpt2, _ = setup(
        tok, [{"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2}], "l1", reftlab.tiny_gpt2()
    )
    assert why_not(gpt2) is None
    gpt2.hooked.hf_model.train()  # GPT-2 has dropout: training-mode steps are random
    assert "gpt2: the base model is in training mode with dropout" in why_not(gpt2)


def lora_above(tok, seed=0):
    """peft LoRA on o_proj of blocks 2-3 (above the start block) and a LoReFT at block 0's output."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["o_proj"], layers_to_transform=[2, 3])
    peft_model = get_peft_model(reftlab.tiny_llama(), lora)
    with torch.no_grad():  # LoRA's B starts at zero: make the adapter matter
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.copy_(0.3 * torch.randn_like(p))
    rep = {"layer": 0, "component": "block_output", "kind": "loreft", "rank": 2}
    return setup(tok, [rep], "l1", peft_model)


def test_trainable_weights_above_the_start_block_get_the_plain_path_gradients(tok):
    rm, batch = lora_above(tok)
    ff = FastForward(rm)
    assert ff.start == 1 and why_not(rm) is None
    params = [p for p in rm.parameters() if p.requires_grad]
    assert any(p in set(rm.interventions.parameters()) for p in params) and len(params) > 4  # LoRA's too
    for keys in (None, [0, 1, 2], [0, 1, 2]):
        fast, plain = ff.loss(batch, keys=keys), plain_loss(rm, batch)
        assert abs(fast.item() - plain.item()) < 1e-5
        for a, b in zip(torch.autograd.grad(fast, params), torch.autograd.grad(plain, params)):
            assert (a - b).abs().max() < 1e-5
    losses = {}
    for fast in (True, False):  # after optimizer steps the LoRA weights have moved: the losses still agree
        rm, batch = lora_above(tok)
        ff = FastForward(rm) if fast else None
        opt = torch.optim.AdamW([p for p in rm.parameters() if p.requires_grad], lr=1e-2)
        losses[fast] = []
        for _ in range(3):
            loss = ff.loss(batch, keys=[0, 1, 2]) if ff else plain_loss(rm, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[fast].append(loss.item())
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


def test_the_fast_path_checks_the_frozen_blocks_at_every_step(tok):
    rm, batch = setup(tok, [{"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2}], "l1")
    ff = FastForward(rm)
    ff.loss(batch, keys=[0, 1, 2])
    rm.hooked.hf_model.model.layers[0].mlp.up_proj.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="the fast path no longer applies: llama: parameters below block 2"):
        ff.loss(batch, keys=[0, 1, 2])
    assert no_hooks_anywhere(rm.hooked)


@pytest.mark.embedded
@pytest.mark.parametrize("positions", ["l1", "f1+l1"])
def test_fast_loss_equals_plain_on_smollm2(smol, positions):
    hooked, _, tok = smol
    reps = [
        {"layer": L, "component": "block_output", "positions": positions, "kind": "loreft", "rank": 4} for L in (6, 24)
    ]
    rm = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=reps))
    ds = build_dataset(
        REPO / "examples" / "emoji.jsonl",
        tok,
        positions=positions,
        num_interventions=2,
        chat_template=True,
        model=hooked,
    )
    batch = collator_for(tok)([ds[i] for i in (0, 5, 7)])
    fast = FastForward(rm).loss(batch, keys=[0, 5, 7])
    assert abs(fast.item() - plain_loss(rm, batch).item()) < 1e-4
