"""project(): one forward per batch, exact before/after projections, tidy output, clear errors."""

import pandas as pd
import pytest
import torch
from helpers import no_hooks_anywhere

import reftlab
from reftlab.analysis import project

PROMPTS = ["hello there", "ok", "a much longer prompt than the others", "xyz"]


def _reft(hooked, reps=None):
    reps = reps or {"layer": 1, "component": "block_output", "positions": "f1+l2", "kind": "loreft", "rank": 3}
    reft = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=reps))
    with torch.no_grad():  # a visible edit: move W away from R
        for iv in reft.interventions.values():
            iv.weight.add_(torch.randn_like(iv.weight))
    return reft


def test_before_matches_the_untouched_model_and_after_moves_only_inside_the_subspace(tiny_hooked):
    reft = _reft(tiny_hooked)
    df = project(reft, PROMPTS, progress=False)
    iv = reft.interventions["layer_1_comp_block_output#0"]
    R = iv.R.detach()
    enc = tiny_hooked.tokenizer(PROMPTS[2], return_tensors="pt")
    _, cache = tiny_hooked.run_with_cache(enc["input_ids"], names_filter=lambda n: n == "blocks.1.hook_resid_post")
    h = cache["blocks.1.hook_resid_post"][0]  # [pos, d_model]
    one = df[df.prompt_id == 2]
    before = one[one.stage == "before"]
    after = one[one.stage == "after"]
    assert list(before.position) == list(range(h.shape[0]))
    torch.testing.assert_close(torch.tensor(before[["dir_0", "dir_1", "dir_2"]].values, dtype=torch.float32), h @ R.T)
    edited = torch.tensor(after.intervened.values)
    assert edited.nonzero().flatten().tolist() == [0, h.shape[0] - 2, h.shape[0] - 1]
    with torch.no_grad():
        want_after = torch.where(edited[:, None], iv(h), h) @ R.T
        want_norm = torch.where(edited, (iv(h) - h).norm(dim=-1), torch.zeros(()))
    torch.testing.assert_close(torch.tensor(after[["dir_0", "dir_1", "dir_2"]].values, dtype=torch.float32), want_after)
    # LoReFT's edit lies in span(R): its norm is the norm of the change in coordinates.
    shift = torch.tensor(after[["dir_0", "dir_1", "dir_2"]].values - before[["dir_0", "dir_1", "dir_2"]].values)
    torch.testing.assert_close(shift.norm(dim=-1).float(), want_norm, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(after.edit_norm.values), want_norm)
    assert no_hooks_anywhere(tiny_hooked)


def test_one_forward_per_batch_stopping_after_the_site_and_padding_does_not_change_values(tiny_hooked):
    from reftlab.models.arch import get_module

    reft = _reft(tiny_hooked)
    calls, above = [], []
    blocks = get_module(tiny_hooked.hf_model, tiny_hooked.arch.layers)
    handles = [
        tiny_hooked.model.register_forward_pre_hook(lambda m, a: calls.append(1)),
        blocks[2].register_forward_pre_hook(lambda m, a: above.append(1)),
    ]
    try:
        batched = project(reft, PROMPTS * 3, batch_size=5, progress=False)
    finally:
        for h in handles:
            h.remove()
    assert len(calls) == 3  # 12 prompts in batches of 5
    assert above == []  # the site is after block 1: blocks 2.. and the unembedding never ran
    assert no_hooks_anywhere(tiny_hooked)
    alone = project(reft, PROMPTS, batch_size=1, progress=False)
    cols = ["dir_0", "dir_1", "dir_2", "edit_norm"]
    torch.testing.assert_close(
        torch.tensor(batched[batched.prompt_id < 4][cols].values),
        torch.tensor(alone[cols].values),
        atol=1e-5,
        rtol=1e-4,
    )


