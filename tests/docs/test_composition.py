"""docs/composition.md: every python block runs, in order, and the printed plan is the real one."""

import contextlib
import io
import re

from helpers import REPO

DOC = REPO / "docs" / "composition.md"


def test_composition_doc_runs_and_its_plan_is_true():
    text = DOC.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 8
    ns: dict = {}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), ns)
    import reftlab

    (plan,) = re.findall(r"```text\n(.*?)```", text, flags=re.S)
    assert reftlab.describe(ns["both"]) == plan.strip()
    assert "tensor([1., 1., 0., 0.])" in buf.getvalue()
    assert "emoji:layer_1_comp_block_output#0" in buf.getvalue()
