"""BIG-bench task files, read offline from the ``bigbench`` source archive on PyPI.

The ``bigbench`` sdist (Apache-2.0, about 358 MB) carries every task's ``task.json``
under ``bigbench/benchmark_tasks/{task}[/{subtask}]/``. Its install requirements are
heavy (tensorflow, t5, seqio), so it is never installed: the archive is fetched once
with ``pip download --no-deps`` into ``$REFTLAB_CACHE/bigbench/`` (checked against
its sha256), and each task file a recipe names is extracted once into
``$REFTLAB_CACHE/bigbench/tasks/``. Nothing of BIG-bench is part of reftlab itself.

    source = BigBenchSource(task="arithmetic", subtasks=("2_digit_addition",), stop=300)
    examples = source.examples("generation")   # [{"prompt", "response", "choices", "answer"}]

A task file holds ``examples`` of ``{"input", "target"}`` (free text) and/or
``{"input", "target_scores": {choice: score}}`` (multiple choice), plus an optional
``task_prefix``. ``examples`` turns them into reftlab's example dicts
(``reftlab.data.tasks``): the prompt is ``task_prefix`` + ``input``; generation takes
``target`` (its first entry if a list) else the best-scored choice.

Where a package index does not serve ``bigbench==1.0.0`` (some mirrors keep only 0.0.1, which
has no task files), ``$REFTLAB_BIGBENCH`` can name a clone of BIG-bench's git repository (or its
``bigbench/benchmark_tasks`` folder): the task files are then read from there, the archive and its
cache untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_bytes
from ..mapping import check_keys
from ..models.loading import cache_dir

PACKAGE = "bigbench==1.0.0"
ARCHIVE = "bigbench-1.0.0.tar.gz"
SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
_TASKS_DIR = "bigbench/benchmark_tasks/"
CHECKOUT_ENV = "REFTLAB_BIGBENCH"


def bigbench_dir() -> Path:
    """``$REFTLAB_CACHE/bigbench``: the archive and the extracted task files."""
    return cache_dir() / "bigbench"


def archive_path(*, download: bool = True, log: Any = print) -> Path:
    """The cached ``bigbench`` sdist; fetched with pip on first use (a few minutes).

    Put a copy of ``bigbench-1.0.0.tar.gz`` at this path to work without a package index.
    """
    target = bigbench_dir() / ARCHIVE
    if target.is_file():
        return target
    if not download:
        raise FileNotFoundError(f"the BIG-bench archive is not cached at {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        log(f"fetching the BIG-bench task files: pip download --no-deps {PACKAGE} (358 MB, once) ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", PACKAGE, "-d", str(tmp)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        got = tmp / ARCHIVE
        if done.returncode != 0 or not got.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(
                f"could not fetch {PACKAGE} with pip ({' / '.join(tail) or 'no output'}); "
                f"download {ARCHIVE} from PyPI by hand and put it at {target}, or set ${CHECKOUT_ENV} "
                "to a clone of BIG-bench's git repository (google/BIG-bench)"
            )
        digest = _sha256(got)
        if digest != SHA256:
            raise RuntimeError(f"{ARCHIVE} from pip has sha256 {digest}, expected {SHA256}; not using it")
        os.replace(got, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_task(task: str, subtask: str | None = None, *, download: bool = True) -> dict[str, Any]:
    """The parsed ``task.json`` of ``task`` (or of ``task/subtask``), extracted once and cached."""
    rel = f"{task}/{subtask}" if subtask else task
    if not rel or any(part in ("", ".", "..") for part in rel.split("/")):
        raise ValueError(f"bad BIG-bench task name {rel!r}")
    checkout = checkout_dir()
    if checkout is not None:
        path = checkout / rel / "task.json"
        if not path.is_file():
            names = [str(p.parent.relative_to(checkout)) for p in checkout.glob("**/task.json")]
            raise _unknown(f"BIG-bench at {checkout}", rel, task, subtask, names)
        return json.loads(path.read_text())
    cached = bigbench_dir() / "tasks" / rel / "task.json"
    if not cached.is_file():
        archive = archive_path(download=download)
        data, names = _extract(archive, f"{_TASKS_DIR}{rel}/task.json")
        if data is None:
            raise _unknown("BIG-bench", rel, task, subtask, names)
        write_bytes(cached, data)
    return json.loads(cached.read_text())


def _unknown(where: str, rel: str, task: str, subtask: str | None, names: list[str]) -> ValueError:
    """The error for a task ``rel`` that ``names`` (every task/subtask seen) lacks, naming the nearest ones."""
    near = sorted(n for n in names if n.split("/")[0] == task) or sorted({n.split("/")[0] for n in names})
    return ValueError(f"{where} has no task {rel!r}; {'its subtasks' if subtask else 'tasks'}: {near[:60]}")


def checkout_dir() -> Path | None:
    """The ``benchmark_tasks`` folder of the checkout ``$REFTLAB_BIGBENCH`` names, or None when unset."""
    value = os.environ.get(CHECKOUT_ENV)
    if not value:
        return None
    root = Path(value).expanduser()
    for folder in (root / _TASKS_DIR, root):
        if folder.is_dir() and folder.name == "benchmark_tasks":
            return folder
    raise FileNotFoundError(
        f"${CHECKOUT_ENV}={value}: no {_TASKS_DIR} folder there; point it at a clone of BIG-bench's git "
        "repository (or unset it to read the bigbench archive from PyPI)"
    )


def _extract(archive: Path, suffix: str) -> tuple[bytes | None, list[str]]:
    """One pass over the archive: the member ending in ``suffix``, and every task name seen."""
    names: list[str] = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = member.name
            if not (member.isfile() and name.endswith("/task.json") and _TASKS_DIR in name):
                continue
            rel = name.split(_TASKS_DIR, 1)[1][: -len("/task.json")]
            if name.endswith("/" + suffix) or name == suffix:
                f = tar.extractfile(member)
                return (f.read() if f is not None else None), names
            names.append(rel)
    return None, names


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True, kw_only=True)
class BigBenchSource:
    """A slice of one BIG-bench task (or of several of its subtasks, pooled).

    The examples of the subtasks are pooled in order, shuffled with ``seed``, then
    ``[start:stop]`` is taken: two sources that differ only in start/stop give disjoint
    train and test sets.
    """

    task: str = field(metadata={"help": "a BIG-bench task, e.g. arithmetic, social_iqa, sports_understanding"})
    subtasks: Sequence[str] = field(
        default=(), metadata={"help": "subtasks pooled together, e.g. [2_digit_addition, 2_digit_subtraction]"}
    )
    seed: int = field(default=0, metadata={"help": "shuffle seed of the pooled examples"})
    start: int = field(default=0, metadata={"help": "first example taken after the shuffle"})
    stop: int | None = field(default=None, metadata={"help": "one past the last example taken (None: all)"})

    def __post_init__(self) -> None:
        subtasks = (self.subtasks,) if isinstance(self.subtasks, str) else tuple(self.subtasks)
        object.__setattr__(self, "subtasks", subtasks)
        if not isinstance(self.task, str) or not self.task:
            raise ValueError(f"bigbench.task={self.task!r} must be a task name such as 'arithmetic'")
        if not isinstance(self.start, int) or self.start < 0:
            raise ValueError(f"bigbench.start={self.start!r} must be an int >= 0")
        if self.stop is not None and (not isinstance(self.stop, int) or self.stop <= self.start):
            raise ValueError(f"bigbench.stop={self.stop!r} must be None or an int > start={self.start}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "BigBenchSource":
        check_keys(data, cls, "bigbench", aliases=("subtask",))
        data = dict(data)
        if "subtask" in data:
            data["subtasks"] = data.pop("subtask")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "subtasks": list(self.subtasks),
            "seed": self.seed,
            "start": self.start,
            "stop": self.stop,
        }

    def raw_examples(self, *, download: bool = True) -> list[dict[str, Any]]:
        """The selected BIG-bench example dicts, each with the ``task_prefix`` of its file."""
        pooled: list[dict[str, Any]] = []
        for sub in self.subtasks or (None,):
            data = load_task(self.task, sub, download=download)
            if not data.get("examples"):
                subs = "" if sub else " (it may be split into subtasks: name one in 'subtasks')"
                raise ValueError(f"BIG-bench task {self.task}{'/' + sub if sub else ''} has no examples{subs}")
            prefix = str(data.get("task_prefix") or "")
            pooled += [{**ex, "task_prefix": prefix} for ex in data["examples"]]
        random.Random(self.seed).shuffle(pooled)
        picked = pooled[self.start : self.stop]
        if not picked:
            raise ValueError(f"bigbench start={self.start} is beyond its {len(pooled)} examples")
        return picked

    def examples(self, task_type: str, *, download: bool = True) -> list[dict[str, Any]]:
        """reftlab example dicts for ``task_type`` (see ``reftlab.data.tasks``)."""
        return [from_bigbench(ex, task_type, i) for i, ex in enumerate(self.raw_examples(download=download))]


def from_bigbench(ex: Mapping[str, Any], task_type: str, index: int = 0) -> dict[str, Any]:
    """One BIG-bench example as ``{"prompt", "response", "choices", "answer"}``.

    >>> from_bigbench({"input": "What is 1 plus 2?", "target": "3"}, "generation")
    {'prompt': 'What is 1 plus 2?', 'response': '3', 'choices': None, 'answer': None}
    >>> from_bigbench({"input": "Sky?", "target_scores": {"red": 0, "blue": 1}}, "multiple_choice")["answer"]
    1
    """
    if "input" not in ex:
        raise ValueError(f"BIG-bench example {index} has no 'input'")
    prefix = str(ex.get("task_prefix") or "").strip()
    text = str(ex["input"]).strip()
    prompt = f"{prefix}\n{text}" if prefix else text
    scores = ex.get("target_scores")
    choices: list[str] | None = None
    answer: int | None = None
    best: str | None = None  # the best-scored choice
    if isinstance(scores, Mapping) and scores:
        choices = [str(c) for c in scores]
        values = [float(v) for v in scores.values()]
        answer = values.index(max(values))
        best = choices[answer]
    target = ex.get("target")
    if isinstance(target, Sequence) and not isinstance(target, str):
        target = target[0] if target else None
    if task_type == "generation":
        response = str(target) if target is not None else best
        if response is None:
            raise ValueError(f"BIG-bench example {index} has neither 'target' nor 'target_scores'")
        return {"prompt": prompt, "response": response, "choices": None, "answer": None}
    if choices is None or answer is None:
        raise ValueError(f"BIG-bench example {index} has no 'target_scores' (choices); use task: generation")
    return {"prompt": prompt, "response": choices[answer], "choices": choices, "answer": answer}
