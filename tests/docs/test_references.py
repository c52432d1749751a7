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


CONTRIBUTING = REPO / "CONTRIBUTING.md"
# A repository path in backticks: a folder/file with a suffix, or a folder ending in "/".
REPO_PATH = re.compile(r"`((?:\.?[\w.-]+/)+[\w.-]*)`")
TEST_NODE = re.compile(r"\b(tests/[\w/]+\.py)::(\w+)")


def test_contributing_names_only_paths_and_tests_that_exist():
    text = CONTRIBUTING.read_text(encoding="utf-8")
    paths = {p for p in REPO_PATH.findall(text) if "<" not in p and "..." not in p and not p.startswith(".")}
    # a bare room such as `io/` is a folder of the package; dot-folders (.venv, .mypy_cache) are made locally
    missing = sorted(p for p in paths if not (REPO / p).exists() and not (REPO / "reftlab" / p).exists())
    missing += sorted(
        f"{f}::{name}" for f, name in TEST_NODE.findall(text) if f"def {name}(" not in (REPO / f).read_text()
    )
    assert paths, "CONTRIBUTING.md names no file path: the pattern above is out of date"
    assert not missing, f"CONTRIBUTING.md names what does not exist: {missing}"


def test_contributing_house_picture_has_the_floors_of_test_house():
    from test_house import FLOORS

    text = CONTRIBUTING.read_text(encoding="utf-8")
    picture = text[text.index("## The house in one picture") :].split("```")[1]
    drawn: dict[str, int] = {}
    for line in picture.splitlines():
        if m := re.match(r"\s*(\d+)\s+(.*)", line):
            for room in re.findall(r"([\w]+)(?:\.py|/)", m.group(2)):
                drawn[room] = int(m.group(1))
    assert drawn == FLOORS, f"CONTRIBUTING.md's picture and tests/test_house.py's FLOORS differ: {drawn} != {FLOORS}"
