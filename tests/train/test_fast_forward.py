"""The fast path computes the same numbers as the plain hooked forward."""

import pandas as pd
import pytest
import torch
from helpers import REPO

import reftlab
from reftlab.data import build_dataset, collator_for
from reftlab.train.fast_forward import FastForward, packed_causal_mask, why_not
from reftlab.train.loss import batch_positions, plain_loss

DF = pd.DataFrame({"prompt": ["Hello there", "Hi", "What is up with you"], "response": ["yo", "a longer answer", "x"]})


def setup(tok, reps, positions, hf=None):
    hooked = reftlab.load_model(hf or reftlab.tiny_llama(), tok)
    rm = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=reps))
    ds = build_dataset(DF, tok, positions=positions, num_interventions=len(reps))
    return rm, collator_for(tok)([ds[i] for i in range(len(ds))])


def test_packed_blocks_match_the_hf_forward(tok):
    hf = reftlab.tiny_llama()
    rm, batch = setup(tok, [{"layer": 0, "component": "block_input", "kind": "loreft", "rank": 2}], "l1", hf)
    ff = FastForward(rm)
    lengths = [int(x) for x in batch["attention_mask"].sum(1)]
    ids = torch.cat([batch["input_ids"][b, :t] for b, t in enumerate(lengths)])[None]
    zeros = [0] * len(lengths)
    with torch.no_grad():
        h = ff.run_blocks(
            hf.model.embed_tokens(ids),
            torch.cat([torch.arange(t) for t in lengths])[None],
            packed_causal_mask(lengths, zeros, torch.float32, "cpu"),
            0,
            len(hf.model.layers),
        )
        logits = hf.lm_head(hf.model.norm(h))[0].split(lengths)
        ref = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    for b, t in enumerate(lengths):
        assert (logits[b] - ref[b, :t]).abs().max() < 1e-5


@pytest.mark.parametrize(
    "positions,sites",
    [
        ("l1", [("block_output", 1)]),
        ("f1+l1", [("block_output", 1), ("mlp_output", 2)]),
        ("f2+l2", [("block_input", 2), ("attention_output", 3)]),
        ("l2", [("block_output", 0), ("block_output", 3)]),
    ],
)
def test_fast_loss_and_grads_equal_reft_model_run(tok, positions, sites):
    reps = [{"layer": L, "component": c, "kind": "loreft", "rank": 2} for c, L in sites]
    rm, batch = setup(tok, reps, positions)
    ff = FastForward(rm)
    params = list(rm.interventions.parameters())
    for keys in (None, [0, 1, 2], [0, 1, 2]):  # uncached, filling the cache, from the cache
        fast = ff.loss(batch, keys=keys)
        ref = rm.run(
            batch["input_ids"],
            batch["attention_mask"],
            positions=batch_positions(batch, len(reps)),
            labels=batch["labels"],
        ).loss
        assert abs(fast.item() - ref.item()) < 1e-5
        for a, b in zip(torch.autograd.grad(fast, params), torch.autograd.grad(ref, params)):
            assert (a - b).abs().max() < 1e-6
    assert abs(plain_loss(rm, batch).item() - ref.item()) < 1e-5


def test_start_block_and_prefix_reuse_skip_work(tok):
    rm, batch = setup(tok, [{"layer": 2, "component": "block_output", "kind": "loreft", "rank": 2}], "l1")
    ff = FastForward(rm)
    assert (ff.start, ff.boundary) == (3, "blocks.2.hook_resid_post")
    h, lengths, prefixes = ff.hidden(batch, keys=[0, 1, 2])
    assert prefixes == [int(p) - 1 for p in batch["prompt_lengths"]]  # everything before l1 is reused
    assert h.shape[1] == sum(lengths) - sum(prefixes)


def test_unsupported_models_fall_back(tok):
    rm, _batch = setup(
        tok, [{"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2}], "l1", reftlab.tiny_gpt2()
    )
    assert "gpt2" in why_not(rm)
    result = reftlab.train(rm, build_dataset(DF, tok), epochs=1, batch_size=3, progress=False, log_every=0)
    assert not result.fast and len(result.losses) == 1
    emb = reftlab.get_reft_model(
        reftlab.load_model(reftlab.tiny_llama(), tok),
        reftlab.ReftConfig(representations=[{"hook": "hook_embed", "kind": "loreft", "rank": 2}]),
    )
    assert "outside the transformer blocks" in why_not(emb)
    with pytest.raises(ValueError, match="fast=True but the fast path does not apply"):
        reftlab.train(rm, build_dataset(DF, tok), epochs=1, fast=True, progress=False)


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
