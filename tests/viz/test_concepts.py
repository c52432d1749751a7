"""The concept report: one self-contained HTML file whose figures all render in headless Chromium."""

import re

import pytest
import torch
from _chromium import render, scan_figures
from helpers import REPO

import reftlab
from reftlab.concepts import ConceptConfig, ReftR1Config, SteerConfig, fit_concepts
from reftlab.viz import auroc_bars, cosine_heatmap, roc_curves, steering_curves, write_concept_report

EXAMPLES = REPO / "examples" / "concepts"


@pytest.fixture(scope="module")
def run():
    torch.manual_seed(0)
    hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
    config = ConceptConfig(
        layer=1,
        methods=("diffmean", "probe", "reft_r1"),
        reft_r1=ReftR1Config(max_steps=1, progress=False),
        steer=SteerConfig(alphas=(1.0, 4.0), n_prompts=4, max_new_tokens=4),
    )
    return fit_concepts(hooked, EXAMPLES / "train.csv", eval=EXAMPLES / "eval.csv", config=config, progress=False)


def test_figures_cover_every_concept_and_method(run):
    bars = auroc_bars(run.results)
    assert {t.name for t in bars.data} == {"diffmean", "probe", "reft_r1"} and len(bars.data) == 6
    roc = roc_curves(run)
    assert len([t for t in roc.data if t.name]) == 4 * 3 * 2  # concepts x methods x (negatives, hard)
    curves = steering_curves(run.steering)
    assert len(curves.data) == 4 * 3 * (4 + 1)  # concepts x methods x (4 proxies + the chosen marker)
    heat = cosine_heatmap(run.directions)
    z = heat.data[0].z
    assert len(z) == 12 and all(abs(z[i][i] - 1) < 1e-6 for i in range(12))


def test_the_report_is_self_contained_and_renders(run, tmp_path):
    path = write_concept_report(run, tmp_path / "report.html")
    text = path.read_text()
    assert not re.search(r"<script[^>]+src=", text)
    for needle in ("auroc_hard", "food and cooking", "Steered answers", "promotes through the unembedding"):
        assert needle in text, needle
    n_figures = len(re.findall(r'id="reftlab-fig-\d+"', text))
    assert n_figures == 4  # AUROC bars, ROC curves, steering curves, cosine heatmap
    shown = render(path, tmp_path)
    figures, errors = scan_figures(shown.dom, "reftlab-fig-")
    not_drawn = [fid for fid, f in figures.items() if "js-plotly-plot" not in f["class"] or f["svg"] == 0]
    assert len(figures) == n_figures and not not_drawn, not_drawn
    assert errors == "" and shown.console == [], (errors, shown.console)
    with pytest.raises(ValueError, match="must end in .html"):
        write_concept_report(run, tmp_path / "report.txt")


def test_the_dashboard_links_to_a_concept_report(run, tmp_path):
    from reftlab.viz import write_dashboard

    (tmp_path / "concepts").mkdir()
    report = write_concept_report(run, tmp_path / "concepts" / "report.html")
    (tmp_path / "dash").mkdir()
    hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
    reft = reftlab.get_reft_model(
        hooked,
        reftlab.ReftConfig(
            representations={"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 1}
        ),
    )
    page = write_dashboard(
        reft, ["hello there", "ok then"], tmp_path / "dash" / "d.html", concept_report=report, progress=False
    )
    href = re.search(r"<p id='reftlab-concept-report'>Concept report: <a href=\"([^\"]+)\"", page.read_text()).group(1)
    assert href == "../concepts/report.html" and (page.parent / href).resolve() == report.resolve()
    with pytest.raises(FileNotFoundError, match="no concept report"):
        write_dashboard(reft, ["hi"], tmp_path / "dash" / "e.html", concept_report=tmp_path / "none.html")
