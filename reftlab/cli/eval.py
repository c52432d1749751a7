"""``reftlab eval CHECKPOINT --data FILE``: score a saved ReFT on held-out data (``reftlab.evaluate``).

Prints the per-example table's head and, as its LAST line, the summary as JSON, e.g.
``{"metric": "exact_match", "score": 0.5, "n": 120, "trainable_params": 4612}``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..metrics import METRICS

HELP = "score a saved ReFT checkpoint on held-out data; the last line is a JSON summary"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a folder written by ReftModel.save (or reftlab train)")
    p.add_argument("--data", required=True, help=".jsonl/.json/.csv examples (prompt + response, choices or label)")
    p.add_argument("--metric", choices=sorted(METRICS), help="default: exact_match, or accuracy for choices/classes")
    p.add_argument("--task", choices=["generation", "multiple_choice", "classification"], help="default: from the data")
    p.add_argument("--labels", help="classification: class names in head order, comma-separated")
    p.add_argument(
        "--model",
        help="base model: the embedded name, a local HF folder or a Hub id (default: the one the checkpoint records)",
    )
    p.add_argument("--compare", help="'base' (no intervention) or another checkpoint folder, on the same data")
    p.add_argument("-o", "--output", help="write the per-example table here (.csv)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument(
        "--chat-template",
        dest="chat_template",
        action="store_true",
        default=None,
        help="format prompts with the tokenizer's chat template (default: as the checkpoint records)",
    )
    fmt.add_argument("--no-chat-template", dest="chat_template", action="store_false", help="raw prompts")
    p.add_argument("--system-prompt", help="a system message (with --chat-template)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per prompt (greedy)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per batch")
    p.add_argument("--progress", action="store_true", help="show a progress bar")


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate
    from ..models.loading import load_model
    from ..reft_model import ReftModel

    if not Path(args.checkpoint).is_dir():
        raise FileNotFoundError(f"no checkpoint folder at {args.checkpoint}")
    if not Path(args.data).is_file():
        raise FileNotFoundError(f"no data file at {args.data}")
    if args.output and not str(args.output).endswith(".csv"):
        raise ValueError(f"-o {args.output}: the table is written as CSV; give a path ending in .csv")
    if args.model is None:
        reft_model = ReftModel.load(args.checkpoint)  # onto the base model the checkpoint records
    else:
        reft_model = ReftModel.load(args.checkpoint, load_model(args.model))
    hooked = reft_model.hooked
    compare = None
    if args.compare == "base":
        compare = "base"
    elif args.compare:
        compare = {Path(args.compare).name or "other": ReftModel.load(args.compare, hooked)}
    result = evaluate(
        reft_model,
        args.data,
        metric=args.metric,
        task=args.task,
        labels=args.labels.split(",") if args.labels else None,
        chat_template=args.chat_template,
        system_prompt=args.system_prompt,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        compare=compare,
        progress=args.progress,
    )
    if args.output:
        tmp = Path(args.output).with_name(f".{Path(args.output).name}.tmp")
        result.table.to_csv(tmp, index=False)
        os.replace(tmp, args.output)
        print(f"wrote {args.output} ({result.n} rows)")
    else:
        with __import__("pandas").option_context("display.max_colwidth", 40, "display.width", 160):
            print(result.table.head(10).to_string(index=False))
    print(json.dumps(result.summary()))
    return 0
