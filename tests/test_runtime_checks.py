"""The suite checks annotations at run time; tests of users' errors see the library's own checks."""

import pytest
import torch
from helpers import as_users_see_it
from jaxtyping import TypeCheckError

import reftlab
from reftlab.attach import apply_at_positions
from reftlab.interventions import LoReFT


def test_a_shape_that_contradicts_its_annotation_is_caught_in_the_tests():
    iv = LoReFT(d_model=4, rank=1)
    h = torch.randn(2, 5, 4)
    too_many_rows = torch.zeros(3, 1, dtype=torch.long)  # [batch n] with batch 3 against h's batch 2
    with pytest.raises(TypeCheckError, match="batch"):
        apply_at_positions(h, iv, too_many_rows)
    with as_users_see_it(), pytest.raises(ValueError, match="positions cover 3 examples but the batch has 2"):
        apply_at_positions(h, iv, too_many_rows)


def test_a_wrong_type_is_a_type_error_in_the_tests_and_a_value_error_for_users():
    with pytest.raises(TypeError):  # beartype's TypeCheckError is a TypeError
        reftlab.interventions.build({"kind": "loreft", "d_model": 4, "rank": 1, "init": "zeros"})


@pytest.mark.user_errors
def test_the_user_errors_marker_runs_without_the_checks():
    with pytest.raises(ValueError, match="init='zeros' must be 'random' or 'identity'"):
        reftlab.interventions.build({"kind": "loreft", "d_model": 4, "rank": 1, "init": "zeros"})


def test_an_int_is_a_float_and_a_list_is_a_sequence_as_mypy_reads_them():
    # PEP 484's numeric tower (beartype's is_pep484_tower) and Sequence fields: what YAML and JSON give
    cfg = reftlab.TrainConfig(lr=1, betas=[0.9, 0.999])
    assert cfg.lr == 1 and cfg.betas == (0.9, 0.999)
    with pytest.raises(TypeError):
        reftlab.TrainConfig(lr="1e-3")
