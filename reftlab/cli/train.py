"""``reftlab train RECIPE.yaml``: train the ReFT a recipe describes, then save it."""

from __future__ import annotations

import argparse
from dataclasses import replace

HELP = "train the ReFT a YAML recipe describes (see reftlab.recipe)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the recipe, e.g. examples/emoji.yaml")
    p.add_argument("--output-dir", help="override output_dir")
    p.add_argument("--epochs", type=int, help="override training.epochs")
    p.add_argument("--max-steps", type=int, help="override training.max_steps")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from ..recipe import Recipe, run_recipe

    try:
        recipe = Recipe.from_file(args.config)
        changes = {k: v for k, v in (("epochs", args.epochs), ("max_steps", args.max_steps)) if v is not None}
        if args.no_progress:
            changes["progress"] = False
        recipe = replace(
            recipe, training=recipe.training.replace(**changes), output_dir=args.output_dir or recipe.output_dir
        )
        run_recipe(recipe)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as e:
        raise type(e)(f"{args.config}: {e}") from None
    return 0
