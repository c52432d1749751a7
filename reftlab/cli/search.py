"""``reftlab search RECIPE.yaml -o OUT``: find the best ReFT settings for a recipe (``reftlab.search``).

Writes ``OUT/trials.csv``, ``OUT/search.html`` and ``OUT/best.yaml``; run again with the
same arguments to resume an interrupted search. The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import time

HELP = "search layers, positions, kind, rank and lr for a recipe (successive halving); writes OUT/best.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the recipe, e.g. examples/arithmetic.yaml")
    p.add_argument("-o", "--output", required=True, help="output folder (trials.csv, search.html, best.yaml)")
    p.add_argument("--eval", help="held-out examples to score on (default: hold out 20%% of the recipe's data)")
    p.add_argument("--space", help="a YAML file with the space (layers, positions, kinds, ranks, lrs, component)")
    p.add_argument("--budget", help="wall clock ('15m', '2h') or steps ('400 steps'); default: the recipe's")
    p.add_argument("--max-params", type=int, help="the parameter cap of a candidate")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..mapping import load_mapping
    from ..recipe import Recipe
    from ..search import search_recipe

    started = time.monotonic()
    try:
        recipe = Recipe.from_file(args.config)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise type(e)(f"{args.config}: {e}") from None
    space = None
    if args.space:
        path = Path(args.space)
        if not path.is_file():
            raise FileNotFoundError(f"no space file at {path}")
        space = load_mapping(path.read_text(), path) or {}
    result = search_recipe(
        recipe,
        args.output,
        eval_data=args.eval,
        space=space,
        budget=args.budget,
        max_params=args.max_params,
        progress=not args.no_progress,
        log=print,
        started=started,
    )
    best_yaml = Path(args.output) / "best.yaml"
    print(f"best: {result.best.key} ({result.metric} {result.score:.4g}, {result.params:,} params)")
    print(f"wrote {best_yaml}; retrain it with: reftlab train {best_yaml}")
    summary = {
        "metric": result.metric,
        "score": round(result.score, 6),
        "params": result.params,
        "best": result.best.key,
        "trials": len(result.trials),
        "stopped": result.stopped,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary))
    return 0
