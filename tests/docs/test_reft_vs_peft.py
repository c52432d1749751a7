"""docs/reft-vs-peft.md: every python block runs, in order, and prints exactly the text block after it."""

import contextlib
import io
import re

import pytest
from helpers import REPO

DOC = REPO / "docs" / "reft-vs-peft.md"


@pytest.mark.embedded
def test_every_block_runs_and_prints_what_the_page_says(monkeypatch):
    monkeypatch.chdir(REPO)  # the page reads examples/emoji.yaml
    text = DOC.read_text()
    parts = re.findall(r"```(python|text)\n(.*?)```", text, flags=re.S)
    assert sum(kind == "python" for kind, _ in parts) == 6
    assert sum(kind == "text" for kind, _ in parts) == 5
    ns: dict = {}
    printed = ""
    for i, (kind, body) in enumerate(parts):
        if kind == "python":
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                exec(compile(body, f"{DOC}:block{i}", "exec"), ns)
            printed = buf.getvalue()
        else:
            assert printed.strip() == body.strip(), f"block {i} printed:\n{printed}"
            printed = ""
    # the headline numbers are the models' own
    assert ns["one"].num_intervention_parameters() == 4612 and ns["n_lora"] == 230_400
    assert ns["extra_reft"] == 13_824
