"""The causal kinds (interchange, DAS, ablations): their formulas written out independently, and identities."""

import pytest
import torch

from reftlab.interventions import (
    BoundlessRotatedSpace,
    BoundlessRotatedSpaceIntervention,
    LowRankRotatedSpace,
    LowRankRotatedSpaceIntervention,
    MeanAblation,
    ResampleAblation,
    RotatedSpace,
    RotatedSpaceIntervention,
    Sourced,
    Vanilla,
    VanillaIntervention,
    ZeroAblation,
    ZeroIntervention,
    build,
    dataset_mean,
    intervention_class,
    kinds,
)

D = 8
CAUSAL = [
    "vanilla",
    "rotated_space",
    "lowrank_rotated_space",
    "boundless_rotated_space",
    "zero_ablation",
    "mean_ablation",
    "resample_ablation",
]


def make(kind):
    extra = {"rank": 3} if kind == "lowrank_rotated_space" else {"n_samples": 5} if kind == "resample_ablation" else {}
    return build({"kind": kind, "d_model": D, "dtype": "float64", **extra})


def test_the_causal_kinds_are_registered_and_sourced():
    assert set(CAUSAL) <= set(kinds())
    for kind in CAUSAL:
        assert issubclass(intervention_class(kind), Sourced)


@pytest.mark.parametrize("kind", CAUSAL)
def test_spec_round_trips(kind):
    iv = make(kind)
    assert build(iv.spec()).spec() == iv.spec()


def test_rotated_formula_and_its_identities():
    torch.manual_seed(0)
    h, s = torch.randn(5, D, dtype=torch.float64), torch.randn(5, D, dtype=torch.float64)
    iv = RotatedSpace(d_model=D, interchange_dim=3, dtype="float64")
    R = iv.R
    # independent: rotate, swap the first k coordinates, rotate back (pyvene's order of operations)
    rb, rs = h @ R.T, s @ R.T
    mixed = torch.cat([rs[:, :3], rb[:, 3:]], dim=1)
    torch.testing.assert_close(iv(h, s), mixed @ R, atol=1e-12, rtol=0)
    iv.set_interchange_dim(D)
    assert (iv(h, s) - Vanilla(d_model=D)(h, s)).abs().max() < 1e-12  # k = d is the vanilla patch
    iv.set_interchange_dim(0)
    assert torch.equal(iv(h, s), h)  # k = 0 is the identity, exactly
    assert torch.allclose(R @ R.T, torch.eye(D, dtype=torch.float64), atol=1e-12)


def test_lowrank_rotated_takes_the_subspace_from_the_source_and_the_rest_from_the_base():
    torch.manual_seed(1)
    h, s = torch.randn(4, D, dtype=torch.float64), torch.randn(4, D, dtype=torch.float64)
    iv = LowRankRotatedSpace(d_model=D, rank=3, dtype="float64")
    R = iv.R
    out = iv(h, s)
    proj = R.T @ R
    torch.testing.assert_close(out @ proj, s @ proj, atol=1e-12, rtol=0)
    torch.testing.assert_close(out - out @ proj, h - h @ proj, atol=1e-12, rtol=0)
    assert iv.subspace().shape == (3, D) and iv.num_parameters() == 3 * D


def test_boundless_formula_matches_pyvene_written_out():
    torch.manual_seed(2)
    h, s = torch.randn(3, D, dtype=torch.float64), torch.randn(3, D, dtype=torch.float64)
    iv = BoundlessRotatedSpace(d_model=D, dtype="float64")
    with torch.no_grad():
        iv.boundary.fill_(0.4)
    iv.set_temperature(0.5)
    R = iv.R
    i = torch.arange(D, dtype=torch.float64)
    m = torch.sigmoid(i / 0.5) * torch.sigmoid((0.4 * D - i) / 0.5)
    expected = ((1 - m) * (h @ R.T) + m * (s @ R.T)) @ R
    torch.testing.assert_close(iv(h, s), expected, atol=1e-12, rtol=0)


def test_ablations():
    h = torch.randn(2, 3, D)
    assert torch.equal(ZeroAblation(d_model=D)(h), torch.zeros_like(h))
    mu = torch.randn(D)
    assert torch.equal(MeanAblation(d_model=D, mean=mu)(h), mu.expand_as(h))
    bank = torch.randn(4, D)
    out = ResampleAblation(d_model=D, bank=bank, seed=3)(h)
    assert all(any(torch.equal(v, b) for b in bank) for v in out.reshape(-1, D))
    again = ResampleAblation(d_model=D, bank=bank, seed=3)(h)
    assert torch.equal(out, again)  # seeded


def test_mean_ablation_with_the_mean_of_a_constant_input_is_a_no_op():
    h = torch.randn(D, dtype=torch.float64)
    data = h.expand(7, D)
    iv = MeanAblation(d_model=D, mean=dataset_mean(data))
    assert torch.equal(iv(h[None]), h[None])


def test_a_sourced_kind_without_a_source_names_the_fix():
    with pytest.raises(ValueError, match="sources=\\[source\\]"):
        Vanilla(d_model=D)(torch.randn(2, D))
    with pytest.raises(ValueError, match="as many source positions"):
        Vanilla(d_model=D)(torch.randn(2, D), torch.randn(3, D))


def test_pyvene_constructor_names_build_native_kinds():
    assert isinstance(VanillaIntervention(embed_dim=D), Vanilla)
    rot = RotatedSpaceIntervention(embed_dim=D, interchange_dim=2)
    assert isinstance(rot, RotatedSpace) and rot.interchange_dim == 2
    low = LowRankRotatedSpaceIntervention(embed_dim=D, low_rank_dimension=2)
    assert isinstance(low, LowRankRotatedSpace) and low.rank == 2
    assert isinstance(BoundlessRotatedSpaceIntervention(embed_dim=D), BoundlessRotatedSpace)
    assert isinstance(ZeroIntervention(embed_dim=D), ZeroAblation)


@pytest.mark.parametrize("kind", ["rotated_space", "lowrank_rotated_space", "boundless_rotated_space"])
def test_rotations_stay_orthonormal_under_adamw_with_weight_decay(kind):
    torch.manual_seed(0)
    iv = make(kind).float()
    if kind == "rotated_space":
        iv.set_interchange_dim(3)  # k = d is the source itself: no gradient reaches R
    opt = torch.optim.AdamW(iv.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(100):
        h, s = torch.randn(6, D), torch.randn(6, D)
        loss = (iv(h, s) - s.flip(0)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    R = iv.R
    assert torch.allclose(R @ R.T, torch.eye(len(R)), atol=1e-5)
