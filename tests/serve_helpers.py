"""Shared pieces for the serving tests (tests/serve/): a tiny model whose greedy text varies, and three ReFTs.

The tiny Llama is re-initialised with larger weights (std 0.2) so greedy continuations change
from token to token, and its non-ASCII byte tokens are damped so the text is printable: a
wrong position, mask or route then shows up as different text, not as the same repeated byte.
"""

from __future__ import annotations

import torch

import reftlab

SPECS = {
    "lo": {"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 4},
    "di": {"layer": 2, "component": "block_output", "positions": "f1+l2", "kind": "direft", "rank": 2},
    "every": {"layer": 3, "component": "block_output", "positions": "all", "kind": "loreft", "rank": 2},
}


def chaotic_llama() -> torch.nn.Module:
    hf = reftlab.tiny_llama(dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.2)
        emb = hf.get_input_embeddings().weight  # tied: also the output head
        emb[128:] *= 0.1
        emb[:32] *= 0.1
    hf.config.max_position_embeddings = 2048  # RoPE has no table: room for long generations in the tests
    return hf


def world() -> tuple[reftlab.HookedModel, dict[str, reftlab.ReftModel]]:
    """The base (float64) and ReFTs "lo" (l1), "di" (f1+l2) and "every" (all positions); the
    same weights on every call."""
    hooked = reftlab.load_model(chaotic_llama(), reftlab.tiny_tokenizer())
    refts = {}
    for i, (name, spec) in enumerate(SPECS.items()):
        torch.manual_seed(100 + i)
        reft = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[spec])).eval()
        with torch.no_grad():  # a strong edit: every ReFT changes the greedy text
            for key, p in reft.interventions.named_parameters():
                if not key.endswith("rotation"):  # R stays orthonormal
                    p.mul_(40.0)
        refts[name] = reft
    return hooked, refts


def offline(hooked, refts, prompt: str, route: tuple[str, ...], max_new_tokens: int, *, chat: bool) -> list[int]:
    """Greedy ids of ``prompt`` alone through ``reftlab.generate`` (or ``route`` for several ReFTs)."""
    if len(route) <= 1:
        model = refts[route[0]] if route else hooked
        return reftlab.generate(model, [prompt], max_new_tokens=max_new_tokens, chat_template=chat).ids[0].tolist()
    tok = hooked.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    enc = tok([text] if chat else [prompt], return_tensors="pt", add_special_tokens=not chat)
    routed = reftlab.route(refts, hooked)
    out = routed.generate(
        enc["input_ids"],
        enc["attention_mask"],
        routes=[list(route)],
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
    )
    ids = out[0, enc["input_ids"].shape[1] :].tolist()
    stops = [i for i, t in enumerate(ids) if t in (tok.pad_token_id, tok.eos_token_id)]
    return ids[: stops[0]] if stops else ids
