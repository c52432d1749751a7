"""BIG-bench task files: read from the sdist archive offline, cached once, sliced reproducibly.

The archive here is a small one written by the test, laid out like the real ``bigbench``
sdist (``bigbench-1.0.0/bigbench/benchmark_tasks/{task}[/{subtask}]/task.json``).
"""

import json
import types

import pytest
from bigbench_helpers import cached_archive, write_archive

from reftlab.data import bigbench
from reftlab.data.bigbench import BigBenchSource, from_bigbench, load_task

ADD = [{"input": f"What is {a} plus {b}?", "target": str(a + b)} for a, b in [(12, 30), (45, 11), (70, 29), (33, 33)]]
SUB = [{"input": f"What is {a} minus {b}?", "target": str(a - b)} for a, b in [(50, 8), (99, 98)]]
SIQA = [
    {"input": "Alex gave Sam a gift. How would Sam feel?", "target_scores": {"grateful": 1, "angry": 0, "bored": 0}},
    {"input": "Jo lost the keys. What will Jo do next?", "target_scores": {"sleep": 0, "look for them": 1}},
]
SPORTS = [
    {"input": "Jamal Murray was perfect from the line", "target_scores": {"plausible": 1, "implausible": 0}},
    {"input": "Joao Moutinho caught the screen pass", "target_scores": {"implausible": 1, "plausible": 0}},
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REFTLAB_CACHE", str(tmp_path))
    cached_archive(
        tmp_path,
        {
            "arithmetic": {"name": "arithmetic"},
            "arithmetic/2_digit_addition": {"examples": ADD},
            "arithmetic/2_digit_subtraction": {"examples": SUB},
            "social_iqa": {"examples": SIQA},
            "sports_understanding": {"task_prefix": "Plausible or implausible?", "examples": SPORTS},
        },
    )
    return tmp_path


def test_a_task_is_extracted_once_and_then_read_from_the_cache(cache):
    assert load_task("arithmetic", "2_digit_addition")["examples"] == ADD
    assert (cache / "bigbench" / "tasks" / "arithmetic" / "2_digit_addition" / "task.json").is_file()
    (cache / "bigbench" / bigbench.ARCHIVE).unlink()  # no archive any more: the cache answers
    assert load_task("arithmetic", "2_digit_addition")["examples"] == ADD
    with pytest.raises(FileNotFoundError, match="not cached"):
        load_task("social_iqa", download=False)


def test_unknown_tasks_are_named_with_the_known_ones(cache):
    with pytest.raises(ValueError, match=r"no task 'arithmetic/3_digit_addition'.*2_digit_addition"):
        load_task("arithmetic", "3_digit_addition")
    with pytest.raises(ValueError, match=r"no task 'sport'.*sports_understanding"):
        load_task("sport")
    with pytest.raises(ValueError, match="bad BIG-bench task name"):
        load_task("../etc")
    with pytest.raises(ValueError, match="has no examples.*subtasks"):
        BigBenchSource(task="arithmetic").examples("generation")


def test_sources_pool_shuffle_and_slice_reproducibly(cache):
    both = ("2_digit_addition", "2_digit_subtraction")
    whole = BigBenchSource(task="arithmetic", subtasks=both, seed=3).examples("generation")
    assert sorted(e["prompt"] for e in whole) == sorted(e["input"] for e in ADD + SUB)
    assert [e["prompt"] for e in whole] != [e["input"] for e in ADD + SUB]  # shuffled
    train = BigBenchSource(task="arithmetic", subtasks=both, seed=3, stop=4).examples("generation")
    test = BigBenchSource(task="arithmetic", subtasks=both, seed=3, start=4).examples("generation")
    assert train + test == whole
    assert all(e["response"] == str(eval(e["prompt"][8:-1].replace("plus", "+").replace("minus", "-"))) for e in whole)
    src = BigBenchSource.from_mapping({"task": "arithmetic", "subtask": "2_digit_addition", "stop": 2})
    assert src.subtasks == ("2_digit_addition",) and len(src.examples("generation")) == 2
    with pytest.raises(ValueError, match="unknown key"):
        BigBenchSource.from_mapping({"task": "arithmetic", "stopp": 2})
    with pytest.raises(ValueError, match="stop=1 must be None or an int > start=2"):
        BigBenchSource(task="arithmetic", start=2, stop=1)


def test_multiple_choice_and_classes(cache):
    mc = BigBenchSource(task="social_iqa").examples("multiple_choice")
    by_prompt = {e["prompt"]: e for e in mc}
    gift = by_prompt[SIQA[0]["input"]]
    assert gift["choices"] == ["grateful", "angry", "bored"] and gift["answer"] == 0 and gift["response"] == "grateful"
    sports = BigBenchSource(task="sports_understanding").examples("classification")
    assert all(e["prompt"].startswith("Plausible or implausible?\n") for e in sports)
    assert from_bigbench(SPORTS[1], "classification")["response"] == "implausible"
    with pytest.raises(ValueError, match="has no 'target_scores'"):
        from_bigbench(ADD[0], "multiple_choice")


def test_the_archive_is_fetched_with_pip_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("REFTLAB_CACHE", str(tmp_path))
    calls = []

    def fake_run(cmd, **kw):  # what pip would do: drop the sdist into -d
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        write_archive(f"{dest}/{bigbench.ARCHIVE}", {"social_iqa": {"examples": SIQA}})
        return types.SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(bigbench.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="sha256"):  # not the real archive: refused, nothing kept
        bigbench.archive_path(log=lambda m: None)
    assert calls[0][1:6] == ["-m", "pip", "download", "--no-deps", "--no-binary"] and bigbench.PACKAGE in calls[0]
    assert not (tmp_path / "bigbench" / bigbench.ARCHIVE).exists()
    assert [p.name for p in (tmp_path / "bigbench").iterdir()] == []
    monkeypatch.setattr(bigbench, "_sha256", lambda p: bigbench.SHA256)  # as if it were the real one
    assert bigbench.archive_path(log=lambda m: None).is_file()
    failing = types.SimpleNamespace(returncode=1, stdout="", stderr="ERROR: No matching distribution found")
    (tmp_path / "bigbench" / bigbench.ARCHIVE).unlink()
    monkeypatch.setattr(bigbench.subprocess, "run", lambda cmd, **kw: failing)
    with pytest.raises(RuntimeError, match="could not fetch bigbench==1.0.0 with pip.*No matching distribution"):
        bigbench.archive_path(log=lambda m: None)


def test_a_checkout_named_by_REFTLAB_BIGBENCH_is_read_instead_of_the_archive(tmp_path, monkeypatch):
    repo = tmp_path / "BIG-bench"
    for rel, data in {"arithmetic/2_digit_addition": {"examples": ADD}, "social_iqa": {"examples": SIQA}}.items():
        (repo / "bigbench" / "benchmark_tasks" / rel).mkdir(parents=True)
        (repo / "bigbench" / "benchmark_tasks" / rel / "task.json").write_text(json.dumps(data))
    monkeypatch.setenv("REFTLAB_CACHE", str(tmp_path / "cache"))  # empty: no archive, nothing cached

    def no_archive(**kw):
        raise AssertionError("the archive was looked for")

    monkeypatch.setattr(bigbench, "archive_path", no_archive)
    for where in (repo, repo / "bigbench" / "benchmark_tasks"):  # the clone, or its task folder
        monkeypatch.setenv("REFTLAB_BIGBENCH", str(where))
        assert load_task("arithmetic", "2_digit_addition")["examples"] == ADD
        assert BigBenchSource(task="social_iqa").examples("multiple_choice")[0]["answer"] == 0
    assert not (tmp_path / "cache").exists()  # read in place, never copied into the cache
    with pytest.raises(ValueError, match=r"no task 'arithmetic/3_digit_addition'; its subtasks: \['arithmetic/2_digit"):
        load_task("arithmetic", "3_digit_addition")
    with pytest.raises(ValueError, match=r"no task 'sports'; tasks: \['arithmetic', 'social_iqa'\]"):
        load_task("sports")
    monkeypatch.setenv("REFTLAB_BIGBENCH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="REFTLAB_BIGBENCH=.*no bigbench/benchmark_tasks/ folder there"):
        load_task("social_iqa")


def test_an_index_without_the_archive_names_both_ways_out(tmp_path, monkeypatch):
    """Some package indexes serve only bigbench 0.0.1 (no task files): the error says what to do instead."""
    monkeypatch.setenv("REFTLAB_CACHE", str(tmp_path))
    monkeypatch.delenv("REFTLAB_BIGBENCH", raising=False)
    failed = types.SimpleNamespace(
        returncode=1, stdout="", stderr="ERROR: No matching distribution found for bigbench==1.0.0"
    )
    monkeypatch.setattr(bigbench.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(
        RuntimeError, match=r"No matching distribution.*put it at .*bigbench-1.0.0.tar.gz, or set \$REFTLAB_BIGBENCH"
    ):
        load_task("social_iqa")
    assert not list((tmp_path / "bigbench").glob(".download-*"))  # its temp folder removed
