"""``make demo``: load the embedded SmolLM2, attach a LoReFT, run a forward pass and generate."""

from __future__ import annotations

import time

import torch

import reftlab


def main() -> None:
    t0 = time.perf_counter()
    model = reftlab.load_model()  # the embedded SmolLM2-135M-Instruct
    print(f"loaded {model} in {time.perf_counter() - t0:.1f}s")
    tok = model.tokenizer
    config = reftlab.ReftConfig(representations={
        "layer": 15, "component": "block_output", "low_rank_dimension": 4, "positions": "l1",
        "intervention": reftlab.LoreftIntervention(embed_dim=model.d_model, low_rank_dimension=4)})
    reft = reftlab.get_reft_model(model, config)
    reft.print_trainable_parameters()
    print(reft)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Who are you?"}], tokenize=False, add_generation_prompt=True)
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = reft.run(**enc, labels=enc["input_ids"])
        _, ids = reft.generate(dict(enc), max_new_tokens=24, do_sample=False)
    print(f"loss with an untrained LoReFT on the last prompt token: {out.loss.item():.3f}")
    print("generation:", tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))


if __name__ == "__main__":
    main()
