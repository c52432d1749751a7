"""ReftModel: pyreft's calls, interventions at the right positions, nothing elsewhere."""

import copy
import io
from contextlib import redirect_stdout

import pytest
import torch
from helpers import as_users_see_it, no_hooks_anywhere

import reftlab
from reftlab.interventions import Sourced, intervention_class, kinds


def loreft_config(layer=1, rank=4, **kw):
    return reftlab.ReftConfig(
        representations={
            "layer": layer,
            "component": "block_output",
            "low_rank_dimension": rank,
            "intervention": reftlab.LoreftIntervention(embed_dim=64, low_rank_dimension=rank),
            **kw,
        }
    )


def enc_left(tok, prompts):
    tok.padding_side = "left"
    return tok(prompts, return_tensors="pt", padding=True)


def test_get_reft_model_freezes_base_and_prints_pyreft_line(tiny_hooked):
    rm = reftlab.get_reft_model(tiny_hooked, loreft_config())
    assert not any(p.requires_grad for p in rm.model.parameters())
    assert all(p.requires_grad for p in rm.interventions.parameters())
    buf = io.StringIO()
    with redirect_stdout(buf):
        rm.print_trainable_parameters()
    total = sum(p.numel() for p in rm.model.parameters())
    lines = buf.getvalue().splitlines()
    assert lines[0] == "trainable intervention params: 516 || trainable model params: 0"
    assert lines[1].startswith(f"model params: {total:,d} || trainable%: ")
    text = repr(rm)
    assert "blocks.1.hook_resid_post" in text and "loreft rank=4 params=516" in text


def test_get_reft_model_accepts_plain_hf_model(tiny_hf, tok):
    rm = reftlab.get_reft_model(tiny_hf, loreft_config(), tokenizer=tok)
    assert rm.model is tiny_hf and rm.tokenizer is tok


@pytest.mark.parametrize(
    "kind",
    [
        k
        for k in kinds()
        if k not in ("concat_loreft", "simgate", "sum") and not issubclass(intervention_class(k), Sourced)
    ],
)
def test_pyreft_call_applies_formula_at_positions_only(tiny_hf, tok, kind):
    ref = copy.deepcopy(tiny_hf)
    layer = 2
    cfg = reftlab.ReftConfig(
        representations={"layer": layer, "component": "block_output", "intervention": {"kind": kind, "rank": 3}}
    )
    rm = reftlab.get_reft_model(tiny_hf, cfg, tokenizer=tok)
    iv = next(iter(rm.interventions.values()))
    enc = enc_left(tok, ["short", "a longer prompt here"])
    locs = [[[16, 19], [0, 7]]]  # one intervention, two examples, two positions each (none on padding)
    captured = {}
    # The edited residual is read as the next block's input (hooks on the site itself
    # registered earlier would run before the intervention's).
    hooks = [
        (f"blocks.{L}.hook_resid_pre", lambda x, hook: captured.__setitem__(hook.name, x.detach().clone()))
        for L in range(rm.hooked.n_layers)
    ]
    with rm.hooked.hooks(fwd_hooks=hooks):
        _, out = rm(dict(enc), unit_locations={"sources->base": (None, locs)}, labels=enc["input_ids"])
    assert out.loss is not None and out.logits.shape[:2] == enc["input_ids"].shape
    with torch.no_grad():
        hs = ref(**enc, output_hidden_states=True).hidden_states
    edited = captured[f"blocks.{layer + 1}.hook_resid_pre"]
    base = hs[layer + 1]
    for b, row in enumerate(locs[0]):
        for p in range(base.shape[1]):
            if p in row:
                torch.testing.assert_close(edited[b, p], iv(base[b, p]), atol=1e-5, rtol=1e-5)
            else:
                torch.testing.assert_close(edited[b, p], base[b, p], atol=0, rtol=0)
    for L in range(layer + 1):  # layers up to the site's are untouched at every position
        torch.testing.assert_close(captured[f"blocks.{L}.hook_resid_pre"], hs[L], atol=0, rtol=0)
    assert no_hooks_anywhere(rm.hooked)


