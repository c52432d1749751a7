"""The ``reftlab`` command line (also ``python -m reftlab``).

- ``reftlab train CONFIG.yaml``: train the ReFT a recipe describes, then save it.
- ``reftlab dashboard CHECKPOINT --prompts FILE -o report.html``: one offline HTML report.
"""

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
    db = sub.add_parser("dashboard", help="write a self-contained HTML report of a saved ReFT checkpoint")
    db.add_argument("checkpoint", help="a folder written by ReftModel.save")
    db.add_argument("--prompts", required=True, help="prompts: .txt (one per line), .jsonl/.json/.csv with 'prompt'")
    db.add_argument("-o", "--output", default="report.html", help="the HTML file to write")
    db.add_argument("--model", help="base model name or local HF folder (default: the embedded SmolLM2)")
    args = parser.parse_args(argv)
    if args.command == "dashboard":
        return _dashboard(args)

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


def _dashboard(args: argparse.Namespace) -> int:
    from .viz import dashboard_main

    try:
        path = dashboard_main(args.checkpoint, args.prompts, args.output, model=args.model)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"reftlab dashboard: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
