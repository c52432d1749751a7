"""Overhead of an attached LoReFT against the untouched HF model, measured in one run.

(a) forward, batch 8 x 128, one rank-4 LoReFT at layer 15 on the last token, / HF forward;
(b) greedy generation of 64 new tokens (KV cache) with that LoReFT on the prompt, / HF generate.
Repeats are interleaved (base, reft, base, reft, ...) and medians compared, so machine
noise hits both sides alike. The last line is JSON.

    python benchmarks/overhead.py [--model smollm2-135m-instruct] [--dtype float32] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import interleaved  # benchmarks/timing.py (the script's folder is on sys.path)
from transformers import AutoModelForCausalLM

import reftlab


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]

    if args.model == "smollm2-135m-instruct":
        path = reftlab.embedded_model_path()
        base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(args.device).eval()
        hooked = reftlab.load_model(path, dtype=dtype, device=args.device)
    else:  # a random Llama built from a config: "random-llama-<d_model>-<n_layers>"
        _, _, d, n = args.model.split("-")
        base = reftlab.tiny_llama(
            d_model=int(d),
            n_layers=int(n),
            n_heads=int(d) // 64,
            n_kv_heads=int(d) // 256 or 1,
            vocab=32000,
            dtype=dtype,
        ).to(args.device)
        hooked = reftlab.load_model(
            reftlab.tiny_llama(
                d_model=int(d),
                n_layers=int(n),
                n_heads=int(d) // 64,
                n_kv_heads=int(d) // 256 or 1,
                vocab=32000,
                dtype=dtype,
            ).to(args.device)
        )
    layer = hooked.n_layers // 2
    cfg = reftlab.ReftConfig(
        representations={
            "layer": layer,
            "component": "block_output",
            "positions": "l1",
            "intervention": {"kind": "loreft", "rank": 4},
        }
    )
    reft = reftlab.get_reft_model(hooked, cfg).eval()

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, base.config.vocab_size, (args.batch, args.seq), generator=g).to(args.device)
    mask = torch.ones_like(ids)
    gen = {
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
        "do_sample": False,
        "use_cache": True,
        "pad_token_id": 0,
    }

    runs = {
        "hf_forward": lambda: base(input_ids=ids, attention_mask=mask),
        "reft_forward": lambda: reft.run(ids, mask),
        "hf_generate": lambda: base.generate(input_ids=ids, attention_mask=mask, **gen),
        "reft_generate": lambda: reft.generate({"input_ids": ids, "attention_mask": mask}, **gen),
    }
    med, times = interleaved(runs, args.repeats)
    for k, v in med.items():
        print(f"{k:>14}: median {v * 1000:8.1f} ms over {args.repeats} (min {min(times[k]) * 1000:.1f})")
    result = {
        "forward_ratio": round(med["reft_forward"] / med["hf_forward"], 4),
        "generate_ratio": round(med["reft_generate"] / med["hf_generate"], 4),
        "model": args.model,
        "dtype": args.dtype,
        "device": args.device,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
