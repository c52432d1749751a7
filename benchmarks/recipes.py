"""reftlab's searched ReFT against peft LoRA on the example recipes: held-out score and trainable params.

For each recipe (``examples/{arithmetic,social_iqa,classify}.yaml``, ``benchmarks/tasks/*.yaml`` or a
recipe file):

1. reftlab: ``reftlab search`` with the recipe's ``search:`` section (an Optuna study; its trials are
   scored on the 20% of the training data held out, the recipe's test set is its ``--eval``), then the
   best settings retrained on all the training data with the recipe's full schedule (``best.yaml``),
   scored on the recipe's test set.
   With ``--old``, the search it replaced runs beside it: the hand-written successive halving of
   commit ``OLD_COMMIT`` (taken from this repository's history with ``git archive``) at its
   defaults (27 candidates, eta 3, 4 steps at the first rung; its trials scored on the same 20%),
   with the same budget and parameter cap. The two searches run at the same time, each on
   ``--threads`` torch threads (default 1: the two fill this machine's 2 cores), so both see the
   same machine; their winners are retrained and scored the same way.
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
    python benchmarks/recipes.py --old --budget 12m --recipes benchmarks/tasks/number_words.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

import reftlab
from reftlab.data.collate import ReftDataCollator
from reftlab.data.tasks import collate_classification, encode_task_examples, split_held_out
from reftlab.metrics import get_metric
from reftlab.recipe import Recipe, evaluate_recipe, load_base, recipe_examples, run_recipe

ROOT = Path(__file__).resolve().parents[1]
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}
OLD_COMMIT = "fb07005f923f7d4e485fd139559f0f63c940c31e"  # the last commit with the hand-written search


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


def old_package(out: Path) -> Path:
    """A folder holding ``reftlab/`` as of ``OLD_COMMIT`` (from this repository's history; extracted once)."""
    root = out / "_old" / OLD_COMMIT[:12]
    if (root / "reftlab" / "search" / "halving.py").is_file():
        return root
    done = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_COMMIT, "reftlab"], capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"git archive {OLD_COMMIT[:12]} failed ({done.stderr.decode().strip()}): --old needs this "
            "repository's history (a full clone, not a shallow one)"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".old-", dir=root.parent))
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        tar.extractall(tmp, filter="data")
    os.replace(tmp, root)
    return root


def old_recipe(path: Path, folder: Path) -> Path:
    """The recipe at ``path`` for the old search: its default schedule, the same budget and cap, absolute data paths."""
    raw = yaml.safe_load(path.read_text())

    def absolute(spec: Any) -> Any:
        if isinstance(spec, str):
            return str((path.parent / spec).resolve())
        if isinstance(spec, dict) and isinstance(spec.get("path"), str):
            return {**spec, "path": absolute(spec["path"])}
        return spec

    raw["data"] = absolute(raw["data"])
    raw["evaluation"] = {**raw["evaluation"], "data": absolute(raw["evaluation"]["data"])}
    mine = raw.get("search") or {}
    raw["search"] = {k: mine[k] for k in ("budget", "max_params", "seed") if k in mine}  # the rest: its defaults
    target = folder / "old_recipe.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(raw, sort_keys=False))
    return target


def write_examples(recipe: Recipe, examples: list[dict], target: Path) -> Path:
    """``examples`` as a JSONL file ``reftlab search --eval`` reads back for the recipe's task."""
    if recipe.task == "classification":
        rows = [{"prompt": e["prompt"], "label": e["answer"]} for e in examples]
    else:
        rows = [
            {k: e[k] for k in ("prompt", "response", "choices", "answer") if e.get(k) is not None} for e in examples
        ]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return target


