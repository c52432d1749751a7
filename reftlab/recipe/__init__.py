"""A training recipe: what ``reftlab train CONFIG.yaml`` reads, checks and runs.

    model: smollm2-135m-instruct        # the embedded default, a local HF folder, or a Hub id
    revision: null                      # a Hub branch, tag or commit (Hub ids only)
    dtype: float32                      # or auto (the checkpoint's own), bfloat16, float16
    data: {path: emoji.jsonl, chat_template: true}     # path relative to the YAML file
    interventions:                      # ReftConfig representations (native or pyreft keys)
      - {layer: 6, component: block_output, positions: f1+l1, kind: loreft, rank: 4}
    training: {epochs: 40, batch_size: 10, lr: 8.0e-3}  # any TrainConfig field
    generation: {prompts: [...], max_new_tokens: 32, metrics: [emoji_fraction]}
    output_dir: runs/emoji              # relative to the working directory

Recipes on other tasks add a ``task`` type, a data source and a held-out evaluation::

    task: multiple_choice               # generation (default), multiple_choice, classification
    data: {bigbench: {task: social_iqa, stop: 400}, chat_template: true}
    evaluation: {data: {bigbench: {task: social_iqa, start: 400, stop: 500}}, metric: accuracy}
    search: {budget: 20m, max_params: 23040}   # defaults for `reftlab search` (reftlab.search)

Every section is a frozen dataclass; an unknown key is an error that names it and lists
the valid ones, before any model is loaded.
"""

from .run import encode_for, evaluate_recipe, load_base, recipe_examples, run_recipe
from .spec import METRICS, DataSpec, EvaluationSpec, GenerationSpec, Recipe

__all__ = [
    "METRICS",
    "DataSpec",
    "EvaluationSpec",
    "GenerationSpec",
    "Recipe",
    "encode_for",
    "evaluate_recipe",
    "load_base",
    "recipe_examples",
    "run_recipe",
]
