"""Composition: multi-layer plans with shared weights, composing trained ReFTs, conflicts, round trips."""

import io
import json
import warnings
from contextlib import redirect_stdout

import pytest
import torch
from composition_helpers import perturb
from helpers import rotated
from safetensors.torch import load_file, save_file

import reftlab
from reftlab.interventions import LoReFT


@pytest.fixture
def hooked(tok):
    return reftlab.load_model(reftlab.tiny_llama(seed=0), tok)


def reft_at(hooked, layer, positions="l1", rank=2, seed=0, kind="loreft"):
    torch.manual_seed(seed)
    cfg = reftlab.ReftConfig(
        representations=[
            {
                "layer": layer,
                "component": "block_output",
                "positions": positions,
                "intervention": {"kind": kind, "rank": rank},
            }
        ]
    )
    reft = reftlab.get_reft_model(hooked, cfg)
    perturb(reft.interventions, seed=seed + 1)
    return reft


def batch(tok):
    tok.padding_side = "right"
    return tok(["one prompt", "and another one"], return_tensors="pt", padding=True)


def logits_with(hooked, bindings, enc):
    with torch.no_grad(), reftlab.attach(hooked, bindings):
        return hooked.model(**enc).logits


def test_for_layers_share_weights_counts_and_trains_once(hooked, tok):
    per = 2 * 64 * 2 + 2
    split = reftlab.for_layers("all", n_layers=4, rank=2, positions="f1+l1")
    shared = reftlab.for_layers("all", n_layers=4, rank=2, positions="f1+l1", share_weights=True)
    assert len(split.representations) == len(shared.representations) == 8
    rs, rh = reftlab.get_reft_model(hooked, split), reftlab.get_reft_model(hooked, shared)
    assert rs.num_intervention_parameters() == 8 * per
    assert rh.num_intervention_parameters() == 4 * per  # each shared module counted once
    ivs = list(rh.interventions.values())
    assert all(ivs[2 * i] is ivs[2 * i + 1] for i in range(4))
    assert "shares layer_0_comp_block_output#0's params" in repr(rh)
    buf = io.StringIO()
    with redirect_stdout(buf):
        rh.print_trainable_parameters()
    assert buf.getvalue().startswith(f"trainable intervention params: {4 * per:,d} ")
    params = list(rh.interventions.parameters())
    assert len(params) == len({id(p) for p in params}) == 12  # AdamW sees each tensor once
    # Both position groups feed the shared module's gradient; one optimizer step moves it once.
    enc = batch(tok)
    iv = ivs[0]
    only = []
    for keep in ("layer_0_comp_block_output#0", "layer_0_comp_block_output#1"):
        rh.zero_grad()
        b = [
            x
            for k, x in zip(rh.interventions, rh.bindings(None, enc["attention_mask"]))
            if k == keep or not k.startswith("layer_0")
        ]
        with reftlab.attach(hooked, b):
            hooked.model(**enc, labels=enc["input_ids"]).loss.backward()
        only.append(iv.weight.grad.clone())
    assert only[0].abs().sum() > 0 and only[1].abs().sum() > 0 and not torch.allclose(only[0], only[1])
    opt = torch.optim.SGD(rh.interventions.parameters(), lr=1.0)
    before = iv.weight.detach().clone()
    opt.step()  # grad = only the l1 group's (the last backward): the step is -grad, not -2 grad
    torch.testing.assert_close(iv.weight.detach(), before - only[1])
    # share groups survive the config's JSON
    again = reftlab.ReftConfig.from_json(json.loads(json.dumps(shared.to_json())))
    assert [r.share for r in again.representations] == [r.share for r in shared.representations]
    assert reftlab.get_reft_model(hooked, again).num_intervention_parameters() == 4 * per


def test_parse_layers():
    assert reftlab.parse_layers("3;9;18") == [3, 9, 18]
    assert reftlab.parse_layers([1, 2], n_layers=4) == [1, 2]
    with pytest.raises(ValueError, match="needs n_layers"):
        reftlab.parse_layers("all")
    with pytest.raises(ValueError, match="bad ones \\[7\\]"):
        reftlab.parse_layers("1;7", n_layers=4)


def test_conflict_is_an_error_naming_both(hooked):
    a, b = reft_at(hooked, 1, "l1", seed=0), reft_at(hooked, 1, "f1+l1", seed=1)
    with pytest.raises(
        ValueError, match=r"emoji:layer_1_comp_block_output#0 .* and french:layer_1_comp_block_output#0"
    ):
        reftlab.compose({"emoji": a, "french": b}, hooked)
    # first-k and last-k sites, or different hooks, do not collide
    c = reft_at(hooked, 1, "f2", seed=2)
    d = reft_at(hooked, 2, "l1", seed=3)
    reftlab.compose({"a": a, "c": c, "d": d}, hooked)


