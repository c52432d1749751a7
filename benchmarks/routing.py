"""Per-example routing throughput: one mixed batch against one ReFT and against one group at a time.

Greedy generation of 64 new tokens (KV cache) for a batch of 8 prompts:
(a) routed across 4 different ReFTs (2 prompts each) in ONE batch (``reftlab.route``);
(b) the same batch with a single ReFT;
(c) the 4 groups of 2 one after another, each with its own ReFT.
Reported: mixed_vs_single = time(b) / time(a) (throughput of the mixed batch relative to
a single-ReFT batch; target >= 0.9) and mixed_vs_sequential = time(c) / time(a) (target
>= 2). (a) and (c) do the same work: both derive each ReFT's rows from one ``routes`` list,
so every ReFT sees the same 2 prompts (the same batch size per ReFT) in both runs, and the
script checks both runs generate the same number of tokens for every prompt and reports
how many of their greedy tokens agree. The ReFTs are random, non-identity rank-4 LoReFTs at different layers (training
does not change the cost). Repeats are interleaved and medians compared. Last line JSON.

    python benchmarks/routing.py [--model smollm2|tiny] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import interleaved  # benchmarks/timing.py (the script's folder is on sys.path)

import reftlab


def random_reft(hooked, layer: int, seed: int) -> reftlab.ReftModel:
    torch.manual_seed(seed)
    cfg = reftlab.ReftConfig(
        representations=[
            {
                "layer": layer,
                "component": "block_output",
                "positions": "f1+l1",
                "intervention": {"kind": "loreft", "rank": 4},
            }
        ]
    )
    return reftlab.get_reft_model(hooked, cfg).eval()  # random W, b, R: not the identity


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args(argv)
    n_refts = 4
    if args.batch % n_refts:
        raise SystemExit(f"--batch {args.batch} must be a multiple of {n_refts} (the same prompts per ReFT)")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    if args.model == "smollm2":
        hooked = reftlab.load_model(dtype=dtype, device=args.device)
    else:
        hooked = reftlab.load_model(reftlab.tiny_llama(dtype=dtype).to(args.device), reftlab.tiny_tokenizer())
    per = args.batch // n_refts
    layers = [round(i * (hooked.n_layers - 1) / (n_refts - 1)) for i in range(n_refts)]
    refts = {f"reft{i}": random_reft(hooked, layer, seed=i) for i, layer in enumerate(layers)}
    routed = reftlab.route(refts, hooked)
    routes = [name for name in refts for _ in range(per)]
    rows_of = {name: [i for i, r in enumerate(routes) if r == name] for name in refts}  # one source for (a) and (c)
    print(f"torch threads: {torch.get_num_threads()}; {per} prompts per ReFT in the mixed and the sequential run")

    g = torch.Generator().manual_seed(0)
    vocab = hooked.model.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=g).to(args.device)
    mask = torch.ones_like(ids)
    gen = {
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
        "do_sample": False,
        "use_cache": True,
        "pad_token_id": 0,
    }
    single = refts["reft0"]

    def sequential() -> torch.Tensor:
        out = torch.empty(0, dtype=torch.long)
        for name, reft in refts.items():
            rows = rows_of[name]
            _, part = reft.generate({"input_ids": ids[rows], "attention_mask": mask[rows]}, **gen)
            out = part.new_zeros((args.batch, part.shape[1])) if not out.numel() else out
            out[rows] = part
        return out

    def mixed() -> torch.Tensor:
        return routed.generate(ids, mask, routes=routes, **gen)

    runs = {
        "mixed": mixed,
        "single": lambda: single.generate({"input_ids": ids, "attention_mask": mask}, **gen),
        "sequential": sequential,
    }
    with torch.inference_mode():
        a, c = mixed(), sequential()
    if a.shape != c.shape:
        raise SystemExit(f"the mixed and sequential runs did different work: {tuple(a.shape)} vs {tuple(c.shape)}")
    agree = float((a[:, args.seq :] == c[:, args.seq :]).float().mean())
    print(f"mixed vs sequential: same shape {tuple(a.shape)}; {100 * agree:.1f}% of greedy tokens agree")
    med, times = interleaved(runs, args.repeats)
    tokens = args.batch * args.new_tokens
    for k, v in med.items():
        print(
            f"{k:>10}: median {v * 1000:8.1f} ms over {args.repeats} ({tokens / v:7.1f} new tokens/s; min {min(times[k]) * 1000:.1f} ms)"
        )
    result = {
        "mixed_vs_single": round(med["single"] / med["mixed"], 4),
        "mixed_vs_sequential": round(med["sequential"] / med["mixed"], 4),
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "batch": args.batch,
        "refts": n_refts,
        "new_tokens": args.new_tokens,
        "prompts_per_reft": per,
        "greedy_tokens_agree_mixed_vs_sequential": round(agree, 4),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
