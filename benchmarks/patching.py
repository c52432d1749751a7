"""Activation patching sweep (layer x position, residual stream before each block): reftlab against naive sweeps.

Arms, on the same clean/corrupted pairs, answer and wrong token:
(a) ``reftlab.analysis.patch``: the clean states of every hook and the corrupted input of every
    patched block captured once, then per layer one batched run of that layer and the ones above it
    only (``partial_forward`` fed the cached corrupted block input), one row per (pair, position) cell;
(b) naive, transformers only: one forward per (pair, layer, position), the clean layer input written
    by a ``register_forward_pre_hook`` on the HF decoder layer (it reruns the unpatched prefix each time);
(c) naive, TransformerLens hook API (``HookPoint``s through ``HookedModel.hooks``, no
    ``HookedTransformer``): the same loop with ``blocks.L.hook_resid_pre`` hooks.
The script asserts the three give the same logit differences (``--atol``), then times them with
interleaved repeats and reports medians and ratios (naive / reftlab; goal >= 2). Last line JSON.

    python benchmarks/patching.py [--model smollm2|tiny] [--pairs 1] [--seq 12] [--layer-step 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import interleaved  # benchmarks/timing.py (the script's folder is on sys.path)

import reftlab
from reftlab.analysis import patch
from reftlab.models.arch import arch_of, get_layers


def layer_input(args: tuple, kwargs: dict) -> tuple[torch.Tensor, bool]:
    """The decoder layer's hidden_states argument and whether it came as a keyword."""
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"], True
    return args[0], False


def naive_hf(hooked, clean, corrupted, layers, answer, wrong) -> list[float]:
    blocks = get_layers(hooked.hf_model, arch_of(hooked.hf_model))
    seen: dict[int, torch.Tensor] = {}
    handles = [
        blocks[i].register_forward_pre_hook(
            lambda m, a, kw, i=i: seen.__setitem__(i, layer_input(a, kw)[0].clone()), with_kwargs=True
        )
        for i in layers
    ]
    try:
        hooked.model(input_ids=clean)
    finally:
        for h in handles:
            h.remove()
    out = []
    for layer in layers:
        for pair in range(len(clean)):
            for pos in range(clean.shape[1]):

                def put(m, a, kw, layer=layer, pair=pair, pos=pos):
                    h, as_kw = layer_input(a, kw)
                    h = h.clone()
                    h[0, pos] = seen[layer][pair, pos]
                    return (a, {**kw, "hidden_states": h}) if as_kw else ((h, *a[1:]), kw)

                handle = blocks[layer].register_forward_pre_hook(put, with_kwargs=True)
                try:
                    logits = hooked.model(input_ids=corrupted[pair : pair + 1]).logits[0, -1]
                finally:
                    handle.remove()
                out.append(float(logits[answer] - logits[wrong]))
    return out


def naive_tl(hooked, clean, corrupted, layers, answer, wrong) -> list[float]:
    names = [f"blocks.{layer}.hook_resid_pre" for layer in layers]
    _, cache = hooked.run_with_cache(clean, names_filter=lambda n: n in names)
    out = []
    for name in names:
        for pair in range(len(clean)):
            for pos in range(clean.shape[1]):

                def put(h, hook, name=name, pair=pair, pos=pos):
                    h = h.clone()
                    h[0, pos] = cache[name][pair, pos]
                    return h

                with hooked.hooks(fwd_hooks=[(name, put)]):
                    logits = hooked.model(input_ids=corrupted[pair : pair + 1]).logits[0, -1]
                out.append(float(logits[answer] - logits[wrong]))
    return out


def ours(hooked, clean, corrupted, layers, answer, wrong, batch_size) -> list[float]:
    table = patch(hooked, clean, corrupted, answer, wrong, layers=layers, batch_size=batch_size)
    return table.sort_values(["layer", "pair", "position"], kind="stable")["metric"].tolist()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--seq", type=int, default=12)
    ap.add_argument("--layer-step", type=int, default=3, help="sweep every k-th layer")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--atol", type=float, default=1e-3)
    args = ap.parse_args(argv)
    if args.model == "smollm2":
        hooked = reftlab.load_model()
    else:
        hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
    hooked.model.eval()
    layers = list(range(0, hooked.n_layers, args.layer_step))
    g = torch.Generator().manual_seed(0)
    vocab = min(hooked.model.config.vocab_size, 256 if args.model == "tiny" else 10_000)
    clean = torch.randint(0, vocab, (args.pairs, args.seq), generator=g)
    corrupted = clean.clone()
    corrupted[:, args.seq // 2] = (clean[:, args.seq // 2] + 1) % vocab
    answer, wrong = 1, 2
    print(f"torch threads: {torch.get_num_threads()}; {len(layers)} layers x {args.seq} positions x {args.pairs} pairs")
    runs = {
        "reftlab": lambda: ours(hooked, clean, corrupted, layers, answer, wrong, args.batch_size),
        "naive_hf": lambda: naive_hf(hooked, clean, corrupted, layers, answer, wrong),
        "naive_tl": lambda: naive_tl(hooked, clean, corrupted, layers, answer, wrong),
    }
    with torch.inference_mode():
        got = {k: torch.tensor(fn()) for k, fn in runs.items()}
    diff = {k: float((got[k] - got["reftlab"]).abs().max()) for k in ("naive_hf", "naive_tl")}
    print(f"max |difference| of the logit differences vs reftlab: {diff}")
    if max(diff.values()) > args.atol:
        raise SystemExit(f"the sweeps disagree by more than {args.atol}: {diff}")
    med, _ = interleaved(runs, args.repeats)
    for k, v in med.items():
        print(f"{k:>9}: median {v * 1000:9.1f} ms over {args.repeats}")
    result = {
        "naive_hf_vs_reftlab": round(med["naive_hf"] / med["reftlab"], 3),
        "naive_tl_vs_reftlab": round(med["naive_tl"] / med["reftlab"], 3),
        "max_abs_diff": max(diff.values()),
        "model": args.model,
        "layers": len(layers),
        "positions": args.seq,
        "pairs": args.pairs,
        "threads": torch.get_num_threads(),
        "medians_ms": {k: round(v * 1000, 1) for k, v in med.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
