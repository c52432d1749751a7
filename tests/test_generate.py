"""Batched generation: per-prompt positions, batch == alone, prompt-only edits, pyreft's call."""

import copy

import pytest
import torch
from helpers import no_hooks_anywhere

import reftlab

PROMPTS = ["Hi", "Tell me a story about the sea", "abc def"]


def reft(hf, tok, positions="l1", layer=1, init="random"):
    cfg = reftlab.ReftConfig(
        representations=[
            {
                "layer": layer,
                "component": "block_output",
                "positions": positions,
                "intervention": {"kind": "loreft", "rank": 4, "init": init},
            }
        ]
    )
    rm = reftlab.get_reft_model(reftlab.load_model(hf, tok), cfg)
    with torch.no_grad():  # make the edit large enough to change greedy tokens
        for p in rm.interventions.parameters():
            p.mul_(20.0) if p.ndim == 1 else None
    return rm.eval()


@pytest.mark.parametrize("positions", ["l1", "f2+l2"])
def test_batch_gives_each_prompt_its_tokens_alone(tok, positions):
    rm = reft(reftlab.tiny_llama(dtype=torch.float64), tok, positions)
    batch = reftlab.generate(rm, PROMPTS, max_new_tokens=12, chat_template=True)
    for i, p in enumerate(PROMPTS):
        alone = reftlab.generate(rm, [p], max_new_tokens=12, chat_template=True)
        assert torch.equal(batch.ids[i], alone.ids[0]) and batch.texts[i] == alone.texts[0]
    assert no_hooks_anywhere(rm.hooked)


def test_interventions_change_the_answer_and_act_on_prompt_positions_only(tok):
    hf = reftlab.tiny_llama(dtype=torch.float64)
    rm = reft(hf, tok)
    with_iv = reftlab.generate(rm, PROMPTS, max_new_tokens=8)
    without = reftlab.generate(rm, PROMPTS, max_new_tokens=8, interventions=False)
    assert any(not torch.equal(a, b) for a, b in zip(with_iv.ids, without.ids))
    seen = []
    iv = next(iter(rm.interventions.values()))
    handle = iv.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        reftlab.generate(rm, ["Hi"], max_new_tokens=5)
    finally:
        handle.remove()
    assert seen == [1]  # one call, on the one l1 position of the prompt pass; decode steps untouched


def test_without_interventions_tokens_equal_the_untouched_hf_model(tok):
    hf = reftlab.tiny_llama()
    ref = copy.deepcopy(hf)
    rm = reft(hf, tok, init="identity")
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    expected = ref.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
    for model in (rm.hooked, rm):  # a plain HookedModel, and a ReftModel whose LoReFT is the identity
        out = reftlab.generate(model, PROMPTS, max_new_tokens=10)
        for i in range(len(PROMPTS)):
            row = expected[i, enc["input_ids"].shape[1] :]
            stop = [j for j, t in enumerate(row.tolist()) if t in (tok.eos_token_id, tok.pad_token_id)]
            assert torch.equal(out.ids[i], row[: stop[0]] if stop else row)


def test_pyreft_generate_call_with_its_exact_kwargs(tok):
    rm = reft(reftlab.tiny_llama(), tok)
    prompt = tok("Which dog breed?", return_tensors="pt")
    loc = prompt["input_ids"].shape[-1] - 1
    _, ids = rm.generate(
        prompt,
        unit_locations={"sources->base": (None, [[[loc]]])},
        intervene_on_prompt=True,
        max_new_tokens=6,
        do_sample=False,
        eos_token_id=tok.eos_token_id,
        early_stopping=True,
    )
    assert ids.shape[0] == 1 and ids.shape[1] <= prompt["input_ids"].shape[1] + 6
    native = reftlab.generate(rm, ["Which dog breed?"], max_new_tokens=6, positions="l1")
    got = ids[0, prompt["input_ids"].shape[1] :]
    assert torch.equal(got[: len(native.ids[0])], native.ids[0])


SMOL_PROMPTS = [
    "Who are you?",
    "What is the capital of France?",
    "Write a haiku about autumn leaves falling slowly.",
    "2+2=",
    "Tell me something surprising about octopuses and their three hearts.",
]


def smol_reft(hooked):
    torch.manual_seed(0)
    cfg = reftlab.ReftConfig(
        representations=[
            {
                "layer": 10,
                "component": "block_output",
                "positions": "f1+l1",
                "intervention": {"kind": "loreft", "rank": 4},
            },
            {
                "layer": 20,
                "component": "block_output",
                "positions": "l2",
                "intervention": {"kind": "loreft", "rank": 4},
            },
        ]
    )
    rm = reftlab.get_reft_model(hooked, cfg).eval()
    with torch.no_grad():  # a large edit: the answers differ from the base model's
        for p in rm.interventions.parameters():
            p.mul_(20.0) if p.ndim == 1 else None
    return rm


@pytest.mark.embedded
def test_float32_batch_gives_each_prompt_its_greedy_tokens_alone_on_the_embedded_model(smol):
    """The float64 claim above, in the dtype people use: SmolLM2 in float32, prompts of very
    different lengths (so the batch is left-padded), two LoReFTs, the chat template.

    Not claimed for bfloat16: with the same setup in bf16, 3 of these 5 prompts diverge from
    their single-prompt answer after 9-18 tokens (measured 2026-11-30). Padding changes the
    shapes of the matmuls, so their sums round differently; bf16 keeps 8 bits of mantissa,
    enough for such differences to flip a near-tie in the greedy argmax, after which the
    continuations part. The batch's size alone does it too: 6 prompts of equal length (37 tokens
    with the template, no padding) in bf16, 2 part from their single-prompt answer within 32
    tokens (measured 2026-11-30). float32's differences (~1e-6) flip none here."""
    hooked, _, _ = smol
    rm = smol_reft(hooked)
    kw = {"max_new_tokens": 24, "chat_template": True}
    batch = reftlab.generate(rm, SMOL_PROMPTS, **kw)
    base = reftlab.generate(rm, SMOL_PROMPTS, interventions=False, **kw)
    assert sum(not torch.equal(a, b) for a, b in zip(batch.ids, base.ids)) >= 2  # the ReFT changes answers
    for i, p in enumerate(SMOL_PROMPTS):
        alone = reftlab.generate(rm, [p], **kw)
        assert batch.ids[i].tolist() == alone.ids[0].tolist(), (p, batch.texts[i], alone.texts[0])
    assert no_hooks_anywhere(rm.hooked)
