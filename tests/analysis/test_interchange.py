"""Interchange interventions on real (tiny) models: the exact identities on every family, and the call shapes."""

import pytest
import torch
from helpers import arch_families, no_hooks_anywhere

import reftlab
from reftlab.analysis import SourceBatch, site_mean
from reftlab.models import tiny_model, tiny_tokenizer

FAMILIES = arch_families()


def reft(hooked, *ivs, layer=1):
    reps = [{"layer": layer, "component": "block_output", "intervention": iv} for iv in ivs]
    return reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=reps))


# torch's grouped_mm (the MoE experts) has no float64 kernel: these run in float32, where equal
# inputs still give bitwise-equal outputs.
NO_FLOAT64 = {"mixtral", "qwen2_moe", "qwen3_moe"}


def f64(family):
    dtype = torch.float32 if family in NO_FLOAT64 else torch.float64
    m = tiny_model(family, d_model=32, n_layers=2, seed=0, dtype=dtype, **FAMILIES[family])
    return reftlab.load_model(m, tiny_tokenizer())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_identities_hold_exactly_on_every_family(family):
    hooked = f64(family)
    g = torch.Generator().manual_seed(0)
    base, src = torch.randint(0, 256, (2, 6), generator=g), torch.randint(0, 256, (2, 6), generator=g)
    ones = torch.ones_like(base)
    with torch.no_grad():
        plain_src = hooked.model(input_ids=src, attention_mask=ones).logits
        plain_base = hooked.model(input_ids=base, attention_mask=ones).logits
        # a vanilla patch of the whole residual stream at every position reproduces the source's logits
        van = reft(hooked, {"kind": "vanilla"}, layer=0)
        out = van.run(base, positions="all", source=SourceBatch(src)).logits
        assert torch.equal(out, plain_src)
        # a rotated patch with k = d equals the vanilla patch; k = 0 is the untouched model
        rot = reft(hooked, {"kind": "rotated_space"}, layer=0)
        full = rot.run(base, positions="all", source=SourceBatch(src)).logits
        assert torch.equal(full, out)
        next(iter(rot.interventions.values())).set_interchange_dim(0)
        none = rot.run(base, positions="all", source=SourceBatch(src)).logits
        assert torch.equal(none, plain_base)
        # mean ablation with the dataset mean of a constant input is a no-op
        same = base[:1].expand(4, -1)
        last = torch.full((4, 1), base.shape[1] - 1)
        mu = site_mean(hooked, same, None, "blocks.0.hook_resid_post", last)
        abl = reft(hooked, reftlab.interventions.MeanAblation(d_model=hooked.d_model, mean=mu), layer=0)
        kept = abl.run(same, positions="l1").logits
        plain_same = hooked.model(input_ids=same, attention_mask=torch.ones_like(same)).logits
        assert torch.equal(kept, plain_same)  # the mean itself is exact (dataset_mean)
    assert no_hooks_anywhere(hooked)


@pytest.fixture(scope="module")
def hooked():
    return reftlab.load_model(reftlab.tiny_llama(dtype=torch.float64), tiny_tokenizer())


