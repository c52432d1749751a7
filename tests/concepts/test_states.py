"""Token states at a site: the untouched model's hidden states, one forward per batch cut at the site."""

import pytest
import torch
from helpers import no_hooks_anywhere

import reftlab
from reftlab.concepts import encode, states_of
from reftlab.concepts.states import capture

TEXTS = ["hello there", "ok!", "a much longer text than the others", "xy z"]


def test_states_equal_hf_hidden_states_of_the_scored_tokens_whatever_the_batching(tiny_hf, tok):
    hooked = reftlab.load_model(tiny_hf, tok)
    enc = encode(tok, TEXTS)
    assert enc.start == [1] * len(TEXTS)  # no BOS in the tiny tokenizer: position 0 is never scored
    states = {bs: capture(hooked, enc, "blocks.1.hook_resid_post", batch_size=bs, progress=False) for bs in (1, 3)}
    for i, ids in enumerate(enc.ids):
        with torch.no_grad():
            hs = tiny_hf(torch.tensor([ids]), output_hidden_states=True).hidden_states[2][0]  # block 1's output
        for st in states.values():
            got = st.tokens[st.offsets[i] : st.offsets[i + 1]]
            torch.testing.assert_close(got, hs[1:], rtol=1e-5, atol=1e-5)
            assert st.token_ids[st.offsets[i] : st.offsets[i + 1]].tolist() == ids[1:]
    assert no_hooks_anywhere(hooked)


def test_the_forward_stops_after_the_site(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(n_layers=4), tok)
    ran = []
    handles = [
        layer.register_forward_pre_hook(lambda m, a, i=i: ran.append(i))
        for i, layer in enumerate(hooked.hf_model.model.layers)
    ]
    try:
        states_of(hooked, TEXTS, "blocks.1.hook_resid_post", batch_size=8, progress=False)
    finally:
        for h in handles:
            h.remove()
    assert ran == [0, 1]  # blocks 2 and 3 (and the unembedding) never ran


def test_bos_prefix_and_context(tok):
    class WithBos:
        bos_token_id = 7
        chat_template = None

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) for c in text]}

    enc = encode(WithBos(), ["ab", "c d"])
    assert enc.ids == [[7, 97, 98], [7, 99, 32, 100]] and enc.start == [1, 1]
    ctx = encode(tok, ["hi you"], ["Say hi"], context=True)
    head = tok.apply_chat_template([{"role": "user", "content": "Say hi"}], tokenize=False, add_generation_prompt=True)
    assert ctx.start == [len(tok(head)["input_ids"])] and ctx.ids[0][ctx.start[0] :] == tok("hi you")["input_ids"]
    with pytest.raises(ValueError, match="one prompt per text"):
        encode(tok, ["a b"], context=True)
    with pytest.raises(ValueError, match="no token to score"):
        encode(tok, ["a"])


def test_bad_hook_and_no_hook_left_after_an_error(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(), tok)
    with pytest.raises(ValueError, match="no hook point"):
        states_of(hooked, TEXTS, "blocks.99.hook_resid_post", progress=False)
    enc = encode(tok, TEXTS)
    enc.ids[1] = [10**6, 1, 2]  # an id outside the vocabulary: the forward raises
    with pytest.raises(IndexError):
        capture(hooked, enc, "blocks.1.hook_resid_post", progress=False)
    assert no_hooks_anywhere(hooked)
