"""Projection cost against a bare batched forward, measured in one run.

``reftlab.analysis.project`` on N short prompts at one site (a rank-4 LoReFT at the
middle layer, positions "f3+l3", every token reported, DataFrame built) versus two
baselines over the very same batches (same tokenization, padding and order):

- ``bare_forward``: the HF model's full forward, no hook at all (``project_vs_forward``);
- ``bare_to_site``: the forward cut right after the site, the part projection needs
  (``project_vs_forward_to_site``); project stops there too.

Repeats are interleaved and medians compared. The last line is JSON.

    python benchmarks/projection.py [--prompts 1000] [--batch-size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

import reftlab
from reftlab.analysis import project
from reftlab.analysis.capture import StopForward, Tap
from reftlab.analysis.prompts import as_prompt_set, batches, pad_id, tokenize

WORDS = [
    "the",
    "a",
    "movie",
    "book",
    "song",
    "city",
    "river",
    "friend",
    "idea",
    "morning",
    "was",
    "is",
    "felt",
    "seemed",
    "very",
    "quite",
    "rather",
    "good",
    "bad",
    "bright",
    "dark",
    "quiet",
    "loud",
    "strange",
    "simple",
    "and",
    "but",
    "because",
]


def short_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "." for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layer", type=int, default=None, help="site layer (default: the middle one)")
    args = ap.parse_args()
    torch.manual_seed(0)
    hooked = reftlab.load_model(args.model)
    layer = hooked.n_layers // 2 if args.layer is None else args.layer
    cfg = reftlab.ReftConfig(
        representations={
            "layer": layer,
            "component": "block_output",
            "positions": "f3+l3",
            "intervention": {"kind": "loreft", "rank": 4},
        }
    )
    reft = reftlab.get_reft_model(hooked, cfg).eval()
    prompts = short_prompts(args.prompts)

    hook = f"blocks.{layer}.hook_resid_post"

    def bare(ps: list[str]) -> None:
        encoded = tokenize(hooked.tokenizer, as_prompt_set(ps))
        with torch.inference_mode():
            for b in batches(encoded, args.batch_size, pad_id(hooked.tokenizer), hooked.device):
                hooked.model(input_ids=b.input_ids, attention_mask=b.attention_mask)

    def bare_to_site(ps: list[str]) -> None:
        encoded = tokenize(hooked.tokenizer, as_prompt_set(ps))
        with torch.inference_mode():
            for b in batches(encoded, args.batch_size, pad_id(hooked.tokenizer), hooked.device):
                try:
                    with reftlab.attach(hooked, [reftlab.Binding(hook, Tap(group=[]))]):
                        hooked.model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False)
                except StopForward:
                    pass

    def projected(ps: list[str]) -> None:
        df = project(reft, ps, batch_size=args.batch_size, progress=False)
        assert df.prompt_id.nunique() == len(ps)

    runs = {"bare_forward": bare, "bare_to_site": bare_to_site, "project": projected}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up on one batch
        fn(prompts[: args.batch_size])
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn(prompts)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:>13}: median {v:7.2f} s over {args.repeats} (min {min(times[k]):.2f})")
    n_tokens = sum(len(ids) for ids, _ in tokenize(hooked.tokenizer, as_prompt_set(prompts)))
    print(
        json.dumps(
            {
                "project_vs_forward": round(med["project"] / med["bare_forward"], 4),
                "project_vs_forward_to_site": round(med["project"] / med["bare_to_site"], 4),
                "prompts": args.prompts,
                "tokens": n_tokens,
                "batch_size": args.batch_size,
                "model": args.model,
                "device": str(hooked.device),
            }
        )
    )


if __name__ == "__main__":
    main()
