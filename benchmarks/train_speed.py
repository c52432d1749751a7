"""Training step time of reftlab against a naive ReFT step, measured in one run on the emoji recipe.

naive: the padded batch through the whole model with the interventions hooked, full-vocabulary
       logits at every position, HF's loss, backward, AdamW step (what pyreft does).
reftlab: ``reftlab.train``'s step: cached blocks below the lowest intervention, packed rows,
       reused keys/values of the untouched prompt prefix, logits only at scored tokens.
Both copies start from the same interventions and take the same steps (steps interleaved so
machine noise hits both); the medians are compared and both final losses printed (they
should agree: the savings are exact). The last line is JSON.

    python benchmarks/train_speed.py [--config examples/emoji.yaml] [--steps 6]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

import reftlab
from reftlab.data import build_dataset, collator_for
from reftlab.recipe import Recipe
from reftlab.train.fast_forward import FastForward
from reftlab.train.loss import batch_positions


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="examples/emoji.yaml")
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    recipe = Recipe.from_file(args.config)
    hooked = reftlab.load_model(recipe.model, dtype=recipe.dtype)
    reps = recipe.interventions.representations
    ds = build_dataset(
        recipe.data.path,
        hooked.tokenizer,
        positions=[r.site.positions for r in reps],
        num_interventions=len(reps),
        chat_template=recipe.data.chat_template,
        model=hooked,
    )
    examples = [ds[i] for i in range(len(ds))]
    batch = collator_for(hooked.tokenizer)(examples[: recipe.training.batch_size])
    keys = list(range(len(batch["input_ids"])))
    torch.manual_seed(recipe.training.seed)
    fast_model = reftlab.get_reft_model(hooked, recipe.interventions)
    naive_ivs = copy.deepcopy(fast_model.interventions)
    naive_model = reftlab.ReftModel(hooked, fast_model.config, list(naive_ivs.values()))
    lr = recipe.training.lr
    opt_fast = torch.optim.AdamW(fast_model.interventions.parameters(), lr=lr, weight_decay=0.0)
    opt_naive = torch.optim.AdamW(naive_model.interventions.parameters(), lr=lr, weight_decay=0.0)
    fast = FastForward(fast_model)
    t0 = time.perf_counter()
    fast.warm(examples)
    warm_s = time.perf_counter() - t0
    positions = batch_positions(batch, len(reps))

    def naive_step() -> float:
        opt_naive.zero_grad()
        loss = naive_model.run(
            batch["input_ids"], batch["attention_mask"], positions=positions, labels=batch["labels"]
        ).loss
        loss.backward()
        opt_naive.step()
        return loss.item()

    def fast_step() -> float:
        opt_fast.zero_grad()
        loss = fast.loss(batch, keys=keys)
        loss.backward()
        opt_fast.step()
        return loss.item()

    times: dict[str, list[float]] = {"naive": [], "reftlab": []}
    losses: dict[str, list[float]] = {"naive": [], "reftlab": []}
    for i in range(args.steps):
        for name, fn in (("naive", naive_step), ("reftlab", fast_step)):
            t0 = time.perf_counter()
            losses[name].append(fn())
            times[name].append(time.perf_counter() - t0)
        print(
            f"step {i + 1}: naive {times['naive'][-1]:.2f}s loss {losses['naive'][-1]:.4f} | "
            f"reftlab {times['reftlab'][-1]:.2f}s loss {losses['reftlab'][-1]:.4f}",
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in times.items()}
    n_tokens = int(batch["attention_mask"].sum())
    print(f"batch {tuple(batch['input_ids'].shape)} ({n_tokens} real tokens), one-off cache warm-up {warm_s:.2f}s")
    print(f"median step: naive {med['naive']:.3f}s, reftlab {med['reftlab']:.3f}s")
    print(
        json.dumps(
            {
                "step_ratio_vs_naive": round(med["reftlab"] / med["naive"], 4),
                "final_loss": round(losses["reftlab"][-1], 6),
                "naive_final_loss": round(losses["naive"][-1], 6),
                "naive_step_s": round(med["naive"], 4),
                "reftlab_step_s": round(med["reftlab"], 4),
                "steps": args.steps,
                "config": args.config,
            }
        )
    )


if __name__ == "__main__":
    main()
