"""Docs and docstrings name only what exists: every ``reftlab.x.y`` resolves, every ``tests/...`` path is there."""

import importlib
import re

import pytest
from helpers import REPO

SOURCES = sorted(
    [
        REPO / "README.md",
        REPO / "CONTRIBUTING.md",
        REPO / "CHANGELOG.md",
        *REPO.glob("docs/*.md"),
        *REPO.glob("reftlab/**/*.py"),
        *REPO.glob("benchmarks/*.py"),
        *REPO.glob("analyses/*.py"),
    ]
)
DOTTED = re.compile(r"\breftlab(?:\.[A-Za-z_]\w*)+")
TEST_PATH = re.compile(r"\btests/[\w/]+\.(?:py|sh)\b")


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


@pytest.mark.parametrize("path", [p for p in SOURCES if p.is_file()], ids=lambda p: str(p.relative_to(REPO)))
def test_named_modules_objects_and_test_files_exist(path):
    text = path.read_text(encoding="utf-8")
    missing = sorted({m for m in DOTTED.findall(text) if not resolves(m)})
    missing += sorted({m for m in TEST_PATH.findall(text) if not (REPO / m).exists()})
    assert not missing, f"{path.relative_to(REPO)} names what does not exist: {missing}"
