"""Nothing half-written on disk: every file and folder reftlab writes goes through here.

``atomic_folder(target)`` yields an empty temporary sibling folder; when the block ends
without an exception it replaces ``target`` (two renames when ``target`` exists: old ->
backup, new -> target, the backup restored if the second fails). ``write_bytes``,
``write_text`` and ``write_json`` write a temporary sibling file and rename it over the path. A crash or
exception before the rename leaves whatever was at the path as it was, and the
temporary file or folder is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``target``.

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_folder(root / "ckpt") as tmp:
    ...     _ = (tmp / "a.txt").write_text("hi")
    >>> (root / "ckpt" / "a.txt").read_text()
    'hi'
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} exists and is not a folder; choose another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling file and a rename."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary sibling file and a rename.

    >>> import tempfile, pathlib
    >>> p = write_text(pathlib.Path(tempfile.mkdtemp()) / "a.txt", "hi")
    >>> p.read_text(), sorted(x.name for x in p.parent.iterdir())
    ('hi', ['a.txt'])
    """
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """``write_text(path, json.dumps(data, indent=2) + "\\n")``, non-ASCII kept as is."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _swap_in(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.replace(tmp, target)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    backup.rmdir()
    os.replace(target, backup)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)
