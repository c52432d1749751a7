"""``reftlab dashboard CHECKPOINT --prompts FILE -o report.html``: one offline HTML report."""

from __future__ import annotations

import argparse

HELP = "write a self-contained HTML report of a saved ReFT checkpoint"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a folder written by ReftModel.save")
    p.add_argument("--prompts", required=True, help="prompts: .txt (one per line), .jsonl/.json/.csv with 'prompt'")
    p.add_argument("-o", "--output", default="report.html", help="the HTML file to write")
    p.add_argument(
        "--model",
        help="base model: the embedded name, a local HF folder or a Hub id (default: the one the checkpoint records)",
    )
    p.add_argument("--concept-report", help="a concept report (reftlab concepts fit's report.html) to link to")


def run(args: argparse.Namespace) -> int:
    from ..viz import dashboard_main

    options = {} if args.concept_report is None else {"concept_report": args.concept_report}
    path = dashboard_main(args.checkpoint, args.prompts, args.output, model=args.model, **options)
    print(f"wrote {path}")
    return 0
