"""Detection: AUROC from ranks equals the pairwise definition and the ROC curve's area; scores pool tokens."""

import math

import numpy as np
import pytest
import torch
from helpers import as_users_see_it

import reftlab
from reftlab.concepts import ConceptDirection, auroc, roc_curve, score, states_of
from reftlab.sites import Site


def _pairwise(pos, neg):
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def test_auroc_equals_the_pairwise_definition_with_ties_and_the_curve_area():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos = rng.integers(0, 6, size=rng.integers(1, 15)).astype(float)
        neg = rng.integers(0, 6, size=rng.integers(1, 15)).astype(float)
        a = auroc(pos, neg)
        assert a == pytest.approx(_pairwise(pos, neg), abs=1e-12)
        fpr, tpr, thr = roc_curve(pos, neg)
        assert np.trapezoid(tpr, fpr) == pytest.approx(a, abs=1e-12)
        assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and math.isinf(thr[0])


def test_auroc_edges():
    assert auroc([2, 3], [0, 1]) == 1.0 and auroc([0, 1], [2, 3]) == 0.0 and auroc([1, 1], [1]) == 0.5
    assert math.isnan(auroc([1.0], [])) and math.isnan(auroc([], [1.0]))
    with pytest.raises(ValueError, match="NaN"):
        auroc([float("nan")], [1.0])
    with pytest.raises(ValueError, match="needs positive and negative"):
        roc_curve([], [1.0])


def test_pooling_max_mean_last_per_text(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(), tok)
    states = states_of(hooked, ["hello there", "ok!", "a longer text here"], "blocks.1.hook_resid_post", progress=False)
    u = torch.randn(hooked.d_model)
    for pooling, reduce in (("max", lambda p: p.max()), ("mean", lambda p: p.mean()), ("last", lambda p: p[-1])):
        got = states.pool(u, pooling)[:, 0]
        for i in range(len(states)):
            proj = states.tokens[states.offsets[i] : states.offsets[i + 1]] @ u
            assert got[i] == pytest.approx(float(reduce(proj)), rel=1e-5, abs=1e-6)
    with as_users_see_it(), pytest.raises(ValueError, match="pooling"):  # not a Literal option
        states.pool(u, "median")
    with pytest.raises(ValueError, match="width"):
        states.pool(torch.randn(3), "max")


def test_score_runs_the_model_at_the_directions_site(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(), tok)
    u = torch.randn(hooked.d_model)
    d = ConceptDirection(concept="c", method="m", site=Site(hook="blocks.2.hook_resid_post"), reading=u, basis=u)
    texts = ["hello there", "a longer text here"]
    states = states_of(hooked, texts, "blocks.2.hook_resid_post", progress=False)
    want = states.pool(d.reading, "max")[:, 0].double().numpy()
    np.testing.assert_allclose(score(d, hooked, texts), want, rtol=1e-6)
    with pytest.raises(TypeError, match="not one string"):
        score(d, hooked, "hello there")