def test_disjoint_composition_equals_all_bindings(hooked, tok):
    a, d = reft_at(hooked, 1, "l1", seed=0), reft_at(hooked, 2, "all", seed=3)
    both = reftlab.compose([a, d], hooked)
    enc = batch(tok)
    expect = logits_with(hooked, a.bindings(None, enc["attention_mask"]) + d.bindings(None, enc["attention_mask"]), enc)
    with torch.no_grad():
        got = both.run(enc["input_ids"], enc["attention_mask"]).logits
    torch.testing.assert_close(got, expect, atol=0, rtol=0)
    assert both.num_intervention_parameters() == a.num_intervention_parameters() + d.num_intervention_parameters()


def test_sequence_follows_order_and_sum_adds_edits(hooked, tok):
    a, b = reft_at(hooked, 1, "l1", seed=0), reft_at(hooked, 1, "l1", seed=1)
    enc = batch(tok)
    mask = enc["attention_mask"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two random rank-2 subspaces of a 64-d space do not overlap
        ab = reftlab.compose({"a": a, "b": b}, hooked, on_conflict="sequence")
        ba = reftlab.compose({"a": a, "b": b}, hooked, on_conflict="sequence", order=["b", "a"])
        s = reftlab.compose({"a": a, "b": b}, hooked, on_conflict="sum")
    with torch.no_grad():
        run = {name: r.run(enc["input_ids"], mask).logits for name, r in (("ab", ab), ("ba", ba), ("sum", s))}
    torch.testing.assert_close(
        run["ab"], logits_with(hooked, a.bindings(None, mask) + b.bindings(None, mask), enc), atol=0, rtol=0
    )
    torch.testing.assert_close(
        run["ba"], logits_with(hooked, b.bindings(None, mask) + a.bindings(None, mask), enc), atol=0, rtol=0
    )
    assert not torch.allclose(run["ab"], run["ba"])
    ia, ib = a.interventions["layer_1_comp_block_output#0"], b.interventions["layer_1_comp_block_output#0"]
    h = torch.randn(3, 64)
    only = s.interventions["layer_1_comp_block_output#0"]
    assert only.kind == "sum"
    torch.testing.assert_close(only(h), h + ia.edit(h) + ib.edit(h))
    text = reftlab.describe(ba)
    lines = text.splitlines()
    assert lines[1] == "blocks.1.hook_resid_post @ l1: loreft rank=2 [b]"
    assert lines[2] == "blocks.1.hook_resid_post @ l1: loreft rank=2 [a]"
    assert reftlab.describe(s).splitlines()[1] == "blocks.1.hook_resid_post @ l1: sum rank=4 [a + b]"
    with pytest.raises(ValueError, match="identical sites"):
        reftlab.compose({"a": a, "c": reft_at(hooked, 1, "f1+l1", seed=4)}, hooked, on_conflict="sum")
    with pytest.raises(ValueError, match="must name every composed ReFT"):
        reftlab.compose({"a": a, "b": b}, hooked, on_conflict="sequence", order=["a"])


def test_composed_model_round_trips_like_a_checkpoint(hooked, tok, tmp_path):
    """What issue 4's save does: config JSON + each intervention's state in safetensors."""
    a, b = reft_at(hooked, 1, "l1", seed=0), reft_at(hooked, 1, "l1", seed=1)
    c = reft_at(hooked, 2, "l2", seed=2, kind="concat_loreft")
    composed = reftlab.compose({"a": a, "b": b, "c": c}, hooked, on_conflict="sum")
    cfg_json = json.loads(json.dumps(composed.config.to_json()))
    for key, iv in composed.interventions.items():
        save_file({k: v.contiguous() for k, v in iv.state_dict().items()}, str(tmp_path / f"{key}.safetensors"))
    again = reftlab.get_reft_model(hooked, reftlab.ReftConfig.from_json(cfg_json))
    for key, iv in again.interventions.items():
        iv.load_state_dict(load_file(str(tmp_path / f"{key}.safetensors")), strict=True)
    enc = batch(tok)
    with torch.no_grad():
        x = composed.run(enc["input_ids"], enc["attention_mask"]).logits
        y = again.run(enc["input_ids"], enc["attention_mask"]).logits
    assert torch.equal(x, y)
    assert [iv.kind for iv in again.interventions.values()] == ["sum", "concat_loreft"]


def test_compose_checkpoint_folders_and_save_the_composition_as_one(hooked, tok, tmp_path):
    a, b = reft_at(hooked, 1, "l1", seed=0), reft_at(hooked, 1, "l1", seed=1)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    with pytest.raises(ValueError, match="a.*b|b.*a"):  # same site, same positions: must say how
        reftlab.compose([tmp_path / "a", tmp_path / "b"], hooked)
    from_disk = reftlab.compose([tmp_path / "a", tmp_path / "b"], hooked, on_conflict="sum")
    in_memory = reftlab.compose([a, b], hooked, on_conflict="sum")
    enc = batch(tok)
    with torch.no_grad():
        x = from_disk.run(enc["input_ids"], enc["attention_mask"]).logits
        assert torch.equal(x, in_memory.run(enc["input_ids"], enc["attention_mask"]).logits)
        from_disk.save(tmp_path / "ab")
        again = reftlab.ReftModel.load(tmp_path / "ab", hooked)
        assert torch.equal(x, again.run(enc["input_ids"], enc["attention_mask"]).logits)
    assert [iv.kind for iv in again.interventions.values()] == ["sum"]


def test_interference_warns_with_both_names_and_the_angle(hooked):
    a, b = rotated(64, [12.0, 70.0])
    ia, ib = LoReFT(d_model=64, rank=2), LoReFT(d_model=64, rank=2)
    with torch.no_grad():
        ia.rotation.copy_(a.float())
        ib.rotation.copy_(b.float())

    def cfg(iv):
        return reftlab.ReftConfig(
            representations=[{"layer": 1, "component": "block_output", "positions": "l1", "intervention": iv}]
        )

    ra, rb = reftlab.get_reft_model(hooked, cfg(ia)), reftlab.get_reft_model(hooked, cfg(ib))
    with pytest.warns(
        UserWarning, match=r"layer_1_comp_block_output#0 \[a\] and layer_1_comp_block_output#1 \[b\] .* 12\.0 deg < 30"
    ):
        both = reftlab.compose({"a": ra, "b": rb}, hooked, on_conflict="sequence")
    report = reftlab.interference(both, warn=False)
    assert len(report) == 1 and abs(report.smallest_angle[0] - 12.0) < 1e-2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reftlab.compose({"a": ra, "b": rb}, hooked, on_conflict="sum", interference_threshold=10.0)


def test_nested_specs_in_a_config_need_no_rank(hooked, tok):
    cfg = reftlab.ReftConfig(
        representations=[
            {
                "layer": 1,
                "component": "block_output",
                "positions": "l1",
                "intervention": {
                    "kind": "sum",
                    "children": [{"kind": "loreft", "rank": 2}, {"kind": "direft", "rank": 1}],
                },
            },
            {
                "layer": 2,
                "component": "block_output",
                "positions": "all",
                "intervention": {"kind": "simgate", "child": {"kind": "lobireft", "rank": 3}},
            },
        ]
    )
    reft = reftlab.get_reft_model(hooked, cfg)
    assert [iv.rank for iv in reft.interventions.values()] == [3, 3]
    assert (
        reftlab.ReftConfig.from_json(json.loads(json.dumps(reft.config.to_json()))).to_json() == reft.config.to_json()
    )
    with pytest.raises(ValueError, match="rank=5 but the children's ranks add up to 3"):
        reftlab.get_reft_model(
            hooked,
            reftlab.ReftConfig(
                representations=[
                    {
                        "layer": 1,
                        "component": "block_output",
                        "rank": 5,
                        "intervention": {"kind": "sum", "children": [{"kind": "loreft", "rank": 3}]},
                    }
                ]
            ),
        )


def test_shared_weights_survive_a_checkpoint(hooked, tok, tmp_path):
    rm = reftlab.get_reft_model(
        hooked, reftlab.for_layers("all", n_layers=4, rank=2, positions="f1+l1", share_weights=True)
    )
    perturb(rm.interventions, seed=3)
    rm.save(tmp_path / "shared")
    again = reftlab.ReftModel.load(tmp_path / "shared", hooked)
    ivs = list(again.interventions.values())
    assert all(ivs[2 * i] is ivs[2 * i + 1] for i in range(4))
    assert again.num_intervention_parameters() == rm.num_intervention_parameters()
    enc = batch(tok)
    with torch.no_grad():
        assert torch.equal(rm.run(**enc).logits, again.run(**enc).logits)
