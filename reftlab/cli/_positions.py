"""``--positions`` for commands that load checkpoints: what the interventions edit, and how it is reported.

A checkpoint saved pyreft's way records no positions (they are given per call); these
commands take them on the command line (``ReftModel.with_positions``) and say which were used.
"""

from __future__ import annotations

import argparse
from typing import Any

HOW = (
    "one spec for every intervention, e.g. l1 or f1+l1, or one per intervention in order "
    "(needed for checkpoints saved without positions, e.g. pyreft's)"
)


def add_arguments(p: argparse.ArgumentParser, *, what: str, extra: str = "") -> None:
    """``--model`` (default: the base the checkpoint records) and ``--positions`` (``what``: HOW),
    as every command that runs one checkpoint takes them."""
    p.add_argument(
        "--model",
        help="base model: the embedded name, a local HF folder or a Hub id (default: the one the checkpoint records)",
    )
    p.add_argument("--positions", nargs="+", metavar="SPEC", help=f"{what}: {HOW}{extra}")


def apply(reft_model: Any, specs: list[str] | None, where: object) -> Any:
    """``specs`` (one for all, or one per intervention) applied to ``reft_model``; without them every
    site must have positions of its own, else the error says how to give them."""
    if specs:
        n = len(reft_model.interventions)
        if len(specs) not in (1, n):
            raise ValueError(
                f"--positions gives {len(specs)} specs, but {where} has {n} interventions: "
                "give one spec for all of them or one per intervention"
            )
        reft_model = reft_model.with_positions(specs[0] if len(specs) == 1 else list(specs))
    missing = [k for k, p in reft_model.positions_used().items() if p is None]
    if missing:
        raise ValueError(
            f"{where}: intervention {missing[0]!r} has no positions of its own (checkpoints saved pyreft's way "
            "record none); pass --positions SPEC, e.g. --positions l1 (one spec for every intervention, "
            "or one per intervention in order)"
        )
    return reft_model


def describe(reft_model: Any, given: bool) -> str:
    """``key=f1+l1 (given)`` per intervention: what is edited, and whether it came from --positions or the checkpoint."""
    how = "given" if given else "saved"
    return ", ".join(f"{k}={p} ({how})" for k, p in reft_model.positions_used().items())
