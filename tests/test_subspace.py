"""Subspace math against known answers: angles of constructed subspaces, far below arccos's reach."""

import math

import pytest
import torch
from helpers import rotated

from reftlab.subspace import orthonormal_basis, overlap, principal_angles


@pytest.mark.parametrize("angles", [[0.0, 90.0], [10.0, 45.0], [30.0, 60.0, 80.0], [1e-6, 0.5, 89.9]])
def test_known_angles(angles):
    a, b = rotated(12, angles)
    got = principal_angles(a, b)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, torch.tensor(sorted(angles), dtype=torch.float64), atol=1e-9, rtol=1e-6)


def test_a_millionth_of_a_degree_is_resolved_where_arccos_is_off_by_percents():
    eps = math.radians(1e-6)
    a, b = (
        torch.eye(3, dtype=torch.float64)[:1],
        torch.tensor([[math.cos(eps), math.sin(eps), 0.0]], dtype=torch.float64),
    )
    via_arccos = math.degrees(math.acos(min(1.0, float(a[0] @ b[0]))))  # cos rounds to 1 - 2^-53
    assert abs(via_arccos - 1e-6) > 1e-7
    assert float(principal_angles(a, b)[0]) == pytest.approx(1e-6, rel=1e-6)


def test_spanning_sets_scaling_and_float32_inputs_give_the_same_angles():
    a, b = rotated(8, [20.0, 70.0])
    mix = torch.tensor([[3.0, -1.0], [0.5, 2.0]], dtype=torch.float64)
    redundant = torch.cat([mix @ b, (b[0] + b[1])[None]])
    assert orthonormal_basis(redundant).shape == (2, 8)
    torch.testing.assert_close(principal_angles(mix @ a, redundant), principal_angles(a, b), atol=1e-9, rtol=0)
    torch.testing.assert_close(principal_angles(a.float(), b.float()), principal_angles(a, b), atol=1e-4, rtol=0)
    assert overlap(a, b) == pytest.approx((math.cos(math.radians(20)) ** 2 + math.cos(math.radians(70)) ** 2) / 2)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match=r"a lives in R\^6 but subspace b in R\^5"):
        principal_angles(torch.ones(1, 6), torch.ones(5))
    with pytest.raises(ValueError, match="all zeros"):
        orthonormal_basis(torch.zeros(2, 6))
