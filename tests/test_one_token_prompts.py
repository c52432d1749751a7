"""Prompts of one token: the prompt's own pass is as wide as a decode step, so the attach layer
must tell them apart by the cache position. Every path (``reftlab.generate``, ``ReftModel.generate``,
routing, ``after_prompt`` bindings) must give the tokens of generation without a KV cache, where
every step recomputes the whole sequence and the edits land on the prompt positions only."""

import pytest
import torch
from helpers import no_hooks_anywhere
from serve_helpers import world

import reftlab
from reftlab.attach import Binding

PROMPT = "x"  # one byte, one token (the tiny tokenizer adds no BOS)
NEW = 10


def strong(hooked, positions):
    torch.manual_seed(7)
    spec = {"layer": 1, "component": "block_output", "positions": positions, "kind": "loreft", "rank": 4}
    rm = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[spec])).eval()
    with torch.no_grad():
        for key, p in rm.interventions.named_parameters():
            if not key.endswith("rotation"):
                p.mul_(40.0)
    return rm


@pytest.fixture(scope="module")
def hooked():
    hooked, _ = world()
    assert len(hooked.tokenizer(PROMPT)["input_ids"]) == 1
    return hooked


def both_ways(model, **kw):
    """(with the KV cache, without it) greedy new ids of PROMPT."""
    cached = reftlab.generate(model, [PROMPT], max_new_tokens=NEW, **kw).ids[0].tolist()
    full = reftlab.generate(model, [PROMPT], max_new_tokens=NEW, use_cache=False, **kw).ids[0].tolist()
    return cached, full


@pytest.mark.parametrize("positions", ["l1", "f1", "f1+l1", "all"])
def test_generate_edits_a_one_token_prompt_as_generation_without_cache(hooked, positions):
    rm = strong(hooked, positions)
    cached, full = both_ways(rm)
    assert cached == full
    assert cached != reftlab.generate(hooked, [PROMPT], max_new_tokens=NEW).ids[0].tolist()  # the edit matters
    assert no_hooks_anywhere(hooked)


class _GenerationOnly:
    """A Bindable whose one binding edits the generated tokens only (``after_prompt``)."""

    def __init__(self, hooked, edit):
        self.hooked, self.edit = hooked, edit

    def bindings(self, positions, attention_mask):
        return [Binding("blocks.1.hook_resid_post", self.edit, None, after_prompt=True)]


def test_after_prompt_edits_the_tokens_generated_after_a_one_token_prompt(hooked):
    edit = next(iter(strong(hooked, "all").interventions.values()))
    cached, full = both_ways(_GenerationOnly(hooked, edit))
    assert cached == full
    assert cached != reftlab.generate(hooked, [PROMPT], max_new_tokens=NEW).ids[0].tolist()


@pytest.mark.parametrize("positions", ["l1", "f1+l1"])
def test_reft_model_and_routed_generate_a_one_token_prompt_as_without_cache(hooked, positions):
    rm = strong(hooked, positions)
    enc = dict(hooked.tokenizer([PROMPT], return_tensors="pt"))
    kw = {"max_new_tokens": NEW, "do_sample": False, "pad_token_id": hooked.tokenizer.pad_token_id}
    want = rm.generate(dict(enc), intervene_on_prompt=True, use_cache=False, **kw)[1]
    assert torch.equal(rm.generate(dict(enc), intervene_on_prompt=True, **kw)[1], want)
    routed = reftlab.route({"r": rm}, hooked)
    assert torch.equal(routed.generate(enc["input_ids"], enc["attention_mask"], routes=["r"], **kw), want)
    assert no_hooks_anywhere(hooked)
