"""The methods: DiffMean by hand, PCA by SVD, the probe, ReFT-r1's edit and training, given subspaces,
and a direction planted in a tiny random model, recovered."""

import random

import pandas as pd
import pytest
import torch
from helpers import no_hooks_anywhere

import reftlab
from reftlab.concepts import ConceptConfig, FitInput, ProbeConfig, ReftR1Config, fit_concepts, fit_subspace
from reftlab.concepts.methods import fit_pca, fit_probe, fit_reft_r1
from reftlab.concepts.methods.reft_r1 import TopKLatentEdit

POS = ["the cat sat on the mat", "a cat and a kitten", "cats purr softly"]
NEG = ["the tax form is due", "a bus leaves at nine", "file the report"]


def _frame(pos, neg, concept="cats"):
    return pd.DataFrame(
        {
            "text": pos + neg,
            "concept": [concept] * len(pos) + [""] * len(neg),
            "label": ["positive"] * len(pos) + ["negative"] * len(neg),
        }
    )


def test_diffmean_equals_a_direct_computation_by_hand(tok):
    hf = reftlab.tiny_llama(seed=3)
    hooked = reftlab.load_model(hf, tok)
    config = ConceptConfig(layer=2, methods=("diffmean",), steer=None, batch_size=2)
    run = fit_concepts(hooked, _frame(POS, NEG), eval=_frame(POS, NEG), config=config, progress=False)
    (d,) = run.directions

    def token_states(texts):  # the untouched HF model; position 0 is never scored
        rows = []
        with torch.no_grad():
            for t in texts:
                ids = torch.tensor([tok(t)["input_ids"]])
                rows.append(hf(ids, output_hidden_states=True).hidden_states[3][0, 1:].double())
        return torch.cat(rows)

    v = token_states(POS).mean(0) - token_states(NEG).mean(0)
    torch.testing.assert_close(d.reading.double(), v / v.norm(), rtol=0, atol=1e-6)
    assert d.metadata["norm"] == pytest.approx(float(v.norm()), rel=1e-5)
    assert d.site.hook == "blocks.2.hook_resid_post" and d.rank == 1


def test_pca_is_the_top_singular_vector_of_the_centred_positives_oriented_by_the_negatives():
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(50, 8, generator=g) * torch.tensor([1.0, 5.0, 1, 1, 1, 1, 1, 1])  # most variance on axis 1
    neg = torch.randn(40, 8, generator=g) - 3 * torch.tensor([0, 1.0, 0, 0, 0, 0, 0, 0])
    fitted = fit_pca(FitInput(concept="c", hook="h", positive=pos, negative=neg))
    x = pos.double() - pos.double().mean(0)
    top = torch.linalg.svd(x, full_matrices=False).Vh[0]
    assert abs(float(fitted.reading.double() @ top)) == pytest.approx(1.0, abs=1e-6)
    assert float((pos.mean(0) - neg.mean(0)) @ fitted.reading) > 0  # positives project higher
    assert 0 < fitted.metadata["explained_variance"] <= 1


def test_probe_separates_and_l1_makes_it_sparse():
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(200, 16, generator=g)
    neg = torch.randn(200, 16, generator=g)
    pos[:, 3] += 4.0
    dense = fit_probe(FitInput(concept="c", hook="h", positive=pos, negative=neg), ProbeConfig())
    sparse = fit_probe(FitInput(concept="c", hook="h", positive=pos, negative=neg), ProbeConfig(l1=0.05))
    assert dense.metadata["train_accuracy"] > 0.95
    assert int(dense.reading.abs().argmax()) == 3 and float(dense.reading[3]) > 0
    assert int((sparse.reading.abs() < 1e-2).sum()) > int((dense.reading.abs() < 1e-2).sum())
    with pytest.raises(ValueError, match="steps"):
        ProbeConfig(steps=0)
    with pytest.raises(ValueError, match="l1"):
        ProbeConfig(l1=-1)


def test_topk_latent_edit_by_hand():
    edit = TopKLatentEdit(torch.tensor([1.0, 0.0]), k=2)
    h = torch.tensor([[[3.0, 1.0], [1.0, 0.0], [-2.0, 5.0], [2.0, 0.0]]])  # latents 3, 1, 0 (relu), 2
    edit.mask = torch.tensor([[False, True, True, True]])  # position 0 excluded
    out = edit(h)
    m = (2.0 + 1.0) / 2  # mean of the top 2 masked latents
    want = h.clone()
    want[0, 1:, 0] += m
    torch.testing.assert_close(out, want)
    assert float(edit.penalty.detach()) == 0.0  # the one latent outside the top 2 (position 2) is relu(-2) = 0
    edit.mask = None
    with pytest.raises(RuntimeError, match="mask must be set"):
        edit(h)


