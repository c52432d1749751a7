"""Figures: built from real analysis tables, returned and never shown."""

import plotly.graph_objects as go
import plotly.io
import pytest
import torch

import reftlab
from reftlab.analysis import attribute, compare, decode, project, subspaces
from reftlab.viz import angle_heatmap, attribution_bars, decode_bars, projection_heatmap, projection_shift

PROMPTS = ["hello there", "ok", "a longer prompt here"]


@pytest.fixture(scope="module")
def tables():
    torch.manual_seed(0)
    hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
    reft = reftlab.get_reft_model(
        hooked,
        reftlab.ReftConfig(
            representations=[
                {"layer": 1, "component": "block_output", "positions": "f1+l1", "kind": "loreft", "rank": 2},
                {"layer": 2, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 1},
            ]
        ),
    )
    return {
        "project": project(reft, PROMPTS, progress=False),
        "decode": decode(reft, k=4, prompts=PROMPTS),
        "compare": compare(subspaces(reft)),
        "attribute": attribute(reft, PROMPTS, targets=["a"], directions=True, progress=False),
    }


@pytest.fixture(autouse=True)
def never_shown(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a figure was shown by side effect")

    monkeypatch.setattr(plotly.io, "show", refuse)
    monkeypatch.setattr(go.Figure, "show", refuse)


def test_projection_heatmap_has_one_cell_per_token_and_marks_intervened_tokens(tables):
    df = tables["project"]
    fig = projection_heatmap(df, "layer_1_comp_block_output#0", "dir_1")
    heat, marks = fig.data
    assert isinstance(fig, go.Figure) and heat.type == "heatmap"
    assert heat.z.shape == (3, len(PROMPTS[2]))
    assert heat.text[1][0] == "o" and heat.text[1][1] == "k"
    assert list(marks.x) == [0, 10, 0, 1, 0, 19]  # f1+l1: first and last token of each prompt
    assert "dir_1" in fig.layout.title.text


def test_projection_shift_has_before_and_after(tables):
    fig = projection_shift(tables["project"], "layer_2_comp_block_output#1")
    assert [t.name for t in fig.data] == ["before", "after"]
    assert set(fig.data[0].x) == {"dir_0"}


def test_angle_decode_and_attribution_figures(tables):
    heat = angle_heatmap(tables["compare"])
    assert heat.data[0].z.shape == (2, 2) and heat.data[0].z[0][0] == pytest.approx(0.0, abs=1e-4)
    ov = angle_heatmap(tables["compare"], "overlap")
    assert ov.data[0].z[1][1] == pytest.approx(1.0)
    bars = decode_bars(tables["decode"], "layer_1_comp_block_output#0")
    assert len(bars.data) == 3 * 2  # dir_0, dir_1, edit x top/bottom
    assert all(len(b.y) == 4 for b in bars.data)
    attr = attribution_bars(tables["attribute"])
    assert list(attr.data[0].y) == [
        "layer_1_comp_block_output#0",
        "layer_1_comp_block_output#0/dir_0",
        "layer_1_comp_block_output#0/dir_1",
        "layer_2_comp_block_output#1",
        "layer_2_comp_block_output#1/dir_0",
    ]
    logit = attribution_bars(tables["attribute"], "logit['a']")
    assert len(logit.data[0].x) == 5


def test_bad_figure_arguments(tables):
    with pytest.raises(ValueError, match="no rows for key 'x'"):
        projection_heatmap(tables["project"], "x")
    with pytest.raises(ValueError, match="has no column 'dir_1'"):
        projection_heatmap(tables["project"], "layer_2_comp_block_output#1", "dir_1")
    with pytest.raises(ValueError, match="no ablations for metric 'acc'"):
        attribution_bars(tables["attribute"], "acc")
    with pytest.raises(ValueError, match="no column 'angle_7'"):
        angle_heatmap(tables["compare"], "angle_7")
