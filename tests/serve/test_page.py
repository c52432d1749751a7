"""The chat page, in headless Chromium: typed message, streamed reply, read back from the screenshot."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from _cdp import Browser, ocr

import reftlab
from reftlab.serve import Engine
from reftlab.serve.app import create_app
from reftlab.serve.server import background

REPLY = "document.querySelector('#pane-{i} .msg.assistant .text')?.textContent"


def test_the_page_is_one_self_contained_file():
    from importlib import resources

    html = resources.files("reftlab.serve").joinpath("page.html").read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html), "no external scripts, styles or images"
    assert not re.search(r"https?://", html), "nothing from the network"
    assert "/v1/chat/completions" in html and "/v1/models" in html


@pytest.mark.embedded
def test_the_chat_page_streams_the_reply_and_shows_it(smol, tmp_path):
    hooked, _, _ = smol
    cfg = reftlab.ReftConfig(
        representations=[{"layer": 12, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 4}]
    )
    torch.manual_seed(0)
    steer = reftlab.get_reft_model(hooked, cfg).eval()
    question = "What is the capital of France?"
    want = reftlab.generate(hooked, [question], chat_template=True, max_new_tokens=24).texts[0]
    engine = Engine(hooked, {"steer": steer})
    with background(create_app(engine, model_name="smollm2")) as url, Browser(size="1100,700") as browser:
        page = browser.open(url + "/?model=smollm2&compare=steer&temperature=0&max_tokens=24")
        page.wait_for("document.body.dataset.state === 'ready'")
        assert "blocks.12.hook_resid_post" in page.eval("document.querySelector('#pane-1 .sites').textContent")
        page.eval("document.getElementById('input').focus()")
        page.type_text(question)
        page.press("Enter")
        seen = page.watch(REPLY.format(i=0), "document.body.dataset.state === 'done'")
        shown = page.eval(
            "[...document.querySelectorAll('.msg.assistant')].map(e => [e.dataset.chunks, "
            "e.querySelector('.text').textContent, e.querySelector('.info').textContent])"
        )
        shot = page.screenshot(tmp_path / "chat.png")
        stats = engine.stats
    (chunks, text, info), (steer_chunks, steer_text, _) = shown
    assert text == want and "Paris" in want
    assert int(chunks) > 5 and int(steer_chunks) > 5 and steer_text, "the reply arrived token by token"
    partial = [s for s in seen if s and s != want]
    assert partial and all(want.startswith(s) for s in partial), "the page showed the reply growing"
    assert "chunks streamed" in info and stats.requests_finished == 2 and stats.mixed_forwards > 0
    keep = Path(os.environ.get("REFTLAB_ARTIFACTS", Path(tempfile.gettempdir()) / "reftlab-artifacts"))
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "serve-chat.png")
    read = ocr(shot)
    for word in re.findall(r"[A-Za-z]{4,}", want):
        assert word in read, f"{word!r} not in the screenshot's text: {read!r}"
