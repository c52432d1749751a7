"""The dashboard: one self-contained HTML file whose figures all render in headless Chromium."""

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from _chromium import render, scan_figures

import reftlab
from reftlab.viz import dashboard_main, write_dashboard

PROMPTS = ["hello there", "ok then", "a longer prompt here", "xyz", "the end"]


def _reft(hooked):
    return reftlab.get_reft_model(
        hooked,
        reftlab.ReftConfig(
            representations=[
                {"layer": 1, "component": "block_output", "positions": "f1+l2", "kind": "loreft", "rank": 2},
                {"layer": 3, "component": "mlp_output", "positions": "l1", "kind": "direft", "rank": 1},
            ]
        ),
    )


@pytest.fixture
def dashboard(tmp_path):
    hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
    reft = _reft(hooked)
    probe = torch.randn(hooked.d_model)
    path = write_dashboard(
        reft, PROMPTS, tmp_path / "report.html", targets=["a"], reference={"probe": probe}, progress=False
    )
    return reft, path


def test_the_file_is_self_contained_and_carries_the_config(dashboard):
    reft, path = dashboard
    text = path.read_text()
    assert not re.search(r"<script[^>]+src=", text), "every script must be inline"
    import plotly.offline

    bundle = plotly.offline.get_plotlyjs()
    assert text.count(bundle) == 1, "plotly.js is inlined exactly once"
    rest = text.replace(bundle, "")
    assert not re.search(r"https?://", rest), "nothing outside plotly.js refers to the network"
    config = re.search(r"<pre id='reftlab-config'>(.*?)</pre>", text, re.S).group(1)
    assert json.loads(config.replace("&quot;", '"').replace("&#x27;", "'")) == reft.config.to_json()
    assert not list(path.parent.glob(".*.tmp")), "the temporary file was renamed away"


def test_every_figure_renders_in_headless_chromium_without_console_errors(dashboard, tmp_path):
    _, path = dashboard
    n_figures = len(re.findall(r'id="reftlab-fig-\d+"', path.read_text()))
    # 2 sites x (heatmap + box) + 2 decode + angle + overlap + attribution (loss, logit['a'])
    assert n_figures == 10
    shown = render(path, tmp_path)
    figures, errors = scan_figures(shown.dom, "reftlab-fig-")
    assert len(figures) == n_figures
    not_drawn = [fid for fid, f in figures.items() if "js-plotly-plot" not in f["class"] or f["svg"] == 0]
    assert not not_drawn, f"figures not drawn: {not_drawn}"
    assert errors == "", errors
    assert shown.console == [], shown.console
    keep = Path(os.environ.get("REFTLAB_ARTIFACTS", Path(tempfile.gettempdir()) / "reftlab-artifacts"))
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shown.screenshot, keep / "dashboard.png")
    print(f"dashboard screenshot: {shown.screenshot} (copied to {keep / 'dashboard.png'})")
    assert shown.screenshot.stat().st_size > 50_000


def test_a_broken_figure_is_reported_on_the_page_and_in_the_console(tmp_path):
    from reftlab.viz.dashboard import _ERROR_CATCHER

    page = tmp_path / "bad.html"

    page.write_text(
        f"<html><head>{_ERROR_CATCHER}</head><body><div id='reftlab-errors'></div>"
        "<script>Plotly.newPlot('nowhere', [])</script></body></html>"
    )
    shown = render(page, tmp_path, budget_ms=2000, size="800,600")
    _, errors = scan_figures(shown.dom, "reftlab-fig-")
    assert "Plotly is not defined" in errors
    assert any("Uncaught" in line for line in shown.console)


def test_dashboard_main_reads_the_prompt_file_and_uses_the_loader(tmp_path):
    hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
    reft = _reft(hooked)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n\n")
    seen = {}

    def loader(ckpt, model):
        seen["args"] = (ckpt, model)
        return reft

    out = dashboard_main(tmp_path / "ckpt", prompts, tmp_path / "r.html", model=hooked, loader=loader, progress=False)
    assert out.is_file() and seen["args"] == (tmp_path / "ckpt", hooked)
    assert "reftlab dashboard: ckpt" in out.read_text()
    with pytest.raises(FileNotFoundError, match="no prompt file"):
        dashboard_main(tmp_path / "ckpt", tmp_path / "missing.txt", tmp_path / "r.html", model=hooked, loader=loader)
    with pytest.raises(ValueError, match="must end in .html"):
        write_dashboard(reft, PROMPTS, tmp_path / "r.txt")


def test_cli_dashboard_from_a_saved_checkpoint(tmp_path):
    from reftlab.cli import main

    hf, tok = reftlab.tiny_llama(seed=1), reftlab.tiny_tokenizer()
    (tmp_path / "base").mkdir()
    hf.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    reft = _reft(reftlab.load_model(tmp_path / "base"))
    reft.save(tmp_path / "ckpt")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "report.html"
    rc = main(
        [
            "dashboard",
            str(tmp_path / "ckpt"),
            "--prompts",
            str(tmp_path / "prompts.txt"),
            "-o",
            str(out),
            "--model",
            str(tmp_path / "base"),
        ]
    )
    assert rc == 0 and out.is_file()
    assert "blocks.1.hook_resid_post" in out.read_text() and "blocks.3.hook_mlp_out" in out.read_text()
    assert len(re.findall(r'id="reftlab-fig-\d+"', out.read_text())) >= 8
    # A prompt file that does not exist is a clear error, before any model is loaded.
    assert main(["dashboard", str(tmp_path / "ckpt"), "--prompts", str(tmp_path / "nope.txt"), "-o", str(out)]) == 2
