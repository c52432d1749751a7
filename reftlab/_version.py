"""reftlab's version, read from the installed package's metadata (``pyproject.toml`` is the one source)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reftlab")
except PackageNotFoundError:  # imported from a source tree that was never installed (pip install -e .)
    __version__ = "0+unknown"
