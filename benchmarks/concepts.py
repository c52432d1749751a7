"""Token states for concept methods: ``reftlab.concepts.capture`` against a plain HF loop, one run.

Both sides read the same texts in the same right-padded batches (same tokenization, order and
padding) and return every scored token's state at the site, on the CPU:

- ``hf_hidden_states``: ``model(..., output_hidden_states=True)`` per batch, the site's layer
  taken from ``hidden_states`` (the whole model and the unembedding run);
- ``capture``: one forward per batch with a tap at the site that stops the pass there.

Every method of a concept run (DiffMean, PCA, probe, a given subspace) fits on these states,
so this is the forward cost of the detection pipeline. Repeats are interleaved (warm-up first)
and medians compared. Then, from the same states, the first token's norm against the median
text token's (why position 0 is never scored) and the detection table of DiffMean, the probe and
PCA on ``eval.csv``. The last line is JSON with the ratio.

    python benchmarks/concepts.py [--layer 15] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from timing import interleaved  # benchmarks/timing.py (the script's folder is on sys.path)

import reftlab
from reftlab.analysis.prompts import batches, pad_id
from reftlab.concepts import ConceptConfig, capture, encode, fit_concepts, read_concepts

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "concepts"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--layer", type=int, default=None, help="site block (default: the middle one)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--max-texts", type=int, default=None, help="time only the first N texts (a smoke run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    hooked = reftlab.load_model(args.model)
    layer = hooked.n_layers // 2 if args.layer is None else args.layer
    hook = f"blocks.{layer}.hook_resid_post"
    texts = read_concepts(EXAMPLES / "train.csv").texts + read_concepts(EXAMPLES / "eval.csv").texts
    texts = texts[: args.max_texts]
    enc = encode(hooked.tokenizer, texts)
    pairs = list(zip(enc.ids, enc.start))
    hf = hooked.hf_model

    def hf_loop() -> list[torch.Tensor]:
        out: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
        for b in batches(pairs, args.batch_size, pad_id(hooked.tokenizer), hooked.device):
            h = hf(input_ids=b.input_ids, attention_mask=b.attention_mask, output_hidden_states=True).hidden_states
            site = h[layer + 1].float().cpu()  # [batch, pos, d_model]: block `layer`'s output
            for row, (i, n) in enumerate(zip(b.index.tolist(), b.attention_mask.sum(1).tolist())):
                out[i] = site[row, b.prompt_lengths[row] : n]
        return out

    def ours() -> object:
        return capture(hooked, enc, hook, batch_size=args.batch_size, progress=False)

    with torch.inference_mode():  # the two sides agree before anything is timed
        want = torch.cat(hf_loop())
        got = ours().tokens  # type: ignore[attr-defined]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    med, _times = interleaved({"hf_hidden_states": hf_loop, "capture": ours}, args.repeats)
    for name, t in med.items():
        print(f"{name:>16}: median {t:6.2f} s over {args.repeats} ({len(texts) / t:7.1f} texts/s)")
    with torch.inference_mode():
        first = hf(input_ids=torch.tensor([enc.ids[0]], device=hooked.device), output_hidden_states=True)
    norms = first.hidden_states[layer + 1][0].norm(dim=-1)  # [pos]: position 0 is the BOS
    sink = float(norms[0] / got.norm(dim=-1).median())
    print(f"position 0's norm / the median scored token's: {sink:.0f}")
    config = ConceptConfig(layer=layer, methods=("diffmean", "probe", "pca"), steer=None, batch_size=args.batch_size)
    run = fit_concepts(hooked, EXAMPLES / "train.csv", eval=EXAMPLES / "eval.csv", config=config, progress=False)
    print(run.results[["concept", "method", "auroc", "auroc_hard"]].round(3).to_string(index=False))
    print(
        json.dumps(
            {
                "speedup_vs_hf_hidden_states": round(med["hf_hidden_states"] / med["capture"], 3),
                "texts_per_s_capture": round(len(texts) / med["capture"], 1),
                "texts_per_s_hf": round(len(texts) / med["hf_hidden_states"], 1),
                "sink_norm_ratio": round(sink, 1),
                "texts": len(texts),
                "tokens": sum(len(i) for i in enc.ids),
                "layer": layer,
                "n_layers": hooked.n_layers,
                "batch_size": args.batch_size,
                "threads": torch.get_num_threads(),
                "model": args.model,
                "device": str(hooked.device),
            }
        )
    )


if __name__ == "__main__":
    main()
