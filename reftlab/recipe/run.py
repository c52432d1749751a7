"""Running a recipe: load its base, encode its data, train, evaluate, save (``reftlab train``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import write_json, write_text
from ..config import ReftConfig
from .spec import DataSpec, Recipe, _metrics


def load_base(recipe: Recipe, num_labels: int = 0) -> Any:
    """The recipe's hooked base model: its causal LM, or for classification a sequence classifier."""
    import torch

    from ..models.classifier import load_classifier
    from ..models.loading import load_model
    from ..models.quantize import BITSANDBYTES
    from ..train.ddp import local_device

    device = torch.device(recipe.device) if recipe.device is not None else local_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={recipe.device!r} but this torch has no CUDA device; use device: cpu")
    if recipe.task == "classification":
        hooked = load_classifier(
            recipe.model, num_labels=num_labels, dtype=recipe.dtype, seed=recipe.training.seed, revision=recipe.revision
        )
        return hooked if device.type == "cpu" else hooked.to(device)
    place: dict[str, Any] = {"device": device}
    if recipe.device_map is not None:
        place = {"device_map": recipe.device_map}
    elif recipe.quantization in BITSANDBYTES:  # bitsandbytes places its weights while loading
        place = {"device_map": {"": device.index or 0} if device.type == "cuda" else None}
    return load_model(
        recipe.model, revision=recipe.revision, dtype=recipe.dtype, quantization=recipe.quantization, **place
    )


def _silent(message: str) -> None:
    """The log of processes other than rank 0: nothing."""


def recipe_examples(recipe: Recipe, spec: DataSpec | None = None) -> list[dict[str, Any]]:
    """The examples of ``spec`` (default: the recipe's data) for the recipe's task."""
    from ..data.tasks import as_classes

    examples = (spec or recipe.data).examples(recipe.task)
    if recipe.task == "classification":
        examples = as_classes(examples, recipe.data.labels)
    return examples


def encode_for(recipe: Recipe, hooked: Any, examples: list[dict[str, Any]], config: ReftConfig) -> list[dict[str, Any]]:
    """Training rows of ``examples`` for ``config``'s interventions, prompts formatted as the recipe says."""
    from ..data.encode import context_length
    from ..data.tasks import encode_task_examples

    reps = config.representations
    return encode_task_examples(
        hooked.tokenizer,
        examples,
        recipe.task,
        positions=[r.site.positions for r in reps if r.site.positions is not None],  # checked: each has some
        num_interventions=len(reps),
        chat_template=recipe.data.chat_template,
        system_prompt=recipe.data.system_prompt,
        nonstop=recipe.data.nonstop,
        max_length=context_length(hooked.tokenizer, hooked),
    )


def evaluate_recipe(recipe: Recipe, model: Any, examples: list[dict[str, Any]], **kwargs: Any) -> Any:
    """``reftlab.evaluate`` of ``model`` on ``examples`` with the recipe's task, metric and prompt format."""
    from ..evaluate import evaluate

    return evaluate(model, examples, settings=recipe.eval_settings(), **kwargs)


