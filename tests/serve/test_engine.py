"""The engine: requests joining and leaving a running batch get exactly the tokens they get alone."""

from __future__ import annotations

import pytest
import torch
from serve_helpers import offline, world

import reftlab
from reftlab.serve import Engine, Finished, Request, Sampling

PROMPTS = ["Hi", "Tell me a story about the sea", "abc def", "x", "What is 2+2? Answer briefly please", "ok go"]
ROUTES = [(), ("lo",), ("di",), ("every",), ("lo", "di"), ("every",)]


def _request(tok, prompt, route, *, chat=True, **sampling):
    events: list = []
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"] if chat else tok(prompt)["input_ids"]
    req = Request(ids, route, Sampling(**{"max_tokens": 12, **sampling}), events.append)
    return req, events


def _drain(engine, requests, limit=500):
    for _ in range(limit):
        if all(r.stream is not None and r.stream.reported for r in requests):
            return
        engine.step()
    raise AssertionError("requests did not finish")


def test_requests_joining_a_running_batch_get_their_tokens_alone(reference):
    hooked, refts = world()
    engine = Engine(hooked, refts, max_batch=3)
    reqs = [_request(hooked.tokenizer, p, r) for p, r in zip(PROMPTS, ROUTES)]
    engine.add(reqs[0][0])
    engine.add(reqs[1][0])
    engine.step()
    engine.step()
    for req, _ in reqs[2:]:  # one joins each step; max_batch=3 makes some wait for a free row
        engine.add(req)
        engine.step()
    _drain(engine, [r for r, _ in reqs])
    ref_hooked, ref_refts = reference
    for (req, events), prompt, route in zip(reqs, PROMPTS, ROUTES):
        alone = offline(ref_hooked, ref_refts, prompt, route, 12, chat=True)
        assert req.generated == alone, (prompt, route)
        done = events[-1]
        assert isinstance(done, Finished) and done.reason == "length" and done.completion_tokens == 12
        assert "".join(e.text for e in events[:-1]) == done.text == hooked.tokenizer.decode(alone)
    s = engine.stats
    assert s.mixed_forwards > 0 and s.max_routes == 3 and s.max_rows == 3 and s.prefill_forwards >= 4
    assert s.requests_finished == 6 and s.running == 0 and engine._batch.cache is None
    # the routes matter: one prompt, four routes, four different answers
    answers = {
        tuple(offline(ref_hooked, ref_refts, PROMPTS[2], r, 12, chat=True)) for r in [(), ("lo",), ("di",), ("every",)]
    }
    assert len(answers) == 4


def test_leaving_rows_trim_the_cache_to_the_longest_remaining_row():
    hooked, refts = world()
    engine = Engine(hooked, refts)
    tok = hooked.tokenizer
    long_req, _ = _request(tok, "a long prompt that makes the cache wide " * 3, ("lo",), max_tokens=2)
    short_req, _ = _request(tok, "hi", (), max_tokens=6)
    engine.add(long_req)
    engine.add(short_req)
    engine.step()  # prefill both (first token each) + one decode step
    engine.step()  # long_req reaches max_tokens=2 and leaves
    b = engine._batch
    assert b.reqs == [short_req]
    assert b.width == int(b.lengths.max()) == len(short_req.prompt_ids) + 2
    assert all(layer.keys.shape[0] == 1 and layer.keys.shape[2] == b.width for layer in b.cache.layers)


def test_a_cancelled_request_leaves_at_the_next_step():
    hooked, refts = world()
    engine = Engine(hooked, refts)
    req, events = _request(hooked.tokenizer, "go on forever", ("every",), max_tokens=200)
    other, _ = _request(hooked.tokenizer, "short", (), max_tokens=200)
    engine.add(req)
    engine.add(other)
    engine.step()
    engine.cancel(req)
    engine.step()
    assert isinstance(events[-1], Finished) and events[-1].reason == "cancelled"
    assert engine._batch.reqs == [other] and engine.stats.requests_cancelled == 1
    waiting, wevents = _request(hooked.tokenizer, "never started", (), max_tokens=5)
    engine.add(waiting)
    engine.cancel(waiting)
    engine.step()
    assert wevents[-1].reason == "cancelled" and wevents[-1].completion_tokens == 0


def test_seeded_sampling_is_the_same_alone_and_in_a_batch():
    hooked, refts = world()
    kw = {"temperature": 0.9, "top_p": 0.9, "seed": 7, "max_tokens": 10}
    alone_engine = Engine(hooked, refts)
    alone, _ = _request(hooked.tokenizer, "sample me", ("di",), **kw)
    alone_engine.add(alone)
    _drain(alone_engine, [alone])
    engine = Engine(hooked, refts)
    crowd = [_request(hooked.tokenizer, p, r)[0] for p, r in zip(PROMPTS, ROUTES)]
    again, _ = _request(hooked.tokenizer, "sample me", ("di",), **kw)
    for r in [*crowd[:3], again, *crowd[3:]]:
        engine.add(r)
    _drain(engine, [*crowd, again])
    greedy, _ = _request(hooked.tokenizer, "sample me", ("di",), max_tokens=10)
    engine.add(greedy)
    _drain(engine, [greedy])
    assert again.generated == alone.generated != greedy.generated


