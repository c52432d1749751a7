"""The dashboard: one self-contained HTML file whose figures all render in headless Chromium."""

import html
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


RUN = {  # what `reftlab train` writes beside a checkpoint (run.json), shortened
    "losses": [3.0 * 0.93**i for i in range(40)],
    "before": [{"prompt": p, "text": "Sure! Here is a long answer.", "emoji_fraction": 0.0} for p in PROMPTS[:4]],
    "after": [{"prompt": p, "text": "\U0001f436\U0001f31f\U0001f60a", "emoji_fraction": 1.0} for p in PROMPTS[:4]],
}


def _summary_box(png: Path) -> tuple[int, int]:
    """First and last row of the summary's background (#eef4fa) down its left padding column."""
    from PIL import Image

    img = Image.open(png).convert("RGB")
    w, h = img.size
    px = img.load()
    colour = (0xEE, 0xF4, 0xFA)
    columns = [x for x in range(w // 3) if sum(px[x, y] == colour for y in range(0, h, 4)) > 10]
    assert columns, "no summary background on the first screen"
    x = columns[len(columns) // 2]  # inside the left padding of the summary box
    rows = [y for y in range(h) if px[x, y] == colour]
    return rows[0], rows[-1]


def test_the_summary_is_the_first_screen_and_the_config_is_collapsed_at_the_end(tmp_path):
    hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
    reft = _reft(hooked)
    path = write_dashboard(reft, PROMPTS, tmp_path / "report.html", run=RUN, checkpoint="runs/emoji", progress=False)
    text = path.read_text()
    summary, first_site, config = (text.index(m) for m in ("id='reftlab-summary'", "class='site'", "reftlab-config"))
    assert summary < first_site < config
    assert text.rindex("<details class='config'>") < config  # collapsed, after every site
    for expected in ("2 interventions</b> (direft, loreft)", "f1+l2 (site default)", "rank", "runs/emoji"):
        assert expected in text, expected
    assert "Training loss (40 steps)" in text and "Sure! Here is a long answer." in text
    shown = render(path, tmp_path, size="1280,800")  # one laptop screen
    figures, errors = scan_figures(shown.dom, "reftlab-fig-")
    assert errors == "" and shown.console == []
    assert figures["reftlab-fig-0"]["svg"] > 0  # the loss curve is drawn
    top, bottom = _summary_box(shown.screenshot)
    assert top < 150, f"the summary starts at y={top}, below the title"
    assert bottom < 790, f"the summary runs past the first screen (to y={bottom} of 800)"
    keep = Path(os.environ.get("REFTLAB_ARTIFACTS", Path(tempfile.gettempdir()) / "reftlab-artifacts"))
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shown.screenshot, keep / "dashboard-first-screen.png")


def test_prompts_are_formatted_as_in_training_and_special_tokens_stay_readable(tmp_path):
    from reftlab.analysis import project

    hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
    reft = _reft(hooked)
    reft.prompt_format = reftlab.PromptFormat(chat_template=True)  # as a recipe's checkpoint records it
    df = project(reft, PROMPTS, progress=False)
    first = df[(df.stage == "after") & (df.position == 0)]
    assert set(first.token) == {"<|im_start|>"}  # f1 lands on the template's first token, as in training
    hit = df[(df.stage == "after") & df.intervened & (df.key == next(iter(reft.interventions)))]
    assert set(hit[hit.position == 0].token) == {"<|im_start|>"}
    raw = project(reft, PROMPTS, prompt_format=False, progress=False)
    assert "<|im_start|>" not in set(raw.token)
    path = write_dashboard(reft, PROMPTS, tmp_path / "report.html", progress=False)
    text = path.read_text()
    assert "formatted with the tokenizer&#x27;s chat template (as in training, recorded with the checkpoint)" in text
    shown = render(path, tmp_path)
    # plotly draws every token label as SVG text: special tokens (cut to the narrow cells of these
    # character-level prompts) and line breaks are there, visible, not empty boxes
    labels = [html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", shown.dom)]
    assert "im\u2026" in labels and "\u21b5" in labels
    dec_ticks = re.findall(r'class="ytick"[^>]*>.*?<text[^>]*>([^<]*)</text>', shown.dom)
    assert dec_ticks and all(t.strip() for t in dec_ticks)


def test_cli_positions_for_a_checkpoint_saved_without_them(tmp_path, capsys):
    from reftlab.cli import main

    hf, tok = reftlab.tiny_llama(seed=1), reftlab.tiny_tokenizer()
    hf.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    pyreft_style = reftlab.ReftConfig(  # no positions: pyreft gives them per call
        representations=[
            {"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2},
            {"layer": 2, "component": "block_output", "kind": "loreft", "rank": 2},
        ]
    )
    reftlab.get_reft_model(reftlab.load_model(tmp_path / "base"), pyreft_style).save(tmp_path / "ckpt")
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "r.html"
    argv = ["dashboard", str(tmp_path / "ckpt"), "--prompts", str(tmp_path / "p.txt"), "-o", str(out)]
    argv += ["--model", str(tmp_path / "base")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "has no positions of its own" in err and "--positions SPEC" in err
    assert main([*argv, "--positions", "l1", "f2"]) == 0
    text = out.read_text()
    assert "l1 (given)" in text and "f2 (given)" in text
    assert main([*argv, "--positions", "l1", "f2", "f1"]) == 2
    assert "got positions for 3 interventions, the model has 2" in capsys.readouterr().err


def test_a_patching_sweep_gets_its_section_with_one_heatmap_per_component(tmp_path):
    from reftlab.analysis import PatchSweep

    hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
    reft = _reft(hooked)
    sweep = PatchSweep(
        clean=["the cat sat", "the dog ran"], corrupted=["the cow sat", "the pig ran"], answer="a", wrong="b",
        components=["block_input", "mlp_output"],
    )  # fmt: skip
    path = write_dashboard(reft, PROMPTS[:2], tmp_path / "report.html", patching=sweep, progress=False)
    text = path.read_text()
    section = text[text.index("id='reftlab-patching'") : text.index("reftlab-config")]
    assert section.count("Activation patching (block_input)") == 1
    assert section.count("Activation patching (mlp_output)") == 1
    assert section.count("mean over 2 pairs") == 2
    # a table works as the sweep does, and it is not run again
    table = sweep.run(reft)
    again = write_dashboard(reft, PROMPTS[:2], tmp_path / "again.html", patching=table, progress=False).read_text()
    assert again.count("Activation patching (") == 2


@pytest.mark.user_errors
def test_bad_patching_input_names_the_fix(tmp_path):
    import pandas as pd

    from reftlab.analysis import PatchSweep
    from reftlab.viz.dashboard import patching_items

    with pytest.raises(ValueError, match="lacks columns"):
        patching_items(pd.DataFrame({"layer": [0]}))
    with pytest.raises(ValueError, match="as many of each"):
        PatchSweep(clean=["a b"], corrupted=["a b", "c d"], answer="a")
    hooked = reftlab.load_model(reftlab.tiny_llama(n_layers=2), reftlab.tiny_tokenizer())
    with pytest.raises(ValueError, match="same length"):
        PatchSweep(clean=["a b"], corrupted=["a bcd"], answer="a").run(hooked)
