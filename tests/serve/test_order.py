"""A request's ReFTs act in the order it gives them: ["c", "a"] and ["a", "c"] on one shared site are
two different models, and the server answers each as offline routed generation in that order does."""

from __future__ import annotations

import pytest
import torch
from openai import OpenAI
from serve_helpers import chaotic_llama, offline

import reftlab
from reftlab.serve import Engine
from reftlab.serve.app import create_app
from reftlab.serve.server import background

# both at the same hook and position: the order they act in changes the edit
SPEC = {"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 4}


def _same_site_pair() -> tuple[reftlab.HookedModel, dict[str, reftlab.ReftModel]]:
    hooked = reftlab.load_model(chaotic_llama(), reftlab.tiny_tokenizer())
    refts = {}
    for seed, name in ((7, "a"), (8, "c")):  # served as --reft a --reft c
        torch.manual_seed(seed)
        reft = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[SPEC])).eval()
        with torch.no_grad():
            for key, p in reft.interventions.named_parameters():
                if not key.endswith("rotation"):
                    p.mul_(40.0)
        refts[name] = reft
    return hooked, refts


@pytest.fixture(scope="module")
def served():
    hooked, refts = _same_site_pair()
    with background(create_app(Engine(hooked, refts, max_batch=4), model_name="tiny")) as url:
        yield OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_a_request_composes_its_refts_in_the_order_it_gives(served):
    hooked, refts = _same_site_pair()  # an independent copy for the offline answers
    prompt = "Tell me a story"
    orders = [("c", "a"), ("a", "c")]
    want = {order: hooked.tokenizer.decode(offline(hooked, refts, prompt, order, 8, chat=True)) for order in orders}
    assert want[orders[0]] != want[orders[1]], "the two orders must differ for this test to mean anything"
    for order in orders:
        got = served.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=8,
            temperature=0,
            extra_body={"reft": list(order)},
        )
        assert got.choices[0].message.content == want[order], order
    # the model's own ReFT acts first, then the listed ones
    got = served.chat.completions.create(
        model="c", messages=[{"role": "user", "content": prompt}], max_tokens=8, temperature=0, extra_body={"reft": "a"}
    )
    assert got.choices[0].message.content == want[("c", "a")]
