"""Steering: per-row factors in one batch, prompt / generation / both placements, and the proxies."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import as_users_see_it, no_hooks_anywhere

import reftlab
from reftlab.concepts import ConceptDirection, SteerConfig, Steering, steered_generate
from reftlab.concepts.steer import Judge, answer_losses, combine
from reftlab.concepts.sweep import pick_judge
from reftlab.sites import Site

PROMPTS = ["Say something.", "Tell me a story about a cat."]


@pytest.fixture
def model(tok):
    return reftlab.load_model(reftlab.tiny_llama(seed=2), tok)


def _direction(d_model=64, method="diffmean", concept="cats", seed=0, scale=30.0):
    v = torch.randn(d_model, generator=torch.Generator().manual_seed(seed))
    return ConceptDirection(
        concept=concept, method=method, site=Site(hook="blocks.1.hook_resid_post"), reading=v, basis=v, scale=scale
    )


def test_alpha_zero_equals_the_untouched_model_in_every_placement(model):
    plain, _ = steered_generate(model, PROMPTS, [None, None], max_new_tokens=8)
    d = _direction()
    for positions in ("prompt", "generation", "both"):
        got, _ = steered_generate(model, PROMPTS, [(d, 0.0), (d, 0.0)], positions=positions, max_new_tokens=8)
        assert got == plain
    assert no_hooks_anywhere(model)


def test_each_row_gets_its_own_factor_as_if_alone(model):
    d = _direction()
    plan = [(d, 1.0), None, (d, 2.0), (d, 1.0)]
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[1]]
    batch, _ = steered_generate(model, prompts, plan, max_new_tokens=8)
    alone = [steered_generate(model, [p], [s], max_new_tokens=8)[0][0] for p, s in zip(prompts, plan)]
    assert batch == alone
    assert batch[0] != batch[1]  # the factor changes the answer


def test_placements_edit_the_prompt_the_generated_tokens_or_both(model):
    d = _direction()
    _untouched, ids0 = steered_generate(model, PROMPTS[:1], [None], max_new_tokens=8)
    out = {
        p: steered_generate(model, PROMPTS[:1], [(d, 2.0)], positions=p, max_new_tokens=8)[1][0]
        for p in ("prompt", "generation", "both")
    }
    assert out["generation"][0] == ids0[0][0]  # the first token comes from the untouched prompt pass
    assert out["generation"] != ids0[0] and out["prompt"] != ids0[0] and out["both"] != ids0[0]
    steering = Steering(model, [(d, 1.0)], "prompt")
    (b,) = steering.bindings(None, torch.ones(1, 5, dtype=torch.long))
    assert b.positions.tolist() == [[0, 1, 2, 3, 4]] and not b.after_prompt
    (b,) = Steering(model, [(d, 1.0)], "generation").bindings(None, torch.ones(1, 5, dtype=torch.long))
    assert b.positions is None and b.after_prompt
    with pytest.raises(ValueError, match="places its edits itself"):
        steering.bindings("l1", torch.ones(1, 5, dtype=torch.long))
    with as_users_see_it(), pytest.raises(ValueError, match="positions="):  # not a Literal option
        Steering(model, [(d, 1.0)], "everywhere")


def test_answer_losses_equal_the_hf_loss(model, tok):
    prefix = tok("Q: hi A:")["input_ids"]
    answers = [
        tok(" fine thanks", add_special_tokens=False)["input_ids"],
        [],
        tok(" ok", add_special_tokens=False)["input_ids"],
    ]
    got = answer_losses(model, [prefix] * 3, answers)
    for i in (0, 2):
        ids = torch.tensor([prefix + answers[i]])
        labels = torch.tensor([[-100] * len(prefix) + answers[i]])
        with torch.no_grad():
            want = model.hf_model(input_ids=ids, labels=labels).loss
        assert got[i] == pytest.approx(float(want), rel=1e-5)
    assert np.isnan(got[1])


def test_combine_follows_the_formulas():
    base = pd.DataFrame({"fluency_loss": [2.0, 2.0], "relevance_loss": [1.0, 1.0], "distinct": [1.0, 1.0]})
    frame = pd.DataFrame(
        {
            "concept_score": [1.0, 0.5, 0.8],
            "fluency_loss": [2.0, 2.0 + np.log(2), np.nan],
            "relevance_loss": [1.0, 2.0 + np.log(2) - 0.5, np.nan],
            "distinct": [1.0, 0.5, 0.0],
        }
    )
    out = combine(frame, base)
    np.testing.assert_allclose(out["fluency"], [1.0, 0.5 * 0.5, 0.0])
    np.testing.assert_allclose(out["relevance"], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(out["score"], [1.0, 3 / (1 / 0.5 + 1 / 0.25 + 1 / 0.5), 0.0])


def test_judges_calibrate_and_are_another_method():
    d, p, r = _direction(method="diffmean"), _direction(method="probe"), _direction(method="reft_r1")
    assert pick_judge([d, p, r], "cats", "diffmean") is p and pick_judge([d, p, r], "cats", "reft_r1") is d
    with pytest.raises(ValueError, match="different\\* method"):
        pick_judge([d], "cats", "diffmean")
    j = Judge(d, mu_positive=3.0, mu_negative=1.0)
    np.testing.assert_allclose(j.calibrate(np.array([0.0, 2.0, 5.0])), [0.0, 0.5, 1.0])


@pytest.mark.user_errors
def test_steer_config_validates():
    assert SteerConfig(alphas=(2, 0.5, 2)).alphas == (0.5, 2.0)
    with pytest.raises(ValueError, match="alphas"):
        SteerConfig(alphas=(0.0,))
    with pytest.raises(ValueError, match="positions"):
        SteerConfig(positions="middle")
    with pytest.raises(ValueError, match="n_prompts"):
        SteerConfig(n_prompts=1)
