"""reftlab's searched ReFT against peft LoRA on the example recipes: held-out score and trainable params.

For each recipe (``examples/{arithmetic,social_iqa,classify}.yaml`` or a recipe file):

1. reftlab: ``reftlab search`` with the recipe's ``search:`` section (its trials are scored on half
   of the 20% of the training data held out), then the best settings retrained on all the training data with
   the recipe's full schedule (``best.yaml``), scored on the recipe's test set.
2. LoRA: peft ``LoraConfig(r=4, target_modules=[q_proj, v_proj])`` on every layer (plus the
   classifier head for classification), trained on the same rows with the same epochs,
   batch size, schedule (linear decay, no warmup), clipping and data order; its lr is tuned
   on the same validation split over ``--lora-lrs``, then it is retrained on all the training
   data and scored on the same test set.
3. The base model (no training) on the test set, for generation tasks.

Everything is cached under ``--out`` (the search resumes its Optuna study; finished
trainings are not repeated), so an interrupted run continues. The last lines are the
markdown table and one JSON line per recipe.

    python benchmarks/recipes.py [--recipes arithmetic social_iqa classify] [--out runs/recipes]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import reftlab
from reftlab.data.collate import ReftDataCollator
from reftlab.data.tasks import collate_classification, encode_task_examples, split_held_out
from reftlab.metrics import get_metric
from reftlab.recipe import Recipe, evaluate_recipe, load_base, recipe_examples, run_recipe
from reftlab.search import search_recipe

ROOT = Path(__file__).resolve().parents[1]
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}


def recipe_path(name: str) -> Path:
    path = Path(name)
    return path if path.suffix in (".yaml", ".yml") else ROOT / "examples" / f"{name}.yaml"


def cached(path: Path, compute: Any) -> Any:
    """``compute()``'s JSON result, stored at ``path`` (read back on a later run)."""
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)
    return value


def lora_run(recipe: Recipe, train: list[dict], held: list[dict], lr: float) -> dict[str, Any]:
    """Train LoRA on ``train`` with the recipe's schedule at ``lr``; score it on ``held``."""
    from peft import LoraConfig, get_peft_model

    n_labels = len(train[0]["choices"]) if recipe.task == "classification" else 0
    hooked = load_base(recipe, n_labels)
    task_type = "SEQ_CLS" if recipe.task == "classification" else "CAUSAL_LM"
    torch.manual_seed(recipe.training.seed)
    model = get_peft_model(hooked.hf_model, LoraConfig(task_type=task_type, **LORA))
    params = [p for p in model.parameters() if p.requires_grad]
    tok = hooked.tokenizer
    rows = encode_task_examples(
        tok,
        train,
        recipe.task,
        positions="l1",
        num_interventions=1,
        chat_template=recipe.data.chat_template,
        system_prompt=recipe.data.system_prompt,
    )
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    collate = ReftDataCollator(pad_token_id=pad)
    cfg = recipe.training
    total = cfg.total_steps(len(rows))
    per_epoch = cfg.steps_per_epoch(len(rows))
    opt = torch.optim.AdamW(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(1, total)))
    random.seed(cfg.seed)
    model.train()
    t0 = time.perf_counter()
    losses = []
    for step in range(total):
        epoch, slot = divmod(step, per_epoch)
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
        idx = order[slot * cfg.batch_size : (slot + 1) * cfg.batch_size]
        batch_rows = [rows[i] for i in idx]
        if recipe.task == "classification":
            batch = collate_classification(batch_rows, pad)
        else:
            batch = collate(batch_rows)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(out.loss.item())
    seconds = time.perf_counter() - t0
    model.eval()
    scored = evaluate_recipe(recipe, reftlab.load_model(model, tok), held)
    return {
        "lr": lr,
        "score": scored.score,
        "params": sum(p.numel() for p in params),
        "steps": total,
        "train_seconds": round(seconds, 1),
        "final_loss": sum(losses[-5:]) / len(losses[-5:]),
    }


def bench(name: str, out: Path, lora_lrs: Sequence[float], budget: str | None) -> dict[str, Any]:
    recipe = Recipe.from_file(recipe_path(name))
    if recipe.evaluation.data is None:
        raise ValueError(f"{name}: the recipe needs evaluation.data (its test set)")
    folder = out / Path(name).stem
    train = recipe_examples(recipe)
    test = recipe_examples(recipe, recipe.evaluation.data)
    t0 = time.perf_counter()
    result = search_recipe(recipe, folder / "search", budget=budget, progress=False)
    best = Recipe.from_file(folder / "search" / "best.yaml")

    def retrain() -> dict[str, Any]:
        return run_recipe(best, log=lambda m: None)["evaluation"]

    reft = cached(folder / "reft_test.json", retrain)
    search_seconds = round(time.perf_counter() - t0, 1)
    # the search's own splits of the training data: LoRA's lr is tuned on what the search validated on
    fit, held = split_held_out(train, recipe.evaluation.held_out, recipe.search.seed)
    held, _ = split_held_out(held, 0.5, recipe.search.seed)
    tuned = [
        cached(folder / f"lora_val_lr{lr:g}.json", lambda lr=lr: lora_run(recipe, fit, held, lr)) for lr in lora_lrs
    ]
    sign = 1 if get_metric(reft["metric"]).higher_is_better else -1
    best_lora = max(tuned, key=lambda r: sign * r["score"])
    lora = cached(folder / "lora_test.json", lambda: lora_run(recipe, train, test, best_lora["lr"]))
    base = None
    if recipe.task != "classification":
        base = cached(folder / "base_test.json", lambda: evaluate_recipe(recipe, load_base(recipe), test).summary())
    return {
        "recipe": Path(name).stem,
        "task": recipe.task,
        "metric": reft["metric"],
        "train": len(train),
        "test": len(test),
        "reft": {
            "settings": result.best.describe(),
            "params": reft["trainable_params"],
            "score": reft["score"],
            "val_score": result.score,
            "trials": len(result.trials),
            "search_stopped": result.stopped,
        },
        "lora": {
            "lr": lora["lr"],
            "params": lora["params"],
            "score": lora["score"],
            "val_scores": {f"{r['lr']:g}": r["score"] for r in tuned},
        },
        "base": None if base is None else base["score"],
        "seconds": search_seconds,
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| recipe | metric | base | reftlab (searched) | params | LoRA r=4 q,v (tuned lr) | params | ReFT/LoRA params |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = "-" if r["base"] is None else f"{r['base']:.3f}"
        lines.append(
            f"| {r['recipe']} | {r['metric']} (n={r['test']}) | {base} | {r['reft']['score']:.3f} "
            f"({r['reft']['settings']}) | {r['reft']['params']:,} | {r['lora']['score']:.3f} (lr {r['lora']['lr']:g}) "
            f"| {r['lora']['params']:,} | {r['reft']['params'] / r['lora']['params']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["arithmetic", "social_iqa", "classify"])
    ap.add_argument("--out", default="runs/recipes")
    ap.add_argument("--lora-lrs", nargs="+", type=float, default=[3e-4, 1e-3, 3e-3])
    ap.add_argument("--budget", help="override each recipe's search budget")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    print(f"torch threads: {torch.get_num_threads()}; load average at start: {load[0]:.1f} / {os.cpu_count()} cores")
    rows = [bench(name, Path(args.out), args.lora_lrs, args.budget) for name in args.recipes]
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} (1 min), {load[2]:.1f} (15 min)")
    print(table(rows))
    for row in rows:
        print(json.dumps(row))
    return rows


if __name__ == "__main__":
    main()
