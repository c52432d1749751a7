"""README.md: the first example runs as written on the embedded model, offline."""

import contextlib
import io
import re

import pytest
from helpers import REPO

README = REPO / "README.md"


@pytest.mark.embedded
def test_readme_example_runs_as_written():
    example = re.findall(r"## Example\n\n```python\n(.*?)```", README.read_text(), flags=re.S)[0]
    assert 'reftlab.load_model("meta-llama/Llama-3.2-1B-Instruct", dtype="bfloat16")' in example  # a Hub id, shown
    ns: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, str(README), "exec"), ns)
    assert ns["model"].source.ref == "smollm2-135m-instruct"
    assert "trainable intervention params: 4,612" in out.getvalue()
    assert all(p.grad is not None for p in ns["reft"].interventions.parameters())
    assert ns["ids"].shape[1] > ns["enc"]["input_ids"].shape[1]
