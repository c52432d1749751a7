"""``reftlab search RECIPE.yaml -o OUT``: find the best ReFT settings for a recipe (``reftlab.search``).

Runs an Optuna study (in ``OUT/study.db``, or ``--storage URL``) with ``--workers N`` processes;
writes ``OUT/trials.csv``, ``OUT/search.html`` and ``OUT/best.yaml``. Run again with the same
arguments (or ``--resume``) to continue an interrupted search; run the same command with the same
PostgreSQL ``--storage`` on other machines to share the study. The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import time

HELP = "search layers, positions, kind, rank and lr for a recipe (an Optuna study); writes OUT/best.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the recipe, e.g. examples/arithmetic.yaml")
    p.add_argument("-o", "--output", required=True, help="output folder (trials.csv, search.html, best.yaml)")
    p.add_argument(
        "--eval", help="the test set the winner is scored on (default: half of the 20%% held out of the recipe's data)"
    )
    p.add_argument("--space", help="a YAML file with the space (layers, positions, kinds, ranks, lrs, component)")
    p.add_argument("--budget", help="wall clock ('15m', '2h') or steps ('400 steps'); default: the recipe's")
    p.add_argument("--max-params", type=int, help="the parameter cap: a trial over it is pruned before it trains")
    p.add_argument(
        "--storage",
        help="the study's database URL, shared by every process and machine of the search "
        "(default: sqlite:///OUT/study.db; several machines: postgresql+psycopg://USER:PASSWORD@HOST/DB)",
    )
    p.add_argument("--study", default="reftlab-search", help="the study's name in the storage")
    p.add_argument("--workers", type=int, default=1, help="processes on this machine running trials of the study")
    p.add_argument("--resume", action="store_true", help="continue the study; an error if the storage has none")
    p.add_argument(
        "--warm-start",
        metavar="EARLIER",
        help="start a new study from the finished trials of an earlier search on the same data (its output folder or storage URL)",
    )
    p.add_argument("--warm-study", help="the earlier study's name (default: --study)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..mapping import load_mapping
    from ..recipe import Recipe
    from ..search import search_recipe
    from ..search.storage import shown

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
        storage=args.storage,
        study=args.study,
        workers=args.workers,
        resume=args.resume,
        warm_start=args.warm_start,
        warm_study=args.warm_study,
        progress=not args.no_progress,
        log=print,
        started=started,
    )
    best_yaml = Path(args.output) / "best.yaml"
    print(
        f"best: {result.best.key} (validation {result.metric} {result.score:.4g}, test {result.test_score:.4g} "
        f"on {result.test_n}, {result.params:,} params)"
    )
    print(f"wrote {best_yaml}; retrain it with: reftlab train {best_yaml}")
    summary = {
        "metric": result.metric,
        "score": round(result.score, 6),
        "test_score": round(result.test_score, 6),
        "test_n": result.test_n,
        "params": result.params,
        "best": result.best.key,
        "trials": int((result.trials["warm_start"] == "").sum()),  # this study's own
        "copied": int((result.trials["warm_start"] != "").sum()),  # by --warm-start
        "stopped": result.stopped,
        "study": result.study,
        "storage": shown(result.storage) if result.storage else None,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary))
    return 0
