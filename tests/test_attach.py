"""attach / apply_at_positions: ``after_prompt`` bindings edit the generated tokens only."""

import pytest
import torch
from helpers import no_hooks_anywhere

import reftlab
from reftlab.attach import Binding, apply_at_positions


class AddOne(torch.nn.Module):
    kind = "add_one"
    arity = 1

    def forward(self, h):
        return h + 1.0


def test_after_prompt_edits_positions_from_min_length_on_and_decode_chunks_by_their_offset():
    h = torch.zeros(2, 5, 3)
    full = apply_at_positions(h, AddOne(), None, min_length=3, after_prompt=True)
    assert full[:, :3].eq(0).all() and full[:, 3:].eq(1).all()  # a full sequence: positions >= 3
    step = apply_at_positions(torch.zeros(2, 1, 3), AddOne(), None, min_length=3, after_prompt=True, offset=3)
    assert step.eq(1).all()  # a KV-cached decode step (3 tokens in the cache): the new token
    one = apply_at_positions(torch.zeros(2, 1, 3), AddOne(), None, min_length=1, after_prompt=True)
    assert one.eq(0).all()  # a one-token prompt's own pass is as wide as a decode step, and untouched
    prompt = apply_at_positions(torch.zeros(2, 3, 3), AddOne(), None, min_length=3, after_prompt=True)
    assert prompt.eq(0).all()  # the prompt's own forward pass: untouched
    rows = apply_at_positions(h, AddOne(), None, min_length=3, rows=torch.tensor([False, True]), after_prompt=True)
    assert rows[0].eq(0).all() and rows[1, 3:].eq(1).all() and rows[1, :3].eq(0).all()


def test_after_prompt_refuses_positions():
    with pytest.raises(ValueError, match="give positions=None"):
        Binding("blocks.0.hook_resid_post", AddOne(), torch.zeros(1, 1, dtype=torch.long), after_prompt=True)
    with pytest.raises(ValueError, match="give positions=None"):
        apply_at_positions(torch.zeros(1, 2, 3), AddOne(), torch.zeros(1, 1, dtype=torch.long), after_prompt=True)


def test_generation_only_edit_keeps_the_first_new_token_and_leaves_no_hook(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(), tok)
    enc = tok(["hello there"], return_tensors="pt")
    width = enc["input_ids"].shape[1]
    seen = []

    class Record(torch.nn.Module):
        kind = "record"
        arity = 1

        def forward(self, h):
            seen.append(h.shape[1])
            return h + 5.0

    plain = hooked.model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    with reftlab.attach(hooked, [Binding("blocks.1.hook_resid_post", Record(), after_prompt=True)], min_length=width):
        steered = hooked.model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert no_hooks_anywhere(hooked)
    # The first new token comes from the untouched prompt pass; later ones from edited decode steps.
    assert steered[0, width] == plain[0, width]
    assert seen == [1, 1, 1]  # three KV-cached decode steps; the prompt pass never reaches the edit