def test_tidy_columns_tokens_and_every_input_kind(tiny_hooked):
    from datasets import Dataset

    reft = _reft(tiny_hooked)
    a = project(reft, PROMPTS, progress=False)
    b = project(reft, pd.DataFrame({"text": PROMPTS}), column="text", progress=False)
    c = project(reft, Dataset.from_dict({"prompt": PROMPTS}), progress=False)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)
    assert list(a.columns) == [
        "prompt_id",
        "key",
        "hook",
        "layer",
        "component",
        "position",
        "token_id",
        "token",
        "intervened",
        "edit_norm",
        "stage",
        "dir_0",
        "dir_1",
        "dir_2",
    ]
    assert "".join(a[(a.prompt_id == 0) & (a.stage == "before")].token) == PROMPTS[0]
    assert set(a.layer) == {1} and set(a.component) == {"block_output"}
    only = project(reft, PROMPTS, only_intervened=True, progress=False)
    assert only.intervened.all() and len(only) == a.intervened.sum()


def test_several_interventions_in_one_pass_and_a_user_subspace(tiny_hooked):
    reps = [
        {"layer": 0, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 1},
        {"layer": 2, "component": "mlp_output", "positions": "f2", "kind": "noreft", "rank": 2},
    ]
    reft = _reft(tiny_hooked, reps)
    df = project(reft, PROMPTS, progress=False)
    assert sorted(df.key.unique()) == sorted(reft.interventions)
    first = df[df.key == "layer_0_comp_block_output#0"]
    assert first.dir_1.isna().all() and first.dir_0.notna().all()
    d = tiny_hooked.d_model
    u = torch.zeros(d)
    u[3] = 2.0
    mine = project(reft, PROMPTS, key="layer_2_comp_mlp_output#1", subspace=u, progress=False)
    assert list(mine.filter(like="dir_").columns) == ["dir_0"]


def test_bad_inputs_get_clear_errors_and_leave_no_hook(tiny_hooked):
    reft = _reft(tiny_hooked)
    with pytest.raises(ValueError, match="no intervention 'nope'.*layer_1_comp_block_output#0"):
        project(reft, PROMPTS, key="nope")
    with pytest.raises(ValueError, match=r"subspace has shape \(2, 7\); expected \[k, d_model=64\]"):
        project(reft, PROMPTS, subspace=torch.randn(2, 7))
    with pytest.raises(ValueError, match="prompt 1 .* has no tokens"):
        project(reft, ["fine", ""])
    with pytest.raises(ValueError, match="no 'prompt' column"):
        project(reft, pd.DataFrame({"text": PROMPTS}))
    with pytest.raises(ValueError, match="edits no token of any prompt"):
        project(reft, PROMPTS, positions=torch.full((len(PROMPTS), 2), -1), progress=False)
    with pytest.raises(ValueError, match="beyond its sequence"):
        project(reft, PROMPTS, positions=torch.full((len(PROMPTS), 1), 99), progress=False)
    assert no_hooks_anywhere(tiny_hooked)


def test_per_prompt_position_tensors_follow_prompts_through_batching(tiny_hooked):
    reft = _reft(tiny_hooked)
    pos = torch.tensor([[1], [0], [5], [2]])  # one chosen position per prompt
    df = project(reft, PROMPTS, positions=pos, batch_size=2, progress=False)
    got = df[(df.stage == "after") & df.intervened].sort_values("prompt_id")
    assert got.position.tolist() == [1, 0, 5, 2]
    with pytest.raises(ValueError, match=r"must be \[n_prompts=4, n\]"):
        project(reft, PROMPTS, positions=torch.zeros(3, 1, dtype=torch.long), progress=False)


def test_analysis_runs_without_dropout_and_restores_each_modules_mode(tiny_hooked):
    reft = reftlab.get_reft_model(
        tiny_hooked,
        reftlab.ReftConfig(
            representations={
                "layer": 1,
                "component": "block_output",
                "positions": "l1",
                "intervention": {"kind": "loreft", "rank": 2, "dropout": 0.5},
            }
        ),
    )
    reft.interventions.train()  # as during training: interventions train, the base model stays in eval
    a = project(reft, PROMPTS, progress=False)
    b = project(reft, PROMPTS, progress=False)
    pd.testing.assert_frame_equal(a, b)
    assert all(m.training for m in reft.interventions.modules())
    assert not any(m.training for m in tiny_hooked.model.modules())