def searches(arms: dict[str, tuple[list[str], Path]], folder: Path, threads: int) -> dict[str, dict[str, Any]]:
    """Run each arm's ``reftlab search`` command (in its working folder) at the same time; their JSON summaries.

    A finished arm's summary is cached in ``folder/ARM/summary.json`` and not run again.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    running = {}
    for arm, (cmd, cwd) in arms.items():
        if (folder / arm / "summary.json").is_file():
            continue
        (folder / arm).mkdir(parents=True, exist_ok=True)
        log = (folder / arm / "search.log").open("w")
        running[arm] = (subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    for arm, (proc, log) in running.items():
        code = proc.wait()
        log.close()
        lines = (folder / arm / "search.log").read_text().strip().splitlines()
        if code != 0 or not lines or not lines[-1].startswith("{"):
            raise RuntimeError(f"the {arm} search failed (exit {code}): {' / '.join(lines[-3:])}")
        cached(folder / arm / "summary.json", lambda line=lines[-1]: json.loads(line))
    return {arm: json.loads((folder / arm / "summary.json").read_text()) for arm in arms}


def describe(recipe: Recipe) -> str:
    """A retrained recipe's interventions in words: 'loreft r4 at layers 6/18, `f1+l1`, lr 0.01'."""
    reps = recipe.interventions.representations
    layers = "/".join(str(layer) for layer in sorted({r.site.layer for r in reps}))
    kinds = "+".join(sorted({f"{r.spec()['kind']} r{r.spec()['rank']}" for r in reps}))
    positions = "+".join(sorted({str(r.to_json()["positions"]) for r in reps}))
    return f"{kinds} at layer{'s' if '/' in layers else ''} {layers}, `{positions}`, lr {recipe.training.lr:g}"


