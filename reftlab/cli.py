"""The ``reftlab`` command line: ``reftlab train CONFIG.yaml`` (also ``python -m reftlab``)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reftlab", description="Representation finetuning workbench")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train the ReFT a YAML recipe describes (see reftlab.recipe)")
    tr.add_argument("config", help="the recipe, e.g. examples/emoji.yaml")
    tr.add_argument("--output-dir", help="override output_dir")
    tr.add_argument("--epochs", type=int, help="override training.epochs")
    tr.add_argument("--max-steps", type=int, help="override training.max_steps")
    tr.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    from dataclasses import replace

    from .recipe import Recipe, run_recipe

    try:
        recipe = Recipe.from_file(args.config)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"reftlab: {args.config}: {e}", file=sys.stderr)
        return 2
    changes = {k: v for k, v in (("epochs", args.epochs), ("max_steps", args.max_steps)) if v is not None}
    if args.no_progress:
        changes["progress"] = False
    recipe = replace(recipe, training=recipe.training.replace(**changes),
                     output_dir=args.output_dir or recipe.output_dir)
    try:
        run_recipe(recipe)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as e:
        print(f"reftlab: {args.config}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
