"""A training recipe: what ``reftlab train CONFIG.yaml`` reads, checks and runs.

    model: smollm2-135m-instruct        # the embedded default, or a local HF folder
    dtype: float32
    data: {path: emoji.jsonl, chat_template: true}     # path relative to the YAML file
    interventions:                      # ReftConfig representations (native or pyreft keys)
      - {layer: 6, component: block_output, positions: f1+l1, kind: loreft, rank: 4}
    training: {epochs: 40, batch_size: 10, lr: 8.0e-3}  # any TrainConfig field
    generation: {prompts: [...], max_new_tokens: 32, metrics: [emoji_fraction]}
    output_dir: runs/emoji              # relative to the working directory

Every section is a frozen dataclass; an unknown key is an error that names it and lists
the valid ones, before any model is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .config import ReftConfig, _load
from .train.config import TrainConfig

METRICS: dict[str, Callable[[str], float]] = {}


def _metrics() -> dict[str, Callable[[str], float]]:
    from .metrics import emoji_fraction

    return {"emoji_fraction": emoji_fraction, **METRICS}


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    path: str = field(
        metadata={"help": "a .jsonl, .json or .csv file of prompt/response pairs (relative to the YAML file)"}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "column holding the prompts"})
    response_column: str = field(default="response", metadata={"help": "column holding the responses"})
    chat_template: bool = field(
        default=False, metadata={"help": "render prompts as a user turn of the tokenizer's chat template"}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "an optional system message (needs chat_template)"}
    )
    nonstop: bool = field(default=False, metadata={"help": "do not append the eos token to responses"})

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"data.path={self.path!r} must be a file name (relative to the YAML file)")
        for name in ("prompt_column", "response_column"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"data.{name}={getattr(self, name)!r} must be a column name (a string)")
        ct = self.chat_template
        if not isinstance(ct, bool) and not (isinstance(ct, str) and ("{{" in ct or "{%" in ct)):
            raise ValueError(
                f"data.chat_template={ct!r} must be true (the tokenizer's template), false, or a Jinja template string"
            )
        if self.system_prompt is not None and (not isinstance(self.system_prompt, str) or ct is False):
            raise ValueError("data.system_prompt must be a string and needs data.chat_template (it is a chat message)")
        if not isinstance(self.nonstop, bool):
            raise ValueError(f"data.nonstop={self.nonstop!r} must be true or false")


@dataclass(frozen=True, kw_only=True)
class GenerationSpec:
    prompts: tuple[str, ...] = field(
        default=(), metadata={"help": "held-out prompts answered before and after training"}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "tokens generated per prompt (greedy)"})
    metrics: tuple[str, ...] = field(
        default=(), metadata={"help": "text metrics printed per answer, e.g. emoji_fraction"}
    )

    def __post_init__(self) -> None:
        for name in ("prompts", "metrics"):
            if not isinstance(getattr(self, name), (list, tuple)):
                raise ValueError(f"generation.{name}={getattr(self, name)!r} must be a list")
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        if not all(isinstance(p, str) and p for p in self.prompts):
            raise ValueError("generation.prompts must be non-empty strings")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"generation.max_new_tokens={self.max_new_tokens!r} must be an int >= 1")
        unknown = [m for m in self.metrics if m not in _metrics()]
        if unknown:
            raise ValueError(f"generation.metrics: unknown {unknown}; known: {sorted(_metrics())}")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    model: str = field(
        default="smollm2-135m-instruct", metadata={"help": "'smollm2-135m-instruct' or a local HF folder"}
    )
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16"})
    data: DataSpec = field(metadata={"help": "the training data (see DataSpec)"})
    interventions: ReftConfig = field(
        metadata={"help": "list of representations: layer/component or hook, positions, kind, rank"}
    )
    training: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "TrainConfig fields"})
    generation: GenerationSpec = field(
        default_factory=GenerationSpec, metadata={"help": "held-out prompts and metrics"}
    )
    output_dir: str = field(default="reft-output", metadata={"help": "where the trained interventions are written"})

    def __post_init__(self) -> None:
        from .models.loading import _dtype

        for name in ("model", "output_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a non-empty string")
        _dtype(self.dtype)  # a bad dtype fails here, before any model is loaded
        for i, rep in enumerate(self.interventions.representations):
            if rep.site.positions is None:
                raise ValueError(
                    f"interventions[{i}] needs 'positions' (e.g. 'l1' or 'f1+l1'): the data are located with them"
                )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> "Recipe":
        if not isinstance(data, Mapping):
            raise ValueError(f"a recipe must be a mapping of sections, got {type(data).__name__}")
        _check_keys(data, cls, "the recipe")
        if "data" not in data or "interventions" not in data:
            raise ValueError("the recipe needs a 'data' section (path: ...) and an 'interventions' list")
        raw_data = data["data"] if isinstance(data["data"], Mapping) else {"path": data["data"]}
        _check_keys(raw_data, DataSpec, "data")
        if not isinstance(raw_data.get("path"), str) or not raw_data["path"]:
            raise ValueError(f"data.path={raw_data.get('path')!r}: the data section needs a file name (path: ...)")
        path = Path(raw_data["path"])
        spec = DataSpec(**{**raw_data, "path": str(path if path.is_absolute() else Path(base_dir) / path)})
        gen = data.get("generation") or {}
        _check_keys(gen, GenerationSpec, "generation")
        kwargs: dict[str, Any] = {k: data[k] for k in ("model", "dtype", "output_dir") if k in data}
        return cls(
            data=spec,
            interventions=ReftConfig(representations=data["interventions"]),
            training=TrainConfig.from_mapping(data.get("training") or {}, "training"),
            generation=GenerationSpec(**gen),
            **kwargs,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Recipe":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no recipe file at {path}")
        return cls.from_mapping(_load(path.read_text(), path), base_dir=path.parent)


def _check_keys(data: Mapping[str, Any], cls: type, where: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    known = {f.name: f.metadata.get("help", "") for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        valid = "\n".join(f"  {k}: {h}" for k, h in known.items())
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys:\n{valid}")


def run_recipe(recipe: Recipe, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Load the model, answer the held-out prompts, train, answer them again, save.

    Returns ``{"losses", "before", "after", "output_dir", "seconds"}``; ``before``/``after``
    are lists of ``{"prompt", "text", **metrics}``. The output folder is a reftlab checkpoint (``ReftModel.save``) plus
    ``run.json`` (losses, generations, recipe).
    """
    import time

    import torch

    from .data.build import build_dataset
    from .generate import generate
    from .models.loading import load_model
    from .reft_model import get_reft_model
    from .train.loop import train

    t0 = time.perf_counter()
    out_dir = Path(recipe.output_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "run.json").is_file():
        raise FileExistsError(f"output_dir {out_dir} exists and holds other files; choose an empty or new folder")
    hooked = load_model(recipe.model, dtype=recipe.dtype)
    log(f"model: {hooked!r}  ({time.perf_counter() - t0:.1f}s)")
    reps = recipe.interventions.representations
    dataset = build_dataset(
        recipe.data.path,
        hooked.tokenizer,
        positions=[r.site.positions for r in reps],
        num_interventions=len(reps),
        chat_template=recipe.data.chat_template,
        system_prompt=recipe.data.system_prompt,
        prompt_column=recipe.data.prompt_column,
        response_column=recipe.data.response_column,
        nonstop=recipe.data.nonstop,
        model=hooked,
    )
    log(f"data: {len(dataset)} examples from {recipe.data.path}")
    torch.manual_seed(recipe.training.seed)
    reft_model = get_reft_model(hooked, recipe.interventions)
    log(repr(reft_model))
    gen = recipe.generation

    def answers(model: Any, label: str) -> list[dict[str, Any]]:
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

    before = answers(hooked, "before training (base model)")
    result = train(reft_model, dataset, recipe.training)
    log(
        f"trained {result.steps} steps in {result.seconds:.1f}s (fast path: {result.fast}); final loss {result.losses[-1]:.4f}"
    )
    reft_model.eval()
    after = answers(reft_model, "after training (with the interventions)")
    reft_model.save(out_dir)
    _write_json(
        out_dir / "run.json",
        {"losses": result.losses, "before": before, "after": after, "seconds": time.perf_counter() - t0},
    )
    log(f"saved to {out_dir}/ (a reftlab checkpoint: ReftModel.load(dir, model); plus run.json)")
    return {
        "losses": result.losses,
        "before": before,
        "after": after,
        "output_dir": str(out_dir),
        "seconds": time.perf_counter() - t0,
    }


def _write_json(path: Path, data: Any) -> None:
    import json

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
