"""benchmarks/serve.py checks every server answer of every round against generation one prompt at a time."""

import importlib.util

import pytest
import torch
from helpers import REPO

import reftlab


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_serve", REPO / "benchmarks" / "serve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mismatches_names_every_answer_that_is_not_the_one_at_a_time_answer(bench):
    jobs = [("r0", "p"), ("base", "p"), ("r0", "q")]
    alone = {("r0", "p"): "a", ("base", "p"): "b", ("r0", "q"): "c"}
    assert bench.mismatches(["a", "b", "c"], jobs, alone) == []
    assert bench.mismatches(["a", "x", "y"], jobs, alone) == [1, 2]
    with pytest.raises(ValueError, match="2 answers for 3 requests"):
        bench.mismatches(["a", "b"], jobs, alone)


def test_the_reference_is_generation_alone_per_distinct_request(bench):
    hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
    torch.manual_seed(0)
    spec = {"layer": 1, "component": "block_output", "positions": "f1+l1", "kind": "loreft", "rank": 2}
    refts = {"r0": reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[spec])).eval()}
    jobs = [("base", "hello there"), ("r0", "hello there"), ("r0", "hi"), ("base", "hello there")]
    alone = bench.generate_alone(hooked, refts, jobs, 4)
    assert set(alone) == set(jobs) and len(alone) == 3
    for (route, prompt), text in alone.items():
        model = hooked if route == "base" else refts[route]
        assert text == reftlab.generate(model, [prompt], chat_template=True, max_new_tokens=4).texts[0]
