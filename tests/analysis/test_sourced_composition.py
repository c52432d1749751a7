"""Sourced kinds with ReFTs through reftlab.compose and reftlab.routing: what composes, exactly, and
the clear errors where a source cannot reach (a sum, routing, generation)."""

import pytest
import torch
from helpers import no_hooks_anywhere

import reftlab
from reftlab.analysis import SourceBatch, site_mean
from reftlab.interventions import MeanAblation


@pytest.fixture(scope="module")
def hooked():
    return reftlab.load_model(reftlab.tiny_llama(dtype=torch.float64), reftlab.tiny_tokenizer())


def at_layer1(hooked, intervention):
    rep = {"layer": 1, "component": "block_output", "positions": "l1", "intervention": intervention}
    return reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[rep]))


def loreft(hooked):
    torch.manual_seed(0)
    rm = at_layer1(hooked, {"kind": "loreft", "rank": 2})
    with torch.no_grad():
        for p in rm.interventions.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return rm


def test_a_patch_then_a_reft_in_sequence_edits_the_source_vector(hooked):
    base, src = torch.randint(0, 256, (2, 6)), torch.randint(0, 256, (2, 6))
    steer = loreft(hooked)
    both = reftlab.compose(
        {"patch": at_layer1(hooked, {"kind": "vanilla"}), "steer": steer},
        hooked,
        on_conflict="sequence",
        interference_threshold=None,  # a patch spans everything: its "interference" is the point
    )
    with torch.no_grad():
        got = both.run(base, source=SourceBatch(src)).logits
        # the same by hand: the source's block-1 output at its last token, the LoReFT applied to it,
        # written over the base's last token with a plain forward hook
        _, cache = hooked.run_with_cache(src, names_filter=lambda n: n == "blocks.1.hook_resid_post")
        edited = next(iter(steer.interventions.values()))(cache["blocks.1.hook_resid_post"][:, -1])  # [2, d_model]

        def put(module, args, out):
            h = (out[0] if isinstance(out, tuple) else out).clone()
            h[:, -1] = edited
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handle = hooked.model.model.layers[1].register_forward_hook(put)
        try:
            ref = hooked.model(input_ids=base).logits
        finally:
            handle.remove()
    assert (got - ref).abs().max() < 1e-12
    assert no_hooks_anywhere(hooked)


@pytest.mark.user_errors
def test_a_sourced_kind_in_a_sum_is_refused_with_the_fix(hooked):
    with pytest.raises(ValueError, match="on_conflict='sum' cannot hold patch:.*vanilla.*on_conflict='sequence'"):
        reftlab.compose(
            {"patch": at_layer1(hooked, {"kind": "vanilla"}), "steer": loreft(hooked)}, hooked, on_conflict="sum"
        )


@pytest.mark.user_errors
def test_routing_and_generation_name_the_missing_source(hooked):
    vanilla = at_layer1(hooked, {"kind": "vanilla"})
    with pytest.raises(ValueError, match="route: 'patch' holds a sourced kind \\(vanilla\\).*SourceBatch"):
        reftlab.route({"patch": vanilla, "steer": loreft(hooked)}, hooked)
    with pytest.raises(ValueError, match="vanilla patches from a source"):
        reftlab.generate(vanilla, ["hello"], max_new_tokens=2)
    assert no_hooks_anywhere(hooked)


def test_sourceless_ablations_route_beside_refts_as_each_example_alone(hooked):
    ids = torch.randint(0, 256, (3, 6))
    mu = site_mean(hooked, ids, None, "blocks.1.hook_resid_post", torch.full((3, 1), 5))
    ablate = at_layer1(hooked, MeanAblation(d_model=hooked.d_model, mean=mu))
    steer = loreft(hooked)
    routed = reftlab.route({"ablate": ablate, "steer": steer}, hooked)
    with torch.no_grad():
        out = routed.run(ids, routes=["ablate", "steer", None]).logits
        alone = [ablate.run(ids[:1]).logits, steer.run(ids[1:2]).logits, hooked.model(input_ids=ids[2:]).logits]
    assert (out - torch.cat(alone)).abs().max() < 1e-12
