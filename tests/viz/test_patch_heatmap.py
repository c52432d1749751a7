"""The activation-patching heatmap, built from a real sweep (reftlab.analysis.patch)."""

import plotly.graph_objects as go
import torch

import reftlab
from reftlab.analysis import patch
from reftlab.viz import patch_heatmap


def test_patch_heatmap_has_one_cell_per_layer_and_position():
    hooked = reftlab.load_model(reftlab.tiny_llama(n_layers=2), reftlab.tiny_tokenizer())
    clean = torch.randint(0, 256, (2, 5))
    corrupted = clean.clone()
    corrupted[:, 1] = (clean[:, 1] + 1) % 256
    table = patch(hooked, clean, corrupted, answer=3, wrong=4)
    fig = patch_heatmap(table)
    assert isinstance(fig, go.Figure) and len(fig.data) == 1
    z = fig.data[0].z
    assert len(z) == 2 and len(z[0]) == 5
    expected = table[(table.layer == 1) & (table.position == 1)].recovered.mean()
    assert abs(z[1][1] - expected) < 1e-9
