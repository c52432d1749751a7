"""The HTTP server, through the official openai client and raw requests (127.0.0.1, a free port)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import OpenAI
from serve_helpers import offline, world

from reftlab.serve import Engine
from reftlab.serve.app import create_app
from reftlab.serve.server import background

ROUTES = {"tiny": (), "lo": ("lo",), "di": ("di",), "every": ("every",)}


@pytest.fixture(scope="module")
def server():
    hooked, refts = world()
    engine = Engine(hooked, refts, max_batch=16)
    with background(create_app(engine, model_name="tiny", default_max_tokens=16)) as url:
        yield url, engine


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def _stats(url):
    return httpx.get(url + "/health").json()["stats"]


def _expected(reference, prompt, model, n, *, chat=True, reft=()):
    hooked, refts = reference
    route = (*ROUTES[model], *reft)  # the model's ReFT, then the request's in the order given
    return hooked.tokenizer.decode(offline(hooked, refts, prompt, route, n, chat=chat))


def test_the_openai_client_chats_and_completes_streaming_and_not(client, reference):
    models = {m.id: m for m in client.models.list().data}
    assert list(models) == ["tiny", "lo", "di", "every"]
    assert models["tiny"].reft is None
    assert models["di"].reft["sites"] == [
        {"hook": "blocks.2.hook_resid_post", "positions": "f1+l2", "kind": "direft", "rank": 2}
    ]
    assert client.models.retrieve("every").reft["sites"][0]["positions"] == "all"

    msgs = [{"role": "user", "content": "Tell me a story"}]
    want = _expected(reference, "Tell me a story", "di", 10)
    chat = client.chat.completions.create(model="di", messages=msgs, max_tokens=10, temperature=0)
    assert chat.choices[0].message.content == want and chat.choices[0].finish_reason == "length"
    assert (chat.usage.completion_tokens, chat.usage.total_tokens) == (10, chat.usage.prompt_tokens + 10)
    chunks = list(
        client.chat.completions.create(
            model="di", messages=msgs, max_tokens=10, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == want and sum(bool(p) for p in pieces) > 3, "tokens arrive one by one"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 10

    want = _expected(reference, "Once upon", "every", 8, chat=False)
    done = client.completions.create(model="every", prompt="Once upon", max_tokens=8, temperature=0)
    assert done.choices[0].text == want and done.usage.completion_tokens == 8
    streamed = client.completions.create(model="every", prompt="Once upon", max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == want

    # composition: the extra field "reft" adds ReFTs, applied after the model's in the order given
    both = client.chat.completions.create(
        model="lo", messages=msgs, max_tokens=8, temperature=0, extra_body={"reft": ["di"]}
    )
    assert both.choices[0].message.content == _expected(reference, "Tell me a story", "lo", 8, reft=("di",))


def test_32_concurrent_requests_over_three_refts_and_the_base_match_offline_answers(server, client, reference):
    url, _ = server
    before = _stats(url)
    jobs = [(f"question {i}: {'why ' * (i % 5)}?", list(ROUTES)[i % 4], 6 + i % 5) for i in range(32)]

    def ask(job):
        prompt, model, n = job
        out = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=n, temperature=0
        )
        return out.choices[0].message.content, out.usage.completion_tokens

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(ask, jobs))
    assert len(answers) == 32
    for (prompt, model, n), (text, used) in zip(jobs, answers):
        assert text == _expected(reference, prompt, model, n), (prompt, model)
        assert used == n
    after = _stats(url)
    assert after["requests_finished"] - before["requests_finished"] == 32
    assert after["mixed_forwards"] > before["mixed_forwards"], "requests for different ReFTs shared forwards"
    assert after["max_routes"] == 4 and after["max_rows"] >= 8
    assert after["running"] == after["waiting"] == 0


GOOD = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
LONG = "x" * 2100  # byte-level tokens: beyond the 2048-token context
BAD = [
    (
        "chat",
        {**GOOD, "model": "gpt-9"},
        404,
        "The model 'gpt-9' does not exist on this server; served models: tiny, lo",
    ),
    ("chat", {**GOOD, "reft": ["lo", "nope"]}, 404, "ReFT 'nope' is not served"),
    ("chat", b'{"model": "tiny", "messages": [', 400, "could not parse the JSON body"),
    ("chat", b"[1, 2]", 400, "must be a JSON object"),
    ("chat", {"messages": GOOD["messages"]}, 400, "you must provide a 'model' parameter"),
    ("chat", {"model": "tiny"}, 400, "you must provide a 'messages' parameter"),
    ("completion", {"model": "tiny"}, 400, "you must provide a 'prompt' parameter"),
    ("chat", {**GOOD, "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role='robot' is not one of"),
    ("chat", {**GOOD, "messages": [{"content": "hi"}]}, 400, "messages[0] must be an object with 'role' and 'content'"),
    ("chat", {**GOOD, "max_tokens": 0}, 400, "max_tokens=0 must be at least 1"),
    ("completion", {"model": "tiny", "prompt": "hi", "max_tokens": -3}, 400, "max_tokens=-3 must be at least 1"),
    ("chat", {**GOOD, "max_tokens": 5000}, 400, "maximum context length is 2048 tokens"),
    ("chat", {**GOOD, "max_tokens": "ten"}, 400, "max_tokens must be an integer"),
    (
        "completion",
        {"model": "tiny", "prompt": LONG, "max_tokens": 1},
        400,
        "the prompt is 2100 tokens; shorten the prompt",
    ),
    ("chat", {**GOOD, "temperature": 3}, 400, "temperature=3 is out of range; give a value in [0, 2]"),
    ("chat", {**GOOD, "top_p": 0}, 400, "top_p=0 keeps no token"),
    ("chat", {**GOOD, "n": 2}, 400, "n=2 is not supported by this server"),
    ("chat", {**GOOD, "logprobs": True}, 400, "logprobs=True is not supported"),
    ("completion", {"model": "tiny", "prompt": ["a", "b"]}, 400, "prompt must be a string (or a list of one string)"),
    ("chat", {**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4 are allowed"),
    ("chat", {**GOOD, "stream": "yes"}, 400, "stream must be true or false"),
    (
        "chat",
        {**GOOD, "stream_options": {"include_usage": True}},
        400,
        "stream_options is only allowed with stream=true",
    ),
    ("chat", {**GOOD, "tools": [{"type": "function"}]}, 400, "tools=[{'type': 'function'}] is not supported"),
    ("chat", {**GOOD, "temprature": 0}, 400, "Unrecognized request argument supplied: temprature"),
]


@pytest.mark.parametrize("endpoint,body,status,message", BAD, ids=[m[:40] for *_, m in BAD])
def test_a_bad_request_gets_an_openai_style_error_and_the_server_goes_on(server, endpoint, body, status, message):
    url, _ = server
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(url + path, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"], error["message"]
    assert error["type"] == "invalid_request_error"
    good = httpx.post(url + "/v1/chat/completions", json=GOOD, timeout=30)
    assert good.status_code == 200 and good.json()["usage"]["completion_tokens"] == 2


def test_unknown_paths_and_methods_are_openai_style_errors(server):
    url, _ = server
    r = httpx.get(url + "/v1/embeddings")
    assert r.status_code == 404 and "no endpoint /v1/embeddings" in r.json()["error"]["message"]
    r = httpx.get(url + "/v1/chat/completions")
    assert r.status_code == 405 and "GET is not allowed" in r.json()["error"]["message"]


def _wait_for(url, key, value, timeout=20.0):
    deadline = time.monotonic() + timeout
    while (stats := _stats(url))[key] < value:
        assert time.monotonic() < deadline, f"{key} stayed {stats[key]} < {value}: {stats}"
        time.sleep(0.05)
    return stats


def test_a_client_that_disconnects_frees_its_slot(server):
    url, _ = server
    before = _stats(url)
    body = {"model": "every", "prompt": "go on", "max_tokens": 2000, "temperature": 0, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
    assert any(line.startswith("data: {") for line in got)
    stats = _wait_for(url, "requests_cancelled", before["requests_cancelled"] + 1)
    assert stats["running"] == 0 and stats["tokens_generated"] - before["tokens_generated"] < 2000
    # not streaming: a client that gives up waiting frees its row too
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/completions", json={**body, "stream": False}, timeout=0.5)
    stats = _wait_for(url, "requests_cancelled", before["requests_cancelled"] + 2)
    assert stats["running"] == 0
    good = httpx.post(url + "/v1/chat/completions", json=GOOD, timeout=30)
    assert good.status_code == 200


def test_health_reports_the_served_models(server):
    url, _ = server
    h = httpx.get(url + "/health").json()
    assert h["status"] == "ok" and h["model"] == "tiny" and h["refts"] == ["lo", "di", "every"]
    assert h["context_length"] == 2048 and h["max_batch"] == 16
