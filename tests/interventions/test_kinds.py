"""Intervention math, checked by identities and against the paper's and pyreft's formulas."""

import pytest
import torch

import reftlab
from reftlab.interventions import Sourced, build, intervention_class, kinds, orthonormal_rows

D, R = 24, 3
ALL = ["loreft", "noreft", "direft", "nodireft", "consreft", "lobireft"]


def make(kind, **kw):
    return build({"kind": kind, "d_model": D, "rank": R, **kw})


def reference(iv, h):
    """Each kind's formula written out from the paper / pyreft docstrings, without the edit functions."""
    k = iv.kind
    if k == "loreft":
        Rm = iv.R
        return h + (h @ iv.weight.T + iv.bias - h @ Rm.T) @ Rm
    if k == "noreft":
        P = iv.proj
        return h + (h @ iv.weight.T + iv.bias - (h @ P.T + iv.proj_b)) @ P
    if k == "direft":
        return h + (h @ iv.weight.T + iv.bias) @ iv.R
    if k == "nodireft":
        return h + (h @ iv.weight.T + iv.bias) @ iv.proj
    if k == "consreft":
        return h + (iv.bias - h @ iv.R.T) @ iv.R
    if k == "lobireft":
        return h + iv.bias @ iv.R
    raise AssertionError(k)


def test_registry_has_all_six_kinds_and_the_composable_ones():
    causal = [
        k for k in kinds() if issubclass(intervention_class(k), Sourced)
    ]  # tests/interventions/test_causal_kinds.py
    assert sorted([*ALL, "concat_loreft", "simgate", "sum", *causal]) == kinds()


@pytest.mark.parametrize("kind", ALL)
def test_matches_formula(kind):
    iv = make(kind)
    h = torch.randn(2, 5, D)
    torch.testing.assert_close(iv(h), reference(iv, h))


@pytest.mark.parametrize("kind", ALL)
def test_edit_lies_in_subspace_row_space(kind):
    iv = make(kind)
    h = torch.randn(7, D)
    delta = iv(h) - h
    S = iv.subspace()
    assert S.shape == (R, D)
    # Project onto the orthogonal complement of span(S): nothing must remain.
    Q, _ = torch.linalg.qr(S.T)
    residual = delta - (delta @ Q) @ Q.T
    assert residual.abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["loreft", "direft", "consreft", "lobireft"])
def test_orthogonal_kinds_have_orthonormal_subspace(kind):
    S = make(kind).subspace()
    torch.testing.assert_close(S @ S.T, torch.eye(R), atol=1e-6, rtol=0)


def test_loreft_with_w_equal_r_and_zero_bias_is_identity():
    iv = make("loreft")
    with torch.no_grad():
        iv.weight.copy_(iv.R)
        iv.bias.zero_()
    h = torch.randn(4, D)
    torch.testing.assert_close(iv(h), h, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["loreft", "noreft", "direft", "nodireft", "lobireft"])
def test_identity_init_is_exact_and_trainable(kind):
    iv = make(kind, init="identity")
    h = torch.randn(3, 4, D)
    assert torch.equal(iv(h), h)
    loss = (iv(h) - h - 1.0).pow(2).sum()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in iv.parameters())


def test_consreft_cannot_start_as_identity():
    with pytest.raises(ValueError, match="no parameters make it the identity"):
        make("consreft", init="identity")


def test_consreft_pins_subspace_coordinates():
    iv = make("consreft")
    out = iv(torch.randn(6, D))
    torch.testing.assert_close(out @ iv.R.T, iv.bias.expand(6, R), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["loreft", "direft", "nodireft", "lobireft"])
def test_dropout_touches_the_edit_only_and_eval_disables_it(kind):
    iv = make(kind, dropout=0.5)
    h = torch.randn(64, D)
    iv.train()
    out = iv(h)
    delta_full = reference(iv, h) - h
    kept = out - h
    # Every coordinate is either dropped (equal to h) or the edit scaled by 1/(1-p).
    ok = torch.isclose(kept, torch.zeros_like(kept), atol=1e-6) | torch.isclose(kept, 2 * delta_full, atol=1e-5)
    assert ok.all()
    assert (kept.abs() < 1e-7).any()
    iv.eval()
    torch.testing.assert_close(iv(h), reference(iv, h))


@pytest.mark.parametrize("orthogonal", ["qr", "householder"])
@pytest.mark.parametrize("kind", ["loreft", "direft", "consreft", "lobireft"])
def test_r_stays_orthonormal_after_100_adamw_steps_with_weight_decay(kind, orthogonal):
    iv = make(kind, orthogonal=orthogonal)
    opt = torch.optim.AdamW(iv.parameters(), lr=1e-2, weight_decay=0.01)
    for _ in range(100):
        h = torch.randn(16, D)
        loss = (iv(h) - h.flip(-1)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    S = iv.subspace()
    assert torch.linalg.norm(S @ S.T - torch.eye(R)) < 1e-5
    assert S.abs().sum() > 0


@pytest.mark.parametrize("kind", ALL)
def test_no_d_by_d_buffer_and_parameter_count(kind):
    iv = make(kind)
    assert list(iv.buffers()) == []
    assert all(p.numel() <= R * D for p in iv.parameters())
    expected = {
        "loreft": 2 * D * R + R,
        "noreft": 2 * D * R + 2 * R,
        "direft": 2 * D * R + R,
        "nodireft": 2 * D * R + R,
        "consreft": D * R + R,
        "lobireft": D * R + R,
    }[kind]
    assert iv.num_parameters() == expected


def test_loreft_param_count_on_smollm_width():
    assert reftlab.LoReFT(d_model=576, rank=4).num_parameters() == 2 * 576 * 4 + 4


@pytest.mark.parametrize("kind", ALL)
def test_bf16_params_keep_input_dtype(kind):
    iv = make(kind, dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in iv.parameters())
    assert iv(torch.randn(2, D)).dtype == torch.float32
    assert iv(torch.randn(2, D, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_pyreft_constructor_names_build_native_kinds():
    pairs = [
        (reftlab.LoreftIntervention, reftlab.LoReFT),
        (reftlab.NoreftIntervention, reftlab.NoReFT),
        (reftlab.DireftIntervention, reftlab.DiReFT),
        (reftlab.NodireftIntervention, reftlab.NodiReFT),
        (reftlab.ConsreftIntervention, reftlab.ConsReFT),
        (reftlab.LobireftIntervention, reftlab.LobiReFT),
    ]
    for factory, cls in pairs:
        iv = factory(embed_dim=D, low_rank_dimension=R)
        assert type(iv) is cls and iv.d_model == D and iv.rank == R


@pytest.mark.parametrize("kind", ALL)
def test_spec_round_trip_rebuilds_same_kind(kind):
    iv = make(kind)
    again = build(iv.spec())
    assert type(again) is type(iv) and again.spec() == iv.spec()


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="rank=30"):
        make("loreft", rank=30)
    with pytest.raises(ValueError, match="unknown intervention kind 'lorf'.*loreft"):
        build({"kind": "lorf", "d_model": D, "rank": R})
    with pytest.raises(ValueError, match="act='swishy'"):
        make("loreft", act="swishy")
    with pytest.raises(ValueError, match="d_model=24"):
        make("loreft")(torch.randn(2, 10))


def test_orthonormal_rows_spans_input_rows():
    A = torch.randn(R, D)
    S = orthonormal_rows(A)
    # Same row space: projecting A onto span(S) recovers A.
    torch.testing.assert_close(A @ S.T @ S, A, atol=1e-5, rtol=0)
