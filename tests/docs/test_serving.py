"""docs/serving.md: its curl commands and Python blocks run against a real server.

The server is the embedded SmolLM2 with two (random) ReFTs named as in the doc; the doc's
``127.0.0.1:8000``/``localhost:8000`` become the test server's address and ``runs/emoji`` a
saved checkpoint.
"""

import contextlib
import io
import json
import re
import shutil
import subprocess

import pytest
import torch
from helpers import REPO

import reftlab
from reftlab.serve import Engine
from reftlab.serve.app import create_app
from reftlab.serve.server import background

DOC = REPO / "docs" / "serving.md"


def _reft(hooked, layer, seed):
    torch.manual_seed(seed)
    spec = {"layer": layer, "component": "block_output", "positions": "f1+l1", "kind": "loreft", "rank": 4}
    return reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[spec])).eval()


@pytest.mark.embedded
def test_the_serving_doc_runs_against_a_server(smol, tmp_path):
    hooked, _, _ = smol
    text = DOC.read_text()
    refts = {"emoji": _reft(hooked, 10, 0), "formal": _reft(hooked, 20, 1)}
    refts["emoji"].save(tmp_path / "emoji")
    engine = Engine(hooked, refts)
    with background(create_app(engine, model_name="smollm2-135m-instruct")) as url:
        host = url.removeprefix("http://")
        (shell,) = [b for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S) if "curl" in b]
        commands = [c.replace("\\\n", " ").strip() for c in shell.split("\ncurl") if c.strip()]
        assert len(commands) == 4
        if shutil.which("curl"):
            for cmd in commands:
                cmd = (cmd if cmd.startswith("curl") else "curl " + cmd).replace("localhost:8000", host)
                out = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120, check=True).stdout
                if "stream" in cmd:
                    assert out.rstrip().endswith("data: [DONE]") and out.count("data: {") > 3
                else:
                    assert "error" not in json.loads(out), out
        blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
        assert len(blocks) == 2
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            ns: dict = {}
            exec(compile(blocks[0].replace("127.0.0.1:8000", host), str(DOC), "exec"), ns)
            assert ns["both"].usage.completion_tokens > 0 and ns["reply"].usage.completion_tokens > 0
            exec(compile(blocks[1].replace("runs/emoji", str(tmp_path / "emoji")), str(DOC), "exec"), {})
    assert engine.stats.requests_failed == 0 and engine.stats.requests_finished >= 5
