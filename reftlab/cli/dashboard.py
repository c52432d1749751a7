"""``reftlab dashboard CHECKPOINT [--prompts FILE] -o report.html``: one offline HTML report."""

from __future__ import annotations

import argparse

from . import _positions

HELP = "write a self-contained HTML report of a saved ReFT checkpoint"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a folder written by ReftModel.save or reftlab train")
    p.add_argument(
        "--prompts",
        help="prompts: .txt (one per line), .jsonl/.json/.csv with 'prompt' "
        "(default: the held-out prompts of the checkpoint's run.json)",
    )
    p.add_argument("-o", "--output", default="report.html", help="the HTML file to write")
    _positions.add_arguments(p, what="positions to analyse")
    p.add_argument(
        "--no-chat-template",
        action="store_true",
        help="analyse the prompts as raw text, not formatted as in training (recorded with the checkpoint)",
    )
    p.add_argument("--concept-report", help="a concept report (reftlab concepts fit's report.html) to link to")


def run(args: argparse.Namespace) -> int:
    from ..analysis.capture import MissingPositions
    from ..viz import dashboard_main

    positions = None if not args.positions else args.positions[0] if len(args.positions) == 1 else args.positions
    try:
        path = dashboard_main(
            args.checkpoint,
            args.prompts,
            args.output,
            model=args.model,
            positions=positions,
            prompt_format=False if args.no_chat_template else None,
            concept_report=args.concept_report,
        )
    except MissingPositions as e:
        raise ValueError(
            f"intervention {e.key!r} at {e.hook} has no positions of its own (checkpoints saved pyreft's way "
            "record none); pass --positions SPEC, e.g. --positions l1 (one spec for every intervention, "
            "or one per intervention in order)"
        ) from None
    print(f"wrote {path}")
    return 0
