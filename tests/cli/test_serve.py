"""``reftlab serve``: arguments, checkpoint validation against the base, and the real command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import torch
from helpers import REPO
from openai import OpenAI
from serve_helpers import chaotic_llama

import reftlab
from reftlab.cli import main
from reftlab.cli.serve import parse_refts

SPEC = {"layer": 1, "component": "block_output", "positions": "f1+l1", "kind": "loreft", "rank": 2}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny base folder, a ReFT checkpoint on it, and one on a different base."""
    root = tmp_path_factory.mktemp("serve-cli")
    hf, tok = chaotic_llama(), reftlab.tiny_tokenizer()
    hf.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    torch.manual_seed(3)
    hooked = reftlab.load_model(root / "base")  # loaded from its folder: the checkpoint records it
    reft = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[SPEC]))
    with torch.no_grad():
        for key, p in reft.interventions.named_parameters():
            if not key.endswith("rotation"):
                p.mul_(40.0)
    reft.save(root / "lo")
    other = reftlab.get_reft_model(
        reftlab.load_model(reftlab.tiny_gpt2(), tok), reftlab.ReftConfig(representations=[SPEC])
    )
    other.save(root / "gpt2-reft")
    return root


def test_reft_arguments_are_checked_by_name():
    assert parse_refts(["a=runs/a", "b=x=y"], "base") == {"a": "runs/a", "b": "x=y"}
    for specs, message in [
        (["runs/a"], "expected NAME=CHECKPOINT"),
        (["=runs/a"], "expected NAME=CHECKPOINT"),
        (["a b=x"], "the name may hold"),
        (["a=x", "a=y"], "given twice"),
        (["base=x"], "has the base model's name"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_refts(specs, "base")


def test_every_checkpoint_is_validated_against_the_base_before_serving(saved, capsys):
    base = str(saved / "base")
    assert main(["serve", "--model", base, "--reft", f"lo={saved / 'lo'}", "--reft", "x=/no/such/dir"]) == 2
    assert "--reft x=/no/such/dir:" in capsys.readouterr().err
    assert main(["serve", "--model", base, "--reft", f"g={saved / 'gpt2-reft'}"]) == 2
    err = capsys.readouterr().err
    assert f"--reft g={saved / 'gpt2-reft'}:" in err and "gpt2" in err.lower()
    assert main(["serve", "--reft", f"g={saved / 'gpt2-reft'}"]) == 2  # no --model: it records no base
    assert f"--reft g={saved / 'gpt2-reft'}:" in capsys.readouterr().err
    assert main(["serve", "--model", base, "--max-batch", "0"]) == 2
    assert "--max-batch 0 must be >= 1" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_serves_until_interrupted(saved):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # no --model: the base is the one the checkpoint records
    cmd = [sys.executable, "-m", "reftlab", "serve", "--name", "tiny"]
    cmd += ["--reft", f"lo={saved / 'lo'}", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        client = OpenAI(base_url=url + "/v1", api_key="-", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny", "lo"]
        out = client.chat.completions.create(
            model="lo", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0
        )
        alone = reftlab.generate(reftlab.ReftModel.load(saved / "lo"), ["Hello"], chat_template=True, max_new_tokens=8)
        assert out.choices[0].message.content == alone.texts[0]
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert "base 'tiny', ReFTs: lo" in output


def test_positions_for_a_checkpoint_saved_without_them(saved, tmp_path, capsys):
    """pyreft's way (no positions saved): refused naming --positions; with them each ReFT is served
    at the given positions (the same edit as the checkpoint saved with them) and the start line says so."""
    from reftlab.cli import build_parser
    from reftlab.cli.serve import load, parse_positions
    from reftlab.serve import Engine

    base = str(saved / "base")
    lo = reftlab.ReftModel.load(saved / "lo")
    rep = {k: v for k, v in SPEC.items() if k != "positions"}
    bare = reftlab.ReftModel(lo.hooked, reftlab.ReftConfig(representations=[rep]), list(lo.interventions.values()))
    bare.save(tmp_path / "bare")
    assert main(["serve", "--model", base, "--reft", f"bare={tmp_path / 'bare'}"]) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("reftlab ")]
    assert f"--reft bare={tmp_path / 'bare'}: intervention" in err and "pass --positions SPEC" in err

    argv = ["serve", "--model", base, "--reft", f"bare={tmp_path / 'bare'}", "--reft", f"lo={saved / 'lo'}"]
    hooked, refts, _ = load(build_parser().parse_args([*argv, "--positions", "bare=f1+l1"]))
    assert [r.positions_used() for r in refts.values()] == [lo.positions_used()] * 2
    Engine(hooked, refts)  # servable: every site has positions
    same = [reftlab.generate(r, ["Hello there"], chat_template=True, max_new_tokens=6).texts for r in refts.values()]
    assert same[0] == same[1]
    with pytest.raises(ValueError, match="no ReFT named 'nope'"):
        parse_positions(["nope=l1"], ["bare", "lo"])
    with pytest.raises(ValueError, match="given twice"):
        parse_positions(["l1", "f1"], ["bare", "lo"])
    assert parse_positions(["l1", "lo=f1,l1"], ["bare", "lo"]) == {"bare": ["l1"], "lo": ["f1", "l1"]}