def test_native_positions_match_pyreft_unit_locations(tiny_hooked, tok):
    rm = reftlab.get_reft_model(tiny_hooked, loreft_config(positions="f1+l1"))
    enc = enc_left(tok, ["ab", "abcdef"])
    idx = reftlab.resolve_positions("f1+l1", enc["attention_mask"])
    _, a = rm(dict(enc), unit_locations={"sources->base": (None, [idx.tolist()])})
    b = rm.run(**enc)  # the site's default positions
    c = rm.run(**enc, positions="f1+l1")
    torch.testing.assert_close(a.logits, b.logits, atol=0, rtol=0)
    torch.testing.assert_close(a.logits, c.logits, atol=0, rtol=0)


def test_missing_positions_is_a_clear_error(tiny_hooked, tok):
    rm = reftlab.get_reft_model(tiny_hooked, loreft_config())
    with pytest.raises(ValueError, match="has no positions: pass positions="):
        rm.run(**enc_left(tok, ["x"]))


def test_eval_turns_dropout_off(tiny_hooked, tok):
    cfg = reftlab.ReftConfig(
        representations={
            "layer": 1,
            "component": "block_output",
            "intervention": {"kind": "loreft", "rank": 4, "dropout": 0.9},
        }
    )
    rm = reftlab.get_reft_model(tiny_hooked, cfg)
    enc = enc_left(tok, ["hello world"])
    rm.train()
    a, b = rm.run(**enc, positions="all").logits, rm.run(**enc, positions="all").logits
    assert not torch.equal(a, b)
    rm.eval()
    a, b = rm.run(**enc, positions="all").logits, rm.run(**enc, positions="all").logits
    assert torch.equal(a, b)


def test_intervention_dtype_follows_the_model_with_float32_master_weights_on_half_models(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(dtype=torch.bfloat16), tok)
    rm = reftlab.get_reft_model(hooked, loreft_config())
    assert all(p.dtype == torch.float32 for p in rm.interventions.parameters())
    out = rm.run(**enc_left(tok, ["hi there"]), positions="l1")
    assert out.logits.dtype == torch.bfloat16
    asked = reftlab.ReftConfig(
        representations={
            "layer": 1,
            "component": "block_output",
            "intervention": {"kind": "loreft", "rank": 4, "dtype": "bfloat16"},
        }
    )
    assert all(p.dtype == torch.bfloat16 for p in reftlab.get_reft_model(hooked, asked).interventions.parameters())
    f64 = reftlab.load_model(reftlab.tiny_llama(dtype=torch.float64), tok)
    assert all(
        p.dtype == torch.float64 for p in reftlab.get_reft_model(f64, loreft_config()).interventions.parameters()
    )


def test_generate_edits_prompt_only_and_is_identity_free_when_detached(tiny_hf, tok):
    ref = copy.deepcopy(tiny_hf)
    cfg = reftlab.ReftConfig(
        representations={
            "layer": 1,
            "component": "block_output",
            "intervention": {"kind": "loreft", "rank": 4, "init": "identity"},
        }
    )
    rm = reftlab.get_reft_model(tiny_hf, cfg, tokenizer=tok)
    enc = enc_left(tok, ["hello", "the quick brown fox"])
    kw = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": tok.pad_token_id}
    last = enc["input_ids"].shape[1] - 1  # left padding: both prompts end at the last column
    _, out = rm.generate(
        dict(enc), unit_locations={"sources->base": (None, [[[last], [last]]])}, intervene_on_prompt=True, **kw
    )
    assert torch.equal(out, ref.generate(**enc, **kw))  # identity intervention: same tokens
    with torch.no_grad():
        iv = next(iter(rm.interventions.values()))
        iv.bias.add_(5.0)
    _, edited = rm.generate(dict(enc), positions="l1", **kw)
    assert not torch.equal(edited, out)
    assert no_hooks_anywhere(rm.hooked)


