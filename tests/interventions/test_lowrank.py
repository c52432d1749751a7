"""The constructor the six single-position kinds share: declarations, checks, specs, seeds."""

import pytest
import torch

from reftlab.interventions import Intervention, LowRank, Sourced, build, intervention_class, kinds, orthonormal_rows
from reftlab.interventions.base import linear_init, random_orthonormal

SIX = ["loreft", "noreft", "direft", "nodireft", "consreft", "lobireft"]


def test_every_kind_declares_arity_and_derives_rank_and_none_claims_orthogonal():
    for kind in kinds():
        cls = intervention_class(kind)
        assert isinstance(cls.derives_rank, bool) and isinstance(cls.arity, int)
        assert not hasattr(cls, "orthogonal")
    whole_space = {k for k in kinds() if issubclass(intervention_class(k), Sourced)} - {"lowrank_rotated_space"}
    assert {k for k in kinds() if intervention_class(k).derives_rank} == {"sum", "simgate", *whole_space}
    iv = build({"kind": "concat_loreft", "d_model": 4, "rank": 1, "arity": 3})
    assert iv.arity == 3 and intervention_class("loreft").arity == 1


@pytest.mark.parametrize("kind", SIX)
def test_the_six_kinds_are_lowrank_with_their_parameters_named_as_before(kind):
    iv = build({"kind": kind, "d_model": 6, "rank": 2})
    assert isinstance(iv, LowRank) and isinstance(iv, Intervention)
    names = {n for n, _ in iv.named_parameters()}
    basis = {"rotation"} if iv.basis == "orthonormal" else {"proj"}
    readout = {"weight", "bias"} if iv.readout == "linear" else {"bias"}
    assert names == basis | readout | ({"proj_b"} if kind == "noreft" else set())
    assert build(iv.spec()).spec() == iv.spec()


def test_a_seed_gives_the_values_the_kinds_drew_before_the_shared_constructor():
    # Basis first, then W and b: the order every kind used on its own.
    torch.manual_seed(3)
    rot = random_orthonormal(2, 6, None)
    W, b = linear_init(2, 6, None)
    torch.manual_seed(3)
    iv = build({"kind": "loreft", "d_model": 6, "rank": 2})
    assert torch.equal(iv.rotation, rot) and torch.equal(iv.weight, W) and torch.equal(iv.bias, b)
    torch.manual_seed(3)
    P, c = linear_init(2, 6, None)
    W, b = linear_init(2, 6, None)
    torch.manual_seed(3)
    iv = build({"kind": "noreft", "d_model": 6, "rank": 2})
    assert torch.equal(iv.proj, P) and torch.equal(iv.proj_b, c) and torch.equal(iv.weight, W)


def test_identity_copy_sets_w_to_the_basis_and_b_to_the_projection_bias():
    lo = build({"kind": "loreft", "d_model": 6, "rank": 2, "init": "identity"})
    assert torch.equal(lo.weight, orthonormal_rows(lo.rotation).detach()) and not lo.bias.any()
    no = build({"kind": "noreft", "d_model": 6, "rank": 2, "init": "identity"})
    assert torch.equal(no.weight, no.proj) and torch.equal(no.bias, no.proj_b)
    bare = build({"kind": "noreft", "d_model": 6, "rank": 2, "init": "identity", "proj_bias": False})
    assert bare.proj_b is None and not bare.bias.any()


