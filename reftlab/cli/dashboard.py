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


def run(args: argparse.Namespace) -> int:
    from ..viz import dashboard_main

    path = dashboard_main(args.checkpoint, args.prompts, args.output, model=args.model)
    print(f"wrote {path}")
    return 0