def test_reft_r1_trains_through_the_model_and_restores_it(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(), tok)
    flags = [p.requires_grad for p in hooked.model.parameters()]
    before = [p.detach().clone() for p in hooked.model.parameters()]
    states = torch.randn(10, hooked.d_model)
    inp = FitInput(
        concept="cats",
        hook="blocks.1.hook_resid_post",
        positive=states,
        negative=states,
        hooked=hooked,
        pairs_positive=[("Say:", t) for t in POS],
        pairs_negative=[("Say:", t) for t in NEG],
    )
    fitted = fit_reft_r1(inp, ReftR1Config(epochs=8, batch_size=3, lr=5e-2, progress=False))
    assert fitted.metadata["steps"] == 16
    assert fitted.metadata["lm_loss_last"] < fitted.metadata["lm_loss_first"]
    assert float(fitted.reading.norm()) == pytest.approx(1.0, abs=1e-6)
    assert [p.requires_grad for p in hooked.model.parameters()] == flags
    assert all(torch.equal(a, b) for a, b in zip(before, hooked.model.parameters()))
    assert all(p.grad is None for p in hooked.model.parameters())
    assert no_hooks_anywhere(hooked)
    with pytest.raises(ValueError, match="max_steps"):
        ReftR1Config(max_steps=0)


def test_a_given_subspace_reads_the_mean_shift_inside_it():
    neg = torch.randn(30, 6, generator=torch.Generator().manual_seed(0))
    pos = neg + torch.tensor([2.0, 1.0, 0, 0, 0, 0])  # the mean shift is exactly (2, 1, 0, ...)
    inp = FitInput(concept="c", hook="h", positive=pos, negative=neg)
    basis = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0, 0]])
    fitted = fit_subspace(inp, basis, "mine")
    torch.testing.assert_close(fitted.reading, torch.tensor([1.0, 0, 0, 0, 0, 0]), atol=1e-6, rtol=0)
    assert fitted.basis.shape == (2, 6)
    assert fitted.metadata["shift_captured"] == pytest.approx(2 / 5**0.5, rel=1e-5)
    with pytest.raises(ValueError, match="orthogonal"):
        fit_subspace(inp, torch.eye(6)[5], "unrelated")


def _planted(tok, strength=3.0, seed=1):
    """A tiny random Llama whose token 'Q' embeds as token 'Z' plus ``strength * v``."""
    hf = reftlab.tiny_llama(seed=0)
    v = torch.randn(hf.config.hidden_size, generator=torch.Generator().manual_seed(seed))
    v = v / v.norm()
    E = hf.get_input_embeddings().weight
    with torch.no_grad():
        E[ord("Q")] = E[ord("Z")] + strength * v
    rng = random.Random(0)
    rows = []
    for _ in range(60):  # negatives are the positives with every Q replaced by Z
        s = [rng.choice("abcdefghijklmnoprstuvwy ") for _ in range(14)]
        for k in rng.sample(range(1, 14), 2):
            s[k] = "Q"
        text = "".join(s)
        rows += [(text, "planted", "positive"), (text.replace("Q", "Z"), "", "negative")]
    return reftlab.load_model(hf, tok), v, pd.DataFrame(rows, columns=["text", "concept", "label"])


def test_a_planted_direction_is_detected_and_recovered(tok):
    # ReFT-r1 is left out: a random model's LM loss knows nothing of the planted token, so its
    # direction follows whatever lowers that loss (measured: cosine -0.3..0.4, AUROC ~0.6). It is
    # checked on the embedded model instead (test_fit.py).
    hooked, v, frame = _planted(tok)
    config = ConceptConfig(
        hook="blocks.0.hook_resid_pre",
        methods=("diffmean", "pca", "probe"),
        probe=ProbeConfig(l2=10.0),  # strongly regularised: the probe tends to the mean difference
        steer=None,
    )
    run = fit_concepts(hooked, frame, config=config, progress=False)
    assert (run.results["auroc"] >= 0.9).all(), run.results
    cosine = {d.method: float(d.reading @ v) for d in run.directions}
    assert cosine["diffmean"] >= 0.99 and cosine["pca"] >= 0.99 and cosine["probe"] >= 0.99, cosine