@pytest.mark.user_errors
@pytest.mark.parametrize(
    ("spec", "phrase"),
    [
        ({"kind": "consreft", "act": "relu"}, "consreft has no activation"),
        ({"kind": "lobireft", "act": "linear"}, "lobireft has no activation"),
        ({"kind": "nodireft", "proj_bias": True}, "nodireft has no projection bias"),
        ({"kind": "loreft", "proj_bias": False}, "loreft has no projection bias"),
        ({"kind": "loreft", "init": "zeros"}, "must be 'random' or 'identity'"),
        ({"kind": "loreft", "init": "identity", "act": "relu"}, "needs act='linear'"),
        ({"kind": "direft", "init": "identity", "act": "sigmoid"}, "needs act(0) = 0"),
        ({"kind": "consreft", "init": "identity"}, "no parameters make it the identity"),
        ({"kind": "loreft", "act": "swish"}, "act='swish' is not supported"),
    ],
)
def test_bad_options_name_the_kind_and_the_fix(spec, phrase):
    with pytest.raises(ValueError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        build({"d_model": 6, "rank": 2, **spec})


def test_a_free_basis_has_no_r_and_says_what_to_use():
    iv = build({"kind": "nodireft", "d_model": 6, "rank": 2})
    assert torch.equal(iv.subspace(), iv.proj)
    assert not hasattr(iv, "R")
    with pytest.raises(AttributeError, match="'NodiReFT' object has no attribute 'R'"):
        _ = iv.R


def _torch_orthogonal(d, r):
    """pyreft's rotate layer: a d x r weight, nn.init.orthogonal_, then torch's orthogonal parametrization."""
    holder = torch.nn.Module()
    holder.weight = torch.nn.Parameter(torch.empty(d, r))
    torch.nn.init.orthogonal_(holder.weight)
    return torch.nn.utils.parametrizations.orthogonal(holder)


def test_householder_draws_pyreft_init_and_takes_torch_parametrization_steps():
    # Same seed: the same R (and base) as torch's parametrization on pyreft's orthogonal init, then W and b.
    torch.manual_seed(5)
    holder = _torch_orthogonal(12, 3)
    lin = torch.nn.Linear(12, 3)
    torch.manual_seed(5)
    iv = build({"kind": "loreft", "d_model": 12, "rank": 3, "orthogonal": "householder"})
    param = holder.parametrizations.weight
    torch.testing.assert_close(iv.base, param[0].base)
    torch.testing.assert_close(iv.R, holder.weight.T.detach())
    assert torch.equal(iv.weight, lin.weight.detach()) and torch.equal(iv.bias, lin.bias.detach())
    # One Adam step on the same loss moves R exactly as it moves torch's parametrized weight.
    with torch.no_grad():
        iv.reflectors.copy_(param.original)
    h = torch.randn(5, 12)
    opt_a = torch.optim.Adam([param.original], lr=1e-2)
    opt_b = torch.optim.Adam([iv.reflectors], lr=1e-2)
    for _ in range(3):
        (h @ holder.weight).pow(3).sum().backward()
        (h @ iv.R.T).pow(3).sum().backward()
        opt_a.step(), opt_b.step(), opt_a.zero_grad(), opt_b.zero_grad()
    torch.testing.assert_close(iv.R, holder.weight.T.detach(), atol=1e-6, rtol=1e-5)


def test_householder_identity_init_spec_and_checkpoint_round_trip(tmp_path):
    from reftlab.interventions.base import householder_rows

    iv = build({"kind": "loreft", "d_model": 8, "rank": 2, "init": "identity", "orthogonal": "householder"})
    h = torch.randn(4, 8)
    assert torch.equal(iv(h), h)
    assert (
        iv.spec()["orthogonal"] == "householder"
        and "orthogonal" not in build({"kind": "loreft", "d_model": 8, "rank": 2}).spec()
    )
    assert {n for n, _ in iv.named_parameters()} == {"reflectors", "weight", "bias"}
    assert [n for n, _ in iv.named_buffers()] == ["base"]
    torch.testing.assert_close(iv.R, householder_rows(iv.reflectors, iv.base))
    again = build(iv.spec())
    again.load_state_dict(iv.state_dict())
    assert torch.equal(again.R, iv.R)


@pytest.mark.user_errors
def test_orthogonal_is_checked():
    with pytest.raises(ValueError, match="orthogonal='cayley' must be one of 'qr', 'householder'"):
        build({"kind": "loreft", "d_model": 8, "rank": 2, "orthogonal": "cayley"})
    with pytest.raises(ValueError, match="noreft has no orthonormal basis"):
        build({"kind": "noreft", "d_model": 8, "rank": 2, "orthogonal": "householder"})
