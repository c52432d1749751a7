"""``reftlab eval CHECKPOINT --data FILE``: score a saved ReFT on held-out data (``reftlab.evaluate``).

Prints the per-example table's head and, as its LAST line, the summary as JSON, e.g.
``{"metric": "exact_match", "score": 0.5, "n": 120, "trainable_params": 4612}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..atomic import write_text
from ..metrics import METRICS
from . import _positions

HELP = "score a saved ReFT checkpoint on held-out data; the last line is a JSON summary"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a folder written by ReftModel.save (or reftlab train)")
    p.add_argument("--data", required=True, help=".jsonl/.json/.csv examples (prompt + response, choices or label)")
    p.add_argument("--metric", choices=sorted(METRICS), help="default: exact_match, or accuracy for choices/classes")
    p.add_argument("--task", choices=["generation", "multiple_choice", "classification"], help="default: from the data")
    p.add_argument("--labels", help="classification: class names in head order, comma-separated")
    _positions.add_arguments(
        p, what="positions the interventions edit", extra="; --compare's checkpoint takes them too"
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
    from ..reft_model import ReftModel

    if not Path(args.checkpoint).is_dir():
        raise FileNotFoundError(f"no checkpoint folder at {args.checkpoint}")
    if not Path(args.data).is_file():
        raise FileNotFoundError(f"no data file at {args.data}")
    if args.output and not str(args.output).endswith(".csv"):
        raise ValueError(f"-o {args.output}: the table is written as CSV; give a path ending in .csv")
    checkpoint = Path(args.checkpoint)
    task, labels = _recorded_task(checkpoint)
    labels = args.labels.split(",") if args.labels else labels

    def load(folder: Path) -> Any:  # each on its own base: a classifier's head belongs to its checkpoint
        if args.model is None:
            loaded = ReftModel.load(folder)  # onto the base model the checkpoint records
        else:
            loaded = ReftModel.load(folder, _base(folder, args.model))
        _mark_trained(loaded, folder)
        _check_labels(loaded.hooked, labels)
        return _positions.apply(loaded, args.positions, folder)

    reft_model = load(checkpoint)
    compare: str | dict[str, ReftModel] | None = None
    if args.compare == "base":
        compare = "base"
    elif args.compare:
        compare = {Path(args.compare).name or "other": load(Path(args.compare))}
    print("positions: " + _positions.describe(reft_model, bool(args.positions)))
    result = evaluate(
        reft_model,
        args.data,
        metric=args.metric,
        task=args.task or task,
        labels=labels,
        chat_template=args.chat_template,
        system_prompt=args.system_prompt,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        compare=compare,
        progress=args.progress,
    )
    if args.output:
        write_text(args.output, result.table.to_csv(index=False))
        print(f"wrote {args.output} ({result.n} rows)")
    else:
        with __import__("pandas").option_context("display.max_colwidth", 40, "display.width", 160):
            print(result.table.head(10).to_string(index=False))
    print(json.dumps({**result.summary(), "positions": reft_model.positions_used()}))
    return 0


def _recorded_task(checkpoint: Path) -> tuple[str | None, list[str] | None]:
    """The task type and class names a ``reftlab train`` run recorded in ``run.json`` (if any)."""
    run = checkpoint / "run.json"
    if not run.is_file():
        return None, None
    data = json.loads(run.read_text())
    return data.get("task"), data.get("labels")


def _base(checkpoint: Path, model: str) -> Any:
    """``--model`` as the base: a sequence classifier (head size from the checkpoint) when the
    checkpoint was trained on one, else the causal LM."""
    from ..io import read_native
    from ..io.folder import saved_num_labels
    from ..models.classifier import load_classifier
    from ..models.loading import load_model

    try:
        architecture = read_native(checkpoint).identity.architecture
    except (ValueError, FileNotFoundError, OSError):
        architecture = ""  # not a native checkpoint: ReftModel.load says what it is
    if architecture.endswith("ForSequenceClassification"):
        return load_classifier(model, num_labels=saved_num_labels(checkpoint))
    return load_model(model)


def _check_labels(hooked: Any, labels: list[str] | None) -> None:
    """A classifier's class names must be known (run.json or --labels) and match its head."""
    if not type(hooked.hf_model).__name__.endswith("ForSequenceClassification"):
        return
    n = int(hooked.hf_model.config.num_labels)
    if labels is None:
        raise ValueError(
            f"a classification checkpoint without a run.json needs --labels (its {n} class names in head order)"
        )
    if len(labels) != n:
        raise ValueError(f"--labels names {len(labels)} classes, the checkpoint's head has {n}")


def _mark_trained(reft_model: Any, checkpoint: Path) -> None:
    """Flag the base parameters the checkpoint trained (a head) as the ReFT's, so they are counted."""
    from ..io import BASE_FILE

    if not (checkpoint / BASE_FILE).is_file():
        return
    from safetensors import safe_open

    with safe_open(str(checkpoint / BASE_FILE), "pt") as f:
        names = set(f.keys())
    for name, p in reft_model.model.named_parameters():
        if name in names:
            p.requires_grad_(True)