def run_recipe(recipe: Recipe, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Load the model, answer the held-out prompts, train, answer them again, evaluate, save.

    Returns ``{"losses", "before", "after", "evaluation", "output_dir", "seconds"}``;
    ``before``/``after`` are lists of ``{"prompt", "text", **metrics}``; ``evaluation`` is
    the held-out summary (``Evaluation.summary``) when the recipe has evaluation data, else
    None. The output folder is a reftlab checkpoint (``ReftModel.save``) plus ``run.json``
    (losses, generations, evaluation) and, with evaluation data, ``eval.csv`` (one row per example).
    """
    import time

    from ..train.ddp import is_main_process
    from ..train.task import train_task

    if not is_main_process():  # under torchrun: every process trains its shard, rank 0 talks and writes
        log = _silent
    t0 = time.perf_counter()
    out_dir = Path(recipe.output_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "run.json").is_file():
        raise FileExistsError(f"output_dir {out_dir} exists and holds other files; choose an empty or new folder")
    examples = recipe_examples(recipe)
    held_out_data = recipe.evaluation.data
    held_out = recipe_examples(recipe, held_out_data) if held_out_data is not None else None
    hooked, reft_model, rows = _prepare(recipe, examples, log, t0)
    before = _answers(recipe, hooked, "before training (base model)", log)
    result = train_task(reft_model, rows, recipe.task, recipe.training)
    log(
        f"trained {result.steps} steps in {result.seconds:.1f}s (fast path: {result.fast}); final loss {result.losses[-1]:.4f}"
    )
    reft_model.eval()
    after = _answers(recipe, reft_model, "after training (with the interventions)", log)
    summary = None
    table = None
    if held_out_data is not None and held_out is not None:
        ev = evaluate_recipe(recipe, reft_model, held_out, compare=None if recipe.task == "classification" else "base")
        summary, table = ev.summary(), ev.table
        log(f"held-out {held_out_data.describe()}: {json.dumps(summary)}")
    run = {"losses": result.losses, "before": before, "after": after, "evaluation": summary}
    if is_main_process():
        labels = list(examples[0]["choices"]) if recipe.task == "classification" else None
        _write(out_dir, reft_model, table, {**run, "task": recipe.task, "labels": labels}, t0)
    log(f"saved to {out_dir}/ (a reftlab checkpoint: ReftModel.load(dir) loads it with its base model; plus run.json)")
    return {**run, "output_dir": str(out_dir), "seconds": time.perf_counter() - t0}


def _prepare(
    recipe: Recipe, examples: list[dict[str, Any]], log: Callable[[str], None], t0: float
) -> tuple[Any, Any, list[dict[str, Any]]]:
    """The base model, the ReftModel on it (seeded, with the recipe's prompt format) and the training rows."""
    import time

    import torch

    from ..data.prompt_format import PromptFormat
    from ..reft_model import get_reft_model

    n_labels = len(examples[0]["choices"]) if recipe.task == "classification" else 0
    hooked = load_base(recipe, n_labels)
    log(f"model: {hooked!r}  ({time.perf_counter() - t0:.1f}s)")
    rows = encode_for(recipe, hooked, examples, recipe.interventions)
    log(f"data: {len(rows)} {recipe.task} examples from {recipe.data.describe()}")
    torch.manual_seed(recipe.training.seed)
    reft_model = get_reft_model(hooked, recipe.interventions)
    reft_model.prompt_format = PromptFormat(
        chat_template=recipe.data.chat_template, system_prompt=recipe.data.system_prompt
    )
    log(repr(reft_model))
    return hooked, reft_model, rows


def _answers(recipe: Recipe, model: Any, label: str, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """``model``'s answers to the recipe's held-out prompts, with their text metrics (logged)."""
    from ..generate import generate

    gen = recipe.generation
    if not gen.prompts:
        return []
    out = generate(
        model,
        list(gen.prompts),
        chat_template=recipe.data.chat_template,
        system_prompt=recipe.data.system_prompt,
        max_new_tokens=gen.max_new_tokens,
    )
    rows = []
    log(f"--- {label} ---")
    for prompt, text in zip(gen.prompts, out.texts):
        scores = {m: round(_metrics()[m](text), 3) for m in gen.metrics}
        rows.append({"prompt": prompt, "text": text, **scores})
        extra = "  ".join(f"[{k} {v:.2f}]" for k, v in scores.items())
        log(f"> {prompt}\n  {text!r} {extra}")
    return rows


def _write(out_dir: Path, reft_model: Any, table: Any, run: dict[str, Any], t0: float) -> None:
    """The checkpoint, ``eval.csv`` (with a held-out table) and ``run.json`` (``run`` plus the seconds so far)."""
    import time

    reft_model.save(out_dir)
    if table is not None:
        write_text(out_dir / "eval.csv", table.to_csv(index=False))
    write_json(out_dir / "run.json", {**run, "seconds": time.perf_counter() - t0})
