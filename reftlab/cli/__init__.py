"""The ``reftlab`` command line (also ``python -m reftlab``).

One module per command in this package; each has ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. A new command is a new module plus one line in ``COMMANDS``.

Errors a user can fix (bad files, bad settings, a missing package) print one line naming
the problem and the fix, and exit with code 2; ``REFTLAB_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

# name -> module under reftlab.cli (imported only when its command runs, or to build --help)
COMMANDS: dict[str, str] = {
    "train": "train",
    "dashboard": "dashboard",
    "concepts": "concepts",
    "search": "search",
    "eval": "eval",
    "serve": "serve",
    "das": "das",
}

# What a user can fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    PermissionError,
    RuntimeError,
    ImportError,
)  # not KeyError: reftlab raises none on purpose, so one is a bug and keeps its traceback


class _Parser(argparse.ArgumentParser):
    """argparse, with a wrong argument reported like every other user error: one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reftlab", description="Representation finetuning workbench")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"{__name__}.{module}")
        mod.add_arguments(sub.add_parser(name, help=mod.HELP, description=mod.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or a wrong argument already reported in one line (2)
        return e.code if isinstance(e.code, int) else 2
    mod = importlib.import_module(f"{__name__}.{COMMANDS[args.command]}")
    try:
        return int(mod.run(args))
    except USER_ERRORS as e:
        if os.environ.get("REFTLAB_DEBUG"):
            raise
        print(f"reftlab {args.command}: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reftlab {args.command}: interrupted", file=sys.stderr)
        return 130
