"""Where a base model comes from: the embedded name, a local folder, or a Hub id.

One rule tells a Hub id from a path, for ``load_model`` and ``ReftModel.load`` alike
(``classify``). A string is, in this order:

1. ``"smollm2-135m-instruct"``: the embedded model (``load_model`` only);
2. an existing folder (``~`` expanded): that folder; an existing file is an error;
3. path-like: a folder that does not exist ("no such folder"). Path-like means it starts
   with ``/``, ``./``, ``../`` or ``~``, holds a backslash, ends in ``/``, has more than
   one ``/`` (Hub ids have at most one), or its first segment is an existing folder of
   the working directory (``runs/emoj`` while ``runs/`` exists);
4. otherwise a valid Hub id (``name`` or ``org/name``; huggingface_hub's own grammar);
5. anything else: "no such folder, and not a valid Hub id".

A ``ModelSource`` is what a checkpoint records to load its base again: ``ref`` (one of
the strings above; folders absolute), the Hub ``revision`` (a commit hash when known) and
a human ``name``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

EMBEDDED = "smollm2-135m-instruct"
EMBEDDED_LABEL = f"{EMBEDDED} (Q4_1 GGUF, dequantized)"

Kind = Literal["embedded", "folder", "hub"]


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """How to load a base model again: ``reftlab.load_model(ref, revision=revision)``.

    ``ref`` is None when the model was built in memory and nothing says where it came from.
    """

    ref: str | None
    revision: str | None = None
    name: str = ""

    @property
    def kind(self) -> Kind | None:
        if self.ref is None:
            return None
        if self.ref == EMBEDDED:
            return "embedded"
        return "folder" if os.path.isabs(self.ref) else "hub"

    @property
    def hub_id(self) -> str | None:
        """The Hub id, for a model loaded from the Hub (never the embedded GGUF)."""
        return self.ref if self.kind == "hub" else None


def is_path_like(name: str) -> bool:
    """True when ``name`` can only be meant as a path (see the module docstring, rule 3).

    >>> [is_path_like(s) for s in ("org/name", "gpt2", "./x", "a/b/c", "/abs", "x/")]
    [False, False, True, True, True, True]
    """
    if name in (".", "..") or name.startswith(("/", "./", "../", "~")) or "\\" in name or name.endswith("/"):
        return True
    if name.count("/") > 1:
        return True
    head = name.split("/", 1)[0]
    return "/" in name and Path(head).is_dir()


def is_hub_id(name: str) -> bool:
    """A syntactically valid Hub repo id that is not path-like.

    >>> is_hub_id("meta-llama/Llama-3.2-1B-Instruct"), is_hub_id("my model"), is_hub_id("./x")
    (True, False, False)
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if is_path_like(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def classify(name: str | os.PathLike, *, embedded: bool = True, what: str = "folder") -> tuple[Kind, str]:
    """``(kind, ref)`` for a model name, folder or Hub id; raises for a missing path.

    ``ref`` is the absolute folder for ``"folder"``. ``embedded=False`` treats the
    embedded name like any other string (checkpoints, not models); ``what`` names the
    thing in the error.
    """
    text = os.fspath(name)
    if embedded and text == EMBEDDED:
        return "embedded", EMBEDDED
    path = Path(text).expanduser()
    if path.is_dir():
        return "folder", str(path.resolve())
    if path.exists():
        raise NotADirectoryError(f"{text} is a file; pass the folder that holds it")
    if is_hub_id(text):
        return "hub", text
    why = (
        "it looks like a path"
        if is_path_like(text)
        else "it is not a valid Hub id either ('name' or 'org/name': letters, digits, '-', '_', '.')"
    )
    raise FileNotFoundError(f"no such {what}: {text} (relative to {Path.cwd()}); {why}")


def guess_source(name: str, commit: str | None = None) -> ModelSource | None:
    """A best guess from an HF config's ``_name_or_path`` (and ``_commit_hash``), for in-memory models.

    >>> guess_source("/home/me/.cache/reftlab/smollm2-135m-instruct").name
    'smollm2-135m-instruct (Q4_1 GGUF, dequantized)'
    """
    if not name:
        return None
    if Path(name).name == EMBEDDED:
        return ModelSource(ref=EMBEDDED, name=EMBEDDED_LABEL)
    if Path(name).expanduser().is_dir():
        return ModelSource(ref=str(Path(name).expanduser().resolve()), name=name)
    if is_hub_id(name):
        return ModelSource(ref=name, revision=commit or None, name=name)
    return None