def test_exception_inside_forward_leaves_no_hook(tiny_hooked, tok):
    rm = reftlab.get_reft_model(tiny_hooked, loreft_config(layer=2))
    enc = enc_left(tok, ["abc"])
    with pytest.raises(ValueError, match="beyond its sequence"):
        rm.run(**enc, positions=torch.tensor([[99]]))
    assert no_hooks_anywhere(rm.hooked)


def test_all_positions_edit_generated_tokens_in_padded_batches_too(tiny_hf, tok):
    cfg = reftlab.ReftConfig(
        representations={
            "layer": 1,
            "component": "block_output",
            "positions": "all",
            "intervention": {"kind": "lobireft", "rank": 4},
        }
    )
    rm = reftlab.get_reft_model(tiny_hf, cfg, tokenizer=tok).eval()
    prompts = ["hi", "a much longer prompt"]
    kw = {"max_new_tokens": 10, "do_sample": False, "pad_token_id": tok.pad_token_id}
    _, batched = rm.generate(dict(enc_left(tok, prompts)), **kw)
    for i, p in enumerate(prompts):
        _, alone = rm.generate(dict(enc_left(tok, [p])), **kw)
        assert torch.equal(batched[i, -10:], alone[0, -10:])


def test_explicit_positions_semantics(tiny_hooked, tok):
    """-1 is an empty slot (exactly as if the slot were absent); -1 everywhere, indices below -1,
    past the input or on padding are errors naming the problem; nothing is left attached."""
    rm = reftlab.get_reft_model(tiny_hooked, loreft_config(layer=2))
    with torch.no_grad():
        for p in rm.interventions.parameters():
            p.add_(0.5 * torch.randn_like(p))
    enc = enc_left(tok, ["ab", "the quick brown fox"])  # example 0 is left-padded
    last = enc["input_ids"].shape[1] - 1
    with torch.no_grad():
        padded = rm.run(**enc, positions=torch.tensor([[last, -1], [last, 3]])).logits
        alone = rm.run(**enc, positions=[[last], [last]]).logits
        both = rm.run(**enc, positions=[[last, last], [last, 3]]).logits
    # (1e-6: the intervention's matmul sees 2 or 3 rows, which changes float rounding)
    torch.testing.assert_close(padded[0], alone[0], atol=1e-6, rtol=1e-6)  # the -1 slot edits nothing
    torch.testing.assert_close(padded[1], both[1], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(padded[1], alone[1])  # position 3 of example 1 was edited
    with torch.no_grad():
        spec = rm.run(**enc, positions="l1").logits
    torch.testing.assert_close(alone, spec, atol=1e-6, rtol=1e-6)  # "l1" is the last token under left padding
    bad = {
        "negative indices are not counted from the end": [[last], [-2]],
        "-1 everywhere, so nothing would be edited": [[-1], [-1]],
        "a padding token": [[0], [last]],
        "beyond its sequence": [[last + 1], [last]],
        "ragged list": [[last], [last, 3]],
        "integer indices": [[1.5], [2.0]],
        "cover 1 examples but the batch has 2": [[last]],
    }
    for phrase, pos in bad.items():  # the library's own messages, as users see them (no runtime type checks)
        with as_users_see_it(), pytest.raises((ValueError, TypeError), match=phrase):
            rm.run(**enc, positions=pos)
        with as_users_see_it(), pytest.raises((ValueError, TypeError), match=phrase):
            rm(dict(enc), unit_locations={"sources->base": (None, [pos])})
    with pytest.raises(ValueError, match="a padding token"):
        rm.generate(dict(enc), positions=[[0], [last]], max_new_tokens=2, pad_token_id=tok.pad_token_id)
    assert no_hooks_anywhere(rm.hooked)


def test_reft_model_meets_the_reft_like_contract_with_declared_fields(tiny_hooked):
    from reftlab.analysis.capture import Tap
    from reftlab.attach import Edit, ReftLike

    rm = reftlab.get_reft_model(tiny_hooked, loreft_config())
    assert isinstance(rm, ReftLike) and rm.origins == {} and rm.merged is False
    assert isinstance(rm.interventions, reftlab.interventions.InterventionDict)
    assert all(isinstance(iv, Edit) for iv in rm.interventions.values()) and isinstance(Tap(), Edit)
    ivs = list(rm.interventions.values())
    labelled = reftlab.ReftModel(tiny_hooked, rm.config, ivs, origins=["run_a"])
    assert labelled.origins == {next(iter(labelled.interventions)): "run_a"}
    with pytest.raises(ValueError, match="2 origins for 1 interventions"):
        reftlab.ReftModel(tiny_hooked, rm.config, ivs, origins=["a", "b"])
    with pytest.raises(TypeError, match="must be an Intervention, got Linear"):
        rm.interventions["extra"] = torch.nn.Linear(2, 2)


def test_with_positions_gives_a_pyreft_style_checkpoint_its_positions(tiny_hooked, tok, tmp_path):
    """Sites saved without positions (pyreft's way) take them from with_positions: the same edit as
    positions= per call, the interventions shared (not copied), and saved with the checkpoint."""
    cfg = reftlab.ReftConfig(
        representations=[
            {"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2},
            {"layer": 2, "component": "block_output", "positions": "f1", "kind": "direft", "rank": 2},
        ]
    )
    torch.manual_seed(0)
    rm = reftlab.get_reft_model(tiny_hooked, cfg)
    with torch.no_grad():
        for p in rm.interventions.parameters():
            p.add_(torch.randn_like(p))
    enc = enc_left(tok, ["ab", "the quick brown fox"])
    with pytest.raises(ValueError, match="has no positions"):
        rm.run(**enc)
    given = rm.with_positions(["f1+l1", None])  # None: the second keeps its own f1
    assert given.positions_used() == dict(zip(rm.interventions, ["f1+l1", "f1"]))
    assert rm.positions_used()[next(iter(rm.interventions))] is None  # the original is unchanged
    assert all(a is b for a, b in zip(given.interventions.values(), rm.interventions.values()))
    with torch.no_grad():
        assert torch.equal(given.run(**enc).logits, rm.run(**enc, positions=["f1+l1", "f1"]).logits)
        assert not torch.equal(given.run(**enc).logits, tiny_hooked.model(**enc).logits)
    given.save(tmp_path / "c")
    back = reftlab.ReftModel.load(tmp_path / "c", tiny_hooked)
    assert back.positions_used() == given.positions_used()
    with torch.no_grad():
        assert torch.equal(back.run(**enc).logits, given.run(**enc).logits)
    assert rm.with_positions("l1").positions_used() == dict.fromkeys(rm.interventions, "l1")
    with pytest.raises(TypeError, match="with_positions takes specs"):
        rm.with_positions(torch.tensor([[1], [3]]))
    with pytest.raises(ValueError, match="cannot parse positions 'last'"):
        rm.with_positions("last")


def test_load_builds_the_class_it_is_called_on_and_every_count_is_one_counter(tiny_hooked, tmp_path):
    """``load`` is a classmethod (a subclass loads as itself); pyreft's counts and the native one
    agree, shared and frozen parameters included."""
    from reftlab.pyreft_compat import parameter_count

    class Mine(reftlab.ReftModel):
        pass

    cfg = reftlab.ReftConfig(
        representations=[
            {"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2, "share": "a"},
            {"layer": 2, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2, "share": "a"},
        ]
    )
    rm = reftlab.get_reft_model(tiny_hooked, cfg)
    rm.save(tmp_path / "c")
    back = Mine.load(tmp_path / "c", tiny_hooked)
    assert type(back) is Mine and type(back.with_positions("f1")) is Mine
    assert type(reftlab.ReftModel.load(tmp_path / "c", tiny_hooked)) is reftlab.ReftModel
    one = next(iter(rm.interventions.values())).num_parameters()
    assert rm.num_intervention_parameters() == rm.count_parameters() == one  # the shared module once
    next(iter(rm.interventions.values())).bias.requires_grad_(False)
    assert rm.count_parameters() == rm.num_intervention_parameters(trainable=True) == one - 2
    assert rm.count_parameters(include_model=True) == one - 2  # the base is frozen
    assert parameter_count(rm.model) == sum(p.numel() for p in rm.model.parameters())
