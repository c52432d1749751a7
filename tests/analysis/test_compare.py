"""The compare table on subspaces with known angles; mean-difference directions."""

import math

import numpy as np
import pytest
import torch
from helpers import no_hooks_anywhere

import reftlab
from reftlab.analysis import compare, mean_difference_direction, orthonormal_basis, overlap, principal_angles, subspaces


def _e(i, d=6):
    v = torch.zeros(d, dtype=torch.float64)
    v[i] = 1.0
    return v


def _known(d=6):
    c30, s30, c60, s60 = (
        math.cos(math.radians(30)),
        math.sin(math.radians(30)),
        math.cos(math.radians(60)),
        math.sin(math.radians(60)),
    )
    a = torch.stack([_e(0, d), _e(1, d)])
    b = torch.stack([c30 * _e(0, d) + s30 * _e(2, d), c60 * _e(1, d) + s60 * _e(3, d)])
    return a, b


def test_compare_table_is_symmetric_with_a_unit_diagonal_and_accepts_interventions():
    iv = reftlab.LoReFT(d_model=6, rank=2)
    a, b = _known()
    df = compare({"iv": iv, "a": a, "b": b, "probe": np.ones(6)})
    assert len(df) == 16
    diag = df[df.a == df.b]
    assert np.allclose(diag.overlap, 1.0) and np.allclose(diag.angle_0, 0.0, atol=1e-6)
    ab = df[(df.a == "a") & (df.b == "b")].iloc[0]
    ba = df[(df.a == "b") & (df.b == "a")].iloc[0]
    assert (ab.angle_0, ab.angle_1) == pytest.approx((30.0, 60.0)) and ba.overlap == pytest.approx(ab.overlap)
    assert np.isnan(df[(df.a == "probe") & (df.b == "a")].iloc[0].angle_1)


def test_wrong_width_and_empty_subspaces_are_clear_errors():
    with pytest.raises(ValueError, match=r"a lives in R\^6 but subspace b in R\^5"):
        principal_angles(_e(0), torch.ones(5))
    with pytest.raises(ValueError, match="all zeros"):
        overlap(torch.zeros(2, 6), _e(0))
    with pytest.raises(ValueError, match="different widths"):
        compare({"x": torch.ones(1, 6), "y": torch.ones(1, 4)})
    with pytest.raises(ValueError, match=r"expected \[k, d_model\]"):
        orthonormal_basis(torch.ones(2, 3, 4))


def test_two_layers_of_one_reft_compare_through_subspaces(tiny_hooked):
    reft = reftlab.get_reft_model(
        tiny_hooked,
        reftlab.ReftConfig(
            representations=[
                {"layer": 0, "component": "block_output", "kind": "loreft", "rank": 2},
                {"layer": 3, "component": "block_output", "kind": "loreft", "rank": 2},
            ]
        ),
    )
    subs = subspaces(reft, prefix="run1/")
    assert list(subs) == [f"run1/{k}" for k in reft.interventions]
    R = next(iter(reft.interventions.values())).R.detach()
    torch.testing.assert_close(
        principal_angles(subs["run1/layer_0_comp_block_output#0"], R),
        torch.zeros(2, dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )


def test_mean_difference_direction_matches_a_direct_computation(tiny_hooked):
    pos, neg = ["good day", "great"], ["bad day!", "awful", "meh"]
    hook = "blocks.2.hook_resid_post"
    got = mean_difference_direction(tiny_hooked, pos, neg, hook, positions="l1", batch_size=2)

    def mean_last(prompts):
        vecs = []
        for p in prompts:
            ids = tiny_hooked.tokenizer(p, return_tensors="pt")["input_ids"]
            _, cache = tiny_hooked.run_with_cache(ids, names_filter=lambda n: n == hook)
            vecs.append(cache[hook][0, -1])
        return torch.stack(vecs).mean(0)

    torch.testing.assert_close(got, mean_last(pos) - mean_last(neg), atol=1e-5, rtol=1e-4)
    unit = mean_difference_direction(tiny_hooked, pos, neg, hook, normalize=True)
    assert float(unit.norm()) == pytest.approx(1.0)
    torch.testing.assert_close(mean_difference_direction(tiny_hooked, pos, pos, hook), torch.zeros(tiny_hooked.d_model))
    with pytest.raises(ValueError, match="no hook point 'blocks.9.nope'"):
        mean_difference_direction(tiny_hooked, pos, neg, "blocks.9.nope")
    assert no_hooks_anywhere(tiny_hooked)
