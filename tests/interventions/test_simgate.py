"""Similarity-gated interventions: formula, round trip, and a gate that learns when to fire."""

import random

import pytest
import torch
from composition_helpers import perturb, rebuild

import reftlab
from reftlab.interventions import DiReFT, LobiReFT, SimilarityGated


def test_key_gate_formula_and_param_count():
    child = DiReFT(d_model=8, rank=2)
    iv = SimilarityGated(d_model=8, child=child, gate="learned", init_scale=3.0, init_bias=-1.0)
    h = torch.randn(5, 8)
    sim = torch.nn.functional.cosine_similarity(h, iv.key[None], dim=-1)
    g = torch.sigmoid(3.0 * sim - 1.0)
    torch.testing.assert_close(iv(h), h + g[:, None] * child.edit(h))
    assert iv.num_parameters() == child.num_parameters() + 8 + 2
    assert iv.rank == 2 and torch.equal(iv.subspace(), child.subspace())


def test_pair_gate_writes_only_its_slot():
    child = LobiReFT(d_model=6, rank=2)
    iv = SimilarityGated(d_model=6, child=child, source="pair", arity=3, write=2, gate="threshold", threshold=0.9)
    a, b = torch.randn(6), torch.randn(6)
    same, diff = torch.stack([a, a, b])[None], torch.stack([a, -a, b])[None]  # [1, 3, d_model]
    assert torch.equal(iv(diff), diff)  # cos = -1: gate off, nothing changes
    out = iv(same)
    torch.testing.assert_close(out[0, 2], b + child.edit(b))
    assert torch.equal(out[0, :2], same[0, :2])
    assert iv.num_parameters() == child.num_parameters()  # a fixed gate has no parameters


@pytest.mark.parametrize(
    "spec",
    [
        {"source": "key", "gate": "learned"},
        {"source": "pair", "gate": "learned", "arity": 2, "write": 0},
        {"source": "pair", "gate": "threshold", "threshold": 0.2},
    ],
)
def test_round_trip_spec_state_and_safetensors(spec, tmp_path):
    iv = SimilarityGated(d_model=8, child={"kind": "loreft", "rank": 2}, **spec)
    perturb(iv)
    h = torch.randn(4, iv.arity, 8) if iv.arity > 1 else torch.randn(4, 8)
    for new in (rebuild(iv), rebuild(iv, tmp_path)):
        assert new.spec() == iv.spec()
        assert torch.equal(new(h), iv(h))


@pytest.mark.user_errors
def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="source='key' reads one position"):
        SimilarityGated(d_model=8, child={"kind": "loreft", "rank": 2}, source="key", arity=2)
    with pytest.raises(ValueError, match="child must read single positions"):
        SimilarityGated(d_model=8, child={"kind": "concat_loreft", "rank": 2})
    with pytest.raises(ValueError, match="gate='sometimes'"):
        SimilarityGated(d_model=8, child={"kind": "loreft", "rank": 2}, gate="sometimes")


def trigger_prompts(n, seed):
    """Random letter strings; every other one holds the trigger '#' somewhere."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        s = [rng.choice("abcdefghijklmnop") for _ in range(rng.randint(4, 8))]
        if i % 2 == 0:
            s[rng.randrange(len(s))] = "#"
        out.append("".join(s))
    return out


def test_learned_gate_fires_on_the_trigger_only(tok):
    """A constant edit (LobiReFT child: delta = R^T b, the same for every h) must make the model
    say '!' right after '#' and change nothing elsewhere: only the gate can tell the positions
    apart, so the right answer is g ~ 1 on '#' and g ~ 0 on every other token."""
    hook = "blocks.0.hook_resid_pre"  # token embeddings: '#' is one fixed vector
    hooked = reftlab.load_model(reftlab.tiny_llama(seed=0), tok)
    cfg = reftlab.ReftConfig(
        representations=[
            {
                "hook": hook,
                "positions": "all",
                "intervention": {
                    "kind": "simgate",
                    "child": {"kind": "lobireft", "rank": 4},
                    "init_scale": 5.0,
                    "init_bias": 0.0,
                },
            }
        ]
    )
    reft = reftlab.get_reft_model(hooked, cfg)
    iv = reft.interventions[next(iter(reft.interventions))]
    tok.padding_side = "right"
    enc = tok(trigger_prompts(16, seed=0), return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    trig, bang = tok("#")["input_ids"][0], tok("!")["input_ids"][0]
    at_trigger = (ids == trig) & mask.bool()
    elsewhere = ~at_trigger & mask.bool()
    with torch.no_grad():
        base = reft.model(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)
    opt = torch.optim.AdamW(reft.interventions.parameters(), lr=5e-2, weight_decay=0.0)
    for _ in range(70):
        logp = reft.run(ids, mask).logits.log_softmax(-1)
        ce = -logp[at_trigger][:, bang].mean()  # say '!' after '#'
        kl = (base[elsewhere].exp() * (base[elsewhere] - logp[elsewhere])).sum(-1).mean()  # else: as before
        opt.zero_grad()
        (ce + 20 * kl).backward()
        opt.step()

    held = tok(trigger_prompts(40, seed=1), return_tensors="pt", padding=True)
    hids, hmask = held["input_ids"], held["attention_mask"].bool()
    seen = {}
    with torch.no_grad(), reft.hooked.hooks(fwd_hooks=[(hook, lambda x, hook: seen.__setitem__("h", x))]):
        reft.model(input_ids=hids, attention_mask=held["attention_mask"])
        gate = iv.gate(seen["h"])  # [batch, pos]
    has_trigger = ((hids == trig) & hmask).any(1)
    per_prompt = torch.where(hmask, gate, 0.0).max(1).values  # the strongest firing in each prompt
    assert per_prompt[has_trigger].min() > 0.9, per_prompt[has_trigger]
    assert per_prompt[~has_trigger].max() < 0.1, per_prompt[~has_trigger]
    assert gate[hmask & (hids != trig)].max() < 0.1  # and off on the other tokens of matching prompts
