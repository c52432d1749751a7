"""Reading and checking config mappings: YAML/JSON text, and the one "unknown key" error.

Every file format of reftlab (``ReftConfig`` files, recipes, search spaces, training sections,
BIG-bench sources) reads its text with ``load_mapping`` and checks its keys with ``check_keys``,
so a typo gets the same error everywhere: the unknown keys, where, and every valid key with
its help string.

    >>> check_keys({"rank": 4}, {"rank": "rank", "kind": "intervention kind"}, "representations[0]")
    >>> check_keys({"rnak": 4}, {"rank": "rank", "kind": "intervention kind"}, "representations[0]")
    Traceback (most recent call last):
    ...
    ValueError: unknown key(s) ['rnak'] in representations[0]; valid keys:
      rank: rank
      kind: intervention kind
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any


def check_keys(data: Any, known: type | Mapping[str, str], where: str, *, aliases: Iterable[str] = ()) -> None:
    """Raise if ``data`` is not a mapping, or has a key that is not a field of ``known``.

    ``known``: a dataclass (its fields, with each field's ``metadata["help"]``) or a mapping of
    key -> help. ``aliases``: further accepted keys that the caller renames itself.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    helps = _helps(known)
    unknown = sorted(set(data) - set(helps) - set(aliases))
    if unknown:
        valid = "\n".join(f"  {k}: {h}" for k, h in helps.items())
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys:\n{valid}")


def _helps(known: type | Mapping[str, str]) -> dict[str, str]:
    if isinstance(known, Mapping):
        return dict(known)
    if not is_dataclass(known):
        raise TypeError(f"check_keys: known must be a dataclass or a mapping, got {known!r}")
    return {f.name: str(f.metadata.get("help", "")) for f in fields(known)}


def load_mapping(text: str, path: Path) -> Any:
    """Parse ``text`` as YAML (``.yaml``/``.yml``) or JSON (``.json``) by ``path``'s suffix; errors
    name the file, the problem and its line."""
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ValueError(f"{path} is not valid YAML ({problem}{where})") from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    raise ValueError(f"config file {path} must end in .json, .yaml or .yml")