def test_a_stop_string_ends_the_text_before_it():
    hooked, refts = world()
    engine = Engine(hooked, refts)
    probe, _ = _request(hooked.tokenizer, "Hi", ("lo",), max_tokens=12)
    engine.add(probe)
    _drain(engine, [probe])
    full = probe.stream.text
    stop = full[5:8]
    req, events = _request(hooked.tokenizer, "Hi", ("lo",), max_tokens=12, stop=(stop,))
    engine.add(req)
    _drain(engine, [req])
    done = events[-1]
    assert done.reason == "stop" and done.text == full[: full.index(stop)]
    assert "".join(e.text for e in events[:-1]) == done.text


def test_a_failing_forward_fails_its_requests_and_the_engine_goes_on(monkeypatch):
    hooked, refts = world()
    engine = Engine(hooked, refts)
    iv = next(iter(refts["di"].interventions.values()))

    def broken(h):
        raise RuntimeError("boom")

    running, revents = _request(hooked.tokenizer, "Hi", ("lo",), max_tokens=6)
    engine.add(running)
    engine.step()
    monkeypatch.setattr(iv, "forward", broken)
    bad, events = _request(hooked.tokenizer, "Hi", ("di",))
    engine.add(bad)  # its prefill fails: it alone fails, the running row goes on
    _drain(engine, [bad, running])
    assert events[-1].reason == "error" and "boom" in events[-1].message
    alone, _ = _request(hooked.tokenizer, "Hi", ("lo",), max_tokens=6)
    engine.add(alone)
    _drain(engine, [alone])
    assert revents[-1].reason == "length" and running.generated == alone.generated
    # a decode step that fails ("every" edits generated tokens) fails the rows of that step
    every = next(iter(refts["every"].interventions.values()))
    prefill_only = every.forward

    def broken_decode(h):
        if h.shape[-2] == 1:  # [rows, 1, d_model]: a decode step
            raise RuntimeError("boom")
        return prefill_only(h)

    monkeypatch.setattr(every, "forward", broken_decode)
    late, levents = _request(hooked.tokenizer, "Hi", ("every",))
    engine.add(late)
    _drain(engine, [late])
    assert levents[-1].reason == "error" and late.generated, "it failed after its prefill"
    monkeypatch.undo()
    good, gevents = _request(hooked.tokenizer, "Hi", ("every",), max_tokens=3)
    engine.add(good)
    _drain(engine, [good])
    assert gevents[-1].reason == "length" and engine.stats.requests_failed == 2
    assert not hooked.taps()


def test_bad_setups_are_refused_by_name(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(), tok)
    per_call = reftlab.get_reft_model(
        hooked,
        reftlab.ReftConfig(representations=[{"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2}]),
    )
    with pytest.raises(ValueError, match="without positions"):
        Engine(hooked, {"x": per_call})
    with pytest.raises(ValueError, match="max_batch"):
        Engine(hooked, {}, max_batch=0)
    engine = Engine(hooked, {})
    with pytest.raises(ValueError, match="unknown ReFT 'nope'"):
        engine.add(Request([1, 2], ("nope",), Sampling(max_tokens=2), print))
    with pytest.raises(ValueError, match="max_tokens"):
        Sampling(max_tokens=0)
    other = reftlab.get_reft_model(
        reftlab.load_model(reftlab.tiny_llama(), tok),
        reftlab.ReftConfig(
            representations=[{"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2}]
        ),
    )
    with pytest.raises(ValueError, match="another base model"):
        Engine(hooked, {"x": other})
    assert torch.is_tensor(engine._batch.lengths)


@pytest.mark.parametrize("prompt", ["x", "a"])
def test_one_token_prompts_get_the_offline_answer(reference, prompt):
    hooked, refts = world()
    engine = Engine(hooked, refts, max_batch=4)
    routes = [("lo",), ("di",), ("every",), ("lo", "di")]
    reqs = [_request(hooked.tokenizer, prompt, r, chat=False) for r in routes]
    assert all(len(req.prompt_ids) == 1 for req, _ in reqs)
    for req, _ in reqs:
        engine.add(req)
    _drain(engine, [r for r, _ in reqs])
    ref_hooked, ref_refts = reference
    for (req, _), route in zip(reqs, routes):
        assert req.generated == offline(ref_hooked, ref_refts, prompt, route, 12, chat=False), route