def bench(
    name: str,
    out: Path,
    lora_lrs: Sequence[float],
    budget: str | None,
    old: bool = False,
    threads: int | None = None,
    seeds: int = 1,
) -> dict[str, Any]:
    path = recipe_path(name)
    recipe = Recipe.from_file(path)
    if recipe.evaluation.data is None:
        raise ValueError(f"{name}: the recipe needs evaluation.data (its test set)")
    folder = out / Path(name).stem
    train = recipe_examples(recipe)
    test = recipe_examples(recipe, recipe.evaluation.data)
    tail = ["--no-progress"] + ([] if budget is None else ["--budget", budget])
    evals = ["--eval", str(write_examples(recipe, test, folder / "test.jsonl").resolve())]
    cmd = ["-m", "reftlab", "search", str(path.resolve()), "-o", str((folder / "search").resolve()), *evals]
    arms = {"search": ([sys.executable, *cmd, *tail], ROOT)}
    if old:  # run from the old package's folder: `-m reftlab` imports the reftlab beside it
        cmd = [
            "-m",
            "reftlab",
            "search",
            str(old_recipe(path, folder).resolve()),
            "-o",
            str((folder / "old").resolve()),
        ]
        arms["old"] = ([sys.executable, *cmd, *tail], old_package(out.resolve()))
    summary = searches(arms, folder, threads or (1 if old else torch.get_num_threads()))

    def seeded(r: Recipe, i: int) -> Recipe:  # the i-th training seed (i = 0: the recipe's own)
        return r if i == 0 else dataclasses.replace(r, training=r.training.replace(seed=r.training.seed + i))

    def named(stem: str, i: int) -> Path:
        return folder / (f"{stem}.json" if i == 0 else f"{stem}_seed{i}.json")

    def retrained(arm: str) -> dict[str, Any]:
        best = Recipe.from_file(folder / arm / "best.yaml")
        rows = [
            cached(named(f"{arm}_test", i), lambda i=i: run_recipe(seeded(best, i), log=lambda m: None)["evaluation"])
            for i in range(seeds)
        ]
        return {
            "settings": describe(best),
            "params": rows[0]["trainable_params"],
            "score": statistics.mean(r["score"] for r in rows),
            "scores": [r["score"] for r in rows],
            "val_score": summary[arm]["score"],
            "trials": summary[arm]["trials"],
            "search_stopped": summary[arm]["stopped"],
            "search_seconds": summary[arm]["seconds"],
        }

    reft = retrained("search")
    # LoRA's lr is tuned on the split the search validated on (the 20% held out of the training data)
    fit, held = split_held_out(train, recipe.evaluation.held_out, recipe.search.seed)
    tuned = [
        cached(folder / f"lora_val_lr{lr:g}.json", lambda lr=lr: lora_run(recipe, fit, held, lr)) for lr in lora_lrs
    ]
    metric = json.loads((folder / "search_test.json").read_text())["metric"]
    sign = 1 if get_metric(metric).higher_is_better else -1
    best_lora = max(tuned, key=lambda r: sign * r["score"])
    loras = [
        cached(named("lora_test", i), lambda i=i: lora_run(seeded(recipe, i), train, test, best_lora["lr"]))
        for i in range(seeds)
    ]
    lora = {**loras[0], "score": statistics.mean(r["score"] for r in loras), "scores": [r["score"] for r in loras]}
    base = None
    if recipe.task != "classification":
        base = cached(folder / "base_test.json", lambda: evaluate_recipe(recipe, load_base(recipe), test).summary())
    return {
        "recipe": Path(name).stem,
        "task": recipe.task,
        "metric": metric,
        "train": len(train),
        "test": len(test),
        "reft": reft,
        "old": retrained("old") if old else None,
        "lora": {
            "lr": lora["lr"],
            "params": lora["params"],
            "score": lora["score"],
            "scores": lora["scores"],
            "val_scores": {f"{r['lr']:g}": r["score"] for r in tuned},
        },
        "base": None if base is None else base["score"],
        "threads": threads or (1 if old else torch.get_num_threads()),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    old = any(r["old"] for r in rows)
    head = "| recipe | metric | base |" + (" old search (halving) | params |" if old else "")
    lines = [
        head + " reftlab search (Optuna) | params | LoRA r=4 q,v (tuned lr) | params | ReFT/LoRA params |",
        "|---|---|---|" + ("---|---|" if old else "") + "---|---|---|---|---|",
    ]
    for r in rows:
        base = "-" if r["base"] is None else f"{r['base']:.3f}"
        cells = [f"{r['recipe']}", f"{r['metric']} (n={r['test']})", base]
        for arm in ("old", "reft") if old else ("reft",):
            a = r[arm]
            cells += [f"{a['score']:.3f} ({a['settings']}; {a['trials']} trials)", f"{a['params']:,}"]
        cells += [
            f"{r['lora']['score']:.3f} (lr {r['lora']['lr']:g})",
            f"{r['lora']['params']:,}",
            f"{r['reft']['params'] / r['lora']['params']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["arithmetic", "social_iqa", "classify"])
    ap.add_argument("--out", default="runs/recipes")
    ap.add_argument("--lora-lrs", nargs="+", type=float, default=[3e-4, 1e-3, 3e-3])
    ap.add_argument("--budget", help="override each recipe's search budget")
    ap.add_argument("--old", action="store_true", help=f"run the hand-written search of {OLD_COMMIT[:7]} beside it")
    ap.add_argument("--threads", type=int, help="torch threads of each search (default: 1 with --old, else all)")
    ap.add_argument(
        "--seeds", type=int, default=1, help="retrain each winner (and LoRA) with this many training seeds; the mean"
    )
    args = ap.parse_args(argv)
    load = os.getloadavg()
    print(f"torch threads: {torch.get_num_threads()}; load average at start: {load[0]:.1f} / {os.cpu_count()} cores")
    rows = [
        bench(name, Path(args.out), args.lora_lrs, args.budget, args.old, args.threads, args.seeds)
        for name in args.recipes
    ]
    if args.seeds > 1:
        print(
            f"scores: the mean over {args.seeds} training seeds (seed, seed+1, ...) of each retrained winner and of LoRA"
        )
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} (1 min), {load[2]:.1f} (15 min)")
    print(table(rows))
    for row in rows:
        print(json.dumps(row))
    return rows


if __name__ == "__main__":
    main()
