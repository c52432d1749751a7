"""The pipeline: every method per concept, detection tables, the steering sweep, saved outputs;
and on the embedded SmolLM2, every method detects the example concepts on held-out texts."""

import pandas as pd
import pytest
import torch
from helpers import REPO, no_hooks_anywhere

import reftlab
from reftlab.concepts import (
    ConceptConfig,
    ReftR1Config,
    SteerConfig,
    fit_concepts,
    load_directions,
    read_concepts,
)

EXAMPLES = REPO / "examples" / "concepts"
QUICK_R1 = ReftR1Config(max_steps=2, progress=False)


@pytest.fixture(scope="module")
def tiny_run():
    torch.manual_seed(0)
    hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
    config = ConceptConfig(
        layer=1,
        reft_r1=QUICK_R1,
        steer=SteerConfig(alphas=(1.0, 4.0), n_prompts=4, max_new_tokens=4),
    )
    run = fit_concepts(hooked, EXAMPLES / "train.csv", eval=EXAMPLES / "eval.csv", config=config, progress=False)
    return hooked, run


def test_one_direction_and_one_result_row_per_concept_and_method(tiny_run):
    hooked, run = tiny_run
    concepts = read_concepts(EXAMPLES / "train.csv").concepts
    methods = ["diffmean", "probe", "pca", "reft_r1"]
    assert [(d.concept, d.method) for d in run.directions] == [(c, m) for c in concepts for m in methods]
    assert list(run.results.columns[:4]) == ["concept", "method", "auroc", "auroc_hard"]
    assert run.results["auroc"].between(0, 1).all() and run.results["auroc_hard"].between(0, 1).all()
    assert (run.results[["n_positive", "n_negative", "n_hard"]].values == [12, 12, 8]).all()
    assert len(run.scores) == 16 * 32
    assert set(run.decoded["side"]) == {"top", "bottom"} and len(run.decoded) == 16 * 20
    assert all(d.scale > 0 and d.site.hook == "blocks.1.hook_resid_post" for d in run.directions)
    assert no_hooks_anywhere(hooked)


def test_the_steering_sweep_picks_one_factor_per_concept_and_method(tiny_run):
    _, run = tiny_run
    s = run.steering
    assert set(s["alpha"]) == {0.0, 1.0, 4.0} and set(s["split"]) == {"validation", "test"}
    assert (s["judge"] != s["method"]).all()
    for col in ("concept_score", "fluency", "relevance", "score"):
        assert s[col].between(0, 1).all(), col
    chosen = s[s["selected"]]
    assert len(chosen) == 16 * 2 and (chosen["alpha"] > 0).all()  # one factor, shown on both splits
    assert (chosen.groupby(["concept", "method"])["alpha"].nunique() == 1).all()
    val = s[(s.split == "validation") & (s.alpha > 0)]
    for (concept, method), group in val.groupby(["concept", "method"]):
        picked = group[group.selected]
        assert len(picked) == 1 and float(picked.score.iloc[0]) == group.score.max(), (concept, method)
    assert len(run.generations) == 16 * 3 * 4 and (s["n"] == 2).all()


def test_save_writes_every_table_and_loadable_directions(tiny_run, tmp_path):
    hooked, run = tiny_run
    run.save(tmp_path / "out", model=hooked)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert names == {"directions", "results.csv", "scores.csv", "decoded.csv", "steering.csv", "generations.csv"}
    back = load_directions(tmp_path / "out" / "directions", model=hooked)
    assert [(d.concept, d.method) for d in back] == [(d.concept, d.method) for d in run.directions]
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(results.columns[:4]) == ["concept", "method", "auroc", "auroc_hard"]


def test_held_out_split_subspaces_and_errors(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(), tok)
    reft = reftlab.get_reft_model(
        hooked,
        reftlab.ReftConfig(representations={"layer": 1, "component": "block_output", "kind": "loreft", "rank": 3}),
    )
    config = ConceptConfig(layer=1, methods=("diffmean",), steer=None)
    run = fit_concepts(
        hooked,
        EXAMPLES / "train.csv",
        config=config,
        subspaces={"lo": reft.interventions["layer_1_comp_block_output#0"]},
        progress=False,
    )
    assert "held-out split" in run.eval_data.source
    assert set(run.results["method"]) == {"diffmean", "subspace:lo"}
    assert {d.rank for d in run.directions} == {1, 3}
    with pytest.raises(ValueError, match="unknown"):
        ConceptConfig(layer=1, methods=("lda",))
    with pytest.raises(ValueError, match="needs layer"):
        ConceptConfig(methods=("diffmean",))
    with pytest.raises(ValueError, match="no hook point"):
        fit_concepts(hooked, EXAMPLES / "train.csv", config=ConceptConfig(layer=40, steer=None), progress=False)
    one = ConceptConfig(layer=1, methods=("diffmean",), steer=SteerConfig(n_prompts=2, max_new_tokens=2))
    with pytest.raises(ValueError, match="different\\* method"):
        fit_concepts(hooked, EXAMPLES / "train.csv", config=one, progress=False)
    plain = pd.DataFrame(
        {"text": ["a cat here", "tax forms"] * 4, "concept": ["cats", ""] * 4, "label": ["positive", "negative"] * 4}
    )
    two = ConceptConfig(layer=1, methods=("diffmean", "pca"), steer=SteerConfig(n_prompts=2, max_new_tokens=2))
    with pytest.raises(ValueError, match="steering needs instruction prompts"):
        fit_concepts(hooked, plain, config=two, progress=False)


@pytest.mark.embedded
def test_every_method_detects_the_example_concepts_on_smollm2():
    # ReFT-r1 trains through the model (about a minute per concept on a CPU): docs/concept-subspaces.md
    # reports its numbers from `reftlab concepts fit`; here the three methods that fit on the states.
    hooked = reftlab.load_model()
    config = ConceptConfig(layer=15, methods=("diffmean", "probe", "pca"), steer=None)
    run = fit_concepts(hooked, EXAMPLES / "train.csv", config=config, progress=False)  # held-out: 30%
    print(run.results[["concept", "method", "auroc", "auroc_hard"]].to_string(index=False))
    assert (run.results["auroc"] >= 0.9).all(), run.results


def test_context_reads_texts_as_answers_to_their_instructions(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(), tok)
    steer = SteerConfig(alphas=(1.0,), n_prompts=2, max_new_tokens=3)
    runs = {
        ctx: fit_concepts(
            hooked,
            EXAMPLES / "train.csv",
            config=ConceptConfig(layer=1, methods=("diffmean", "pca"), context=ctx, steer=steer),
            progress=False,
        )
        for ctx in (False, True)
    }
    a, b = (runs[c].directions[0].reading for c in (False, True))
    assert not torch.allclose(a, b)  # the instruction before the text changes its states
    assert set(runs[True].steering["judge"]) == {"diffmean", "pca"} and runs[True].steering["n"].min() == 1
