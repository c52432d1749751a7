"""Shared pieces of the vLLM serving tests: the vLLM venv, ReFT checkpoints on the embedded SmolLM2,
offline answers through reftlab.generate, and servers started in the vLLM venv."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import torch

import reftlab

REPO = Path(__file__).resolve().parents[1]
VLLM_VENV = Path(os.environ.get("VLLM_VENV", REPO / ".venv-vllm"))

# Strong random edits at three layers: each ReFT changes the greedy text of every prompt below.
SPECS = {
    "lo": {"layer": 10, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 4},
    "di": {"layer": 15, "component": "block_output", "positions": "f1+l2", "kind": "direft", "rank": 2},
    "every": {"layer": 20, "component": "block_output", "positions": "all", "kind": "loreft", "rank": 2},
    "pair": {"layer": 12, "component": "block_output", "positions": "f1+l1", "kind": "concat_loreft", "rank": 2},
}


def vllm_python() -> str:
    if not (VLLM_VENV / ".complete").is_file():
        if os.environ.get("CI") or os.environ.get("REFTLAB_REQUIRE_VLLM"):  # make test sets it
            pytest.fail(f"the vLLM venv is missing at {VLLM_VENV}: `make test` builds it (make vllm-venv)")
        pytest.skip(f"the vLLM venv is not built at {VLLM_VENV} (make vllm-venv)")
    return str(VLLM_VENV / "bin" / "python")


def make_refts(hooked: reftlab.HookedModel, folder: Path) -> dict[str, reftlab.ReftModel]:
    refts = {}
    for i, (name, spec) in enumerate(SPECS.items()):
        torch.manual_seed(100 + i)
        reft = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[spec])).eval()
        with torch.no_grad():
            for key, p in reft.interventions.named_parameters():
                if not key.endswith("rotation"):  # R keeps orthonormal rows
                    p.mul_(8.0)
        reft.save(folder / name)
        refts[name] = reft
    return refts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(args: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = 420.0):
    """A server process (``args``: a command of the vLLM venv, ``{port}`` filled in); yields its base
    URL once ``/v1/models`` answers; stopped on exit."""
    port = free_port()
    cmd = [a.replace("{port}", str(port)) for a in args]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{url}/v1/models", timeout=2)
                if r.status_code == 200:
                    break
                raise AssertionError(f"/v1/models answered {r.status_code}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not come up in {timeout} s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
