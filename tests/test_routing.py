"""Per-example routing: every example of a mixed batch equals running it alone with its own ReFTs."""

import pytest
import torch
from composition_helpers import perturb
from helpers import no_hooks_anywhere

import reftlab

PROMPTS = ["hello there", "a much longer prompt, with commas", "hi", "routing test #4", "zz"]
ROUTES = ["a", None, "b", ["a", "c"], "c"]


def make_refts(hooked):
    def reft(reps, seed):
        torch.manual_seed(seed)
        r = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=reps))
        perturb(r.interventions, seed=seed)
        with torch.no_grad():  # make the edits strong enough to change greedy tokens
            for p in r.interventions.parameters():
                p.mul_(8.0)
        return r

    def site(layer, pos, iv):
        return {"layer": layer, "component": "block_output", "positions": pos, "intervention": iv}

    a = reft([site(1, "l1", {"kind": "loreft", "rank": 2})], seed=1)
    b = reft(
        [site(2, "l2", {"kind": "concat_loreft", "rank": 2}), site(0, "all", {"kind": "direft", "rank": 2})], seed=2
    )
    c = reft([site(1, "f1+l1", {"kind": "nodireft", "rank": 2})], seed=3)
    return {"a": a, "b": b, "c": c}


def alone(hooked, refts, route):
    """The reference: the example's own ReFTs only (several: composed in routing order)."""
    names = [] if route is None else [route] if isinstance(route, str) else route
    if not names:
        return None
    if len(names) == 1:
        return refts[names[0]]
    return reftlab.compose({n: refts[n] for n in names}, hooked, on_conflict="sequence", interference_threshold=None)


def test_forward_matches_each_example_alone(tiny_hooked, tok):
    refts = make_refts(tiny_hooked)
    routed = reftlab.route(refts, tiny_hooked)
    tok.padding_side = "right"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        mixed = routed.run(enc["input_ids"], enc["attention_mask"], routes=ROUTES).logits
    assert no_hooks_anywhere(tiny_hooked)
    base = []
    for i, (prompt, route) in enumerate(zip(PROMPTS, ROUTES)):
        ids = tok([prompt], return_tensors="pt")["input_ids"]
        own = alone(tiny_hooked, refts, route)
        with torch.no_grad():
            ref = (own.run(ids) if own is not None else tiny_hooked.model(input_ids=ids)).logits[0]
            base.append(tiny_hooked.model(input_ids=ids).logits[0])
        torch.testing.assert_close(mixed[i, : ids.shape[1]], ref, atol=1e-5, rtol=1e-5)
        if route is not None:  # and the ReFT really did something to this example
            assert (ref - base[-1]).abs().max() > 1e-2


def test_each_example_gets_its_refts_in_its_own_order(tiny_hooked, tok):
    refts = make_refts(tiny_hooked)  # a and c share blocks.1.hook_resid_post at the last token
    routed = reftlab.route(refts, tiny_hooked)
    ids = tok(["hello there"] * 2, return_tensors="pt")["input_ids"]
    orders = (["c", "a"], ["a", "c"])
    with torch.no_grad():
        mixed = routed.run(ids, routes=list(orders)).logits
        each = [routed.run(ids[:1], routes=[order]).logits[0] for order in orders]
        want = [alone(tiny_hooked, refts, order).run(ids[:1]).logits[0] for order in orders]
    assert no_hooks_anywhere(tiny_hooked)
    assert (want[0] - want[1]).abs().max() > 1e-2  # the order matters here
    for i in range(2):
        torch.testing.assert_close(each[i], want[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mixed[i], want[i], atol=1e-5, rtol=1e-5)


def test_a_reft_named_twice_in_one_route_is_refused(tiny_hooked, tok):
    routed = reftlab.route(make_refts(tiny_hooked), tiny_hooked)
    ids = tok(["ab"], return_tensors="pt")["input_ids"]
    with pytest.raises(ValueError, match=r"routes\[0\] names a ReFT twice \(\['a', 'c', 'a'\]\); name each ReFT once"):
        routed.run(ids, routes=[["a", "c", "a"]])
    assert no_hooks_anywhere(tiny_hooked)


def test_greedy_generation_matches_each_prompt_alone(tiny_hooked, tok):
    refts = make_refts(tiny_hooked)
    routed = reftlab.route(refts, tiny_hooked)
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    gen = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": tok.pad_token_id}
    with torch.no_grad():
        mixed = routed.generate(enc["input_ids"], enc["attention_mask"], routes=ROUTES, **gen)
    assert no_hooks_anywhere(tiny_hooked)
    width = enc["input_ids"].shape[1]
    differs = 0
    for i, (prompt, route) in enumerate(zip(PROMPTS, ROUTES)):
        one = tok([prompt], return_tensors="pt")
        own = alone(tiny_hooked, refts, route)
        with torch.no_grad():
            ref = own.generate(dict(one), **gen)[1] if own is not None else tiny_hooked.model.generate(**one, **gen)
            plain = tiny_hooked.model.generate(**one, **gen)
        n = one["input_ids"].shape[1]
        assert mixed[i, width:].tolist() == ref[0, n:].tolist(), (i, route)
        differs += route is not None and ref[0, n:].tolist() != plain[0, n:].tolist()
    assert differs >= 2  # the routed ReFTs change what is generated


def test_bad_routes_are_named(tiny_hooked, tok):
    routed = reftlab.route(make_refts(tiny_hooked), tiny_hooked)
    ids = tok(["ab", "cd"], return_tensors="pt")["input_ids"]
    with pytest.raises(ValueError, match="routes has 1 entries for a batch of 2"):
        routed.run(ids, routes=["a"])
    with pytest.raises(ValueError, match=r"routes\[1\] names 'emoji'; known ReFTs: \['a', 'b', 'c'\]"):
        routed.run(ids, routes=["a", "emoji"])
    assert no_hooks_anywhere(tiny_hooked)
    assert "b: concat_loreft@blocks.2.hook_resid_post[l2], direft@blocks.0.hook_resid_post[all]" in repr(routed)


def test_rows_mask_for_every_token_bindings():
    iv = reftlab.LoReFT(d_model=4, rank=2)
    h = torch.randn(3, 5, 4)
    out = reftlab.apply_at_positions(h, iv, None, rows=torch.tensor([True, False, True]))
    torch.testing.assert_close(out[[0, 2]], iv(h[[0, 2]]))
    assert torch.equal(out[1], h[1])
    assert torch.equal(reftlab.apply_at_positions(h, iv, None, rows=torch.zeros(3, dtype=torch.bool)), h)