def plain_patch(hooked, base, src, src_pos, base_pos, layer=1):
    """The same patch with a plain PyTorch forward hook on the HF decoder layer (no reftlab)."""
    layers = hooked.model.model.layers
    keep = {}

    def grab(mod, args, out):
        keep["h"] = (out[0] if isinstance(out, tuple) else out).detach().clone()

    handle = layers[layer].register_forward_hook(grab)
    with torch.no_grad():
        hooked.model(input_ids=src)
    handle.remove()

    def put(mod, args, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h.clone()
        for i, (sp, bp) in enumerate(zip(src_pos, base_pos)):
            h[i, bp] = keep["h"][i, sp]
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = layers[layer].register_forward_hook(put)
    try:
        with torch.no_grad():
            return hooked.model(input_ids=base).logits
    finally:
        handle.remove()


def test_pyvene_call_shape_patches_source_positions_into_base_positions(hooked):
    g = torch.Generator().manual_seed(1)
    base, src = torch.randint(0, 256, (2, 7), generator=g), torch.randint(0, 256, (2, 7), generator=g)
    src_pos, base_pos = [[2, 5], [0, 6]], [[3, 6], [1, 4]]
    rm = reft(hooked, reftlab.interventions.VanillaIntervention(embed_dim=hooked.d_model))
    with torch.no_grad():
        _, out = rm(
            {"input_ids": base}, sources=[{"input_ids": src}], unit_locations={"sources->base": ([src_pos], [base_pos])}
        )
        typed = rm.run(base, positions=torch.tensor(base_pos), source=SourceBatch(src, positions=torch.tensor(src_pos)))
    ref = plain_patch(hooked, base, src, src_pos, base_pos)
    assert (out.logits - ref).abs().max() <= 1e-12
    assert torch.equal(out.logits, typed.logits)
    assert no_hooks_anywhere(hooked)


def test_one_side_of_unit_locations_serves_both(hooked):
    base, src = torch.randint(0, 256, (1, 5)), torch.randint(0, 256, (1, 5))
    rm = reft(hooked, {"kind": "vanilla"})
    with torch.no_grad():
        _, a = rm({"input_ids": base}, sources=[{"input_ids": src}], unit_locations={"sources->base": (None, [[[4]]])})
        b = rm.run(base, positions="l1", source=SourceBatch(src))
    assert torch.equal(a.logits, b.logits)


def test_the_source_run_stops_at_the_deepest_site(hooked):
    calls = []
    handle = hooked.model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    top = hooked.model.model.layers[-1].register_forward_hook(lambda *a: calls.append("top"))
    try:
        rm = reft(hooked, {"kind": "vanilla"})
        with torch.no_grad():
            rm.run(torch.randint(0, 256, (1, 5)), positions="l1", source=SourceBatch(torch.randint(0, 256, (1, 5))))
    finally:
        handle.remove()
        top.remove()
    assert calls == ["top", 1]  # the base run only: the source run never reached the last layer


def test_sourced_and_reft_interventions_run_together(hooked):
    base, src = torch.randint(0, 256, (1, 5)), torch.randint(0, 256, (1, 5))
    cfg = reftlab.ReftConfig(
        representations=[
            {"layer": 0, "component": "block_output", "intervention": {"kind": "loreft", "rank": 2}},
            {"layer": 2, "component": "block_output", "intervention": {"kind": "vanilla"}},
        ]
    )
    rm = reftlab.get_reft_model(hooked, cfg)
    with torch.no_grad():
        both = rm.run(base, positions="all", source=SourceBatch(src)).logits
        plain_src = hooked.model(input_ids=src).logits
    # the vanilla patch above the LoReFT overwrites everything it did: the source's logits
    assert (both - plain_src).abs().max() <= 1e-12


def test_no_hook_is_left_after_an_exception(hooked):
    rm = reft(hooked, {"kind": "vanilla"})
    with pytest.raises(ValueError, match="source vectors have shape"):
        rm.run(torch.randint(0, 256, (1, 5)), positions="all", source=SourceBatch(torch.randint(0, 256, (1, 4))))
    assert no_hooks_anywhere(hooked)
    with pytest.raises(ValueError, match="base positions but 2 source positions"):
        rm.run(
            torch.randint(0, 256, (1, 5)),
            positions="l1",
            source=SourceBatch(torch.randint(0, 256, (1, 5)), positions="l2"),
        )
    assert no_hooks_anywhere(hooked)
    with pytest.raises(ValueError, match="patches from a source"):
        rm.run(torch.randint(0, 256, (1, 5)), positions="l1")
    assert no_hooks_anywhere(hooked)


def test_a_source_for_sourceless_interventions_is_refused(hooked):
    rm = reft(hooked, {"kind": "loreft", "rank": 2})
    with pytest.raises(ValueError, match="sourceless: none reads it"):
        rm.run(torch.randint(0, 256, (1, 5)), positions="l1", source=SourceBatch(torch.randint(0, 256, (1, 5))))
    assert no_hooks_anywhere(hooked)
