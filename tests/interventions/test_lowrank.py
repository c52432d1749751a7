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
