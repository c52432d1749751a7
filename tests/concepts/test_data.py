"""Concept data: AxBench's layout and a plain one, from tables and files; splits; clear errors."""

import importlib.util
import json

import pandas as pd
import pytest
from helpers import REPO

from reftlab.concepts import ConceptData, read_concepts

EXAMPLES = REPO / "examples" / "concepts"


def _make_data():
    spec = importlib.util.spec_from_file_location("make_data", EXAMPLES / "make_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_committed_example_set_is_what_its_script_writes(tmp_path):
    _make_data().write(tmp_path)
    for name in ("train.csv", "eval.csv"):
        assert (tmp_path / name).read_text() == (EXAMPLES / name).read_text(), "rerun examples/concepts/make_data.py"


def test_example_set_in_axbench_layout_reads_into_concepts_and_shared_negatives():
    raw = pd.read_csv(EXAMPLES / "train.csv")
    assert list(raw.columns) == ["input", "output", "output_concept", "category", "concept_id"]
    train = read_concepts(EXAMPLES / "train.csv")
    assert len(train.concepts) == 4
    summary = train.summary()
    assert (
        (summary["positive"] == 24).all()
        and (summary["negative"] == 48).all()
        and (summary["hard negative"] == 0).all()
    )
    assert set(train.frame.loc[train.frame.concept == "", "label"]) == {"negative"}
    assert train.texts == raw["output"].tolist() and train.prompts == raw["input"].tolist()
    evals = read_concepts(EXAMPLES / "eval.csv")
    assert evals.summary()[["positive", "negative", "hard negative"]].values.tolist() == [[12, 12, 8]] * 4
    # No held-out text is a training text.
    assert not set(evals.texts) & set(train.texts)


def test_axbench_eval_rows_take_their_concept_from_concept_id():
    # AxBench's evaluation files name the concept on negatives and a word sense on hard negatives.
    df = pd.DataFrame(
        {
            "input": ["q1", "q2", "q3", "q4", "q5"],
            "output": ["a date", "no", "date night", "other", "shared"],
            "output_concept": ["dates", "dates", "date//romantic", "cats", "EEEEE"],
            "category": ["positive", "negative", "hard negative seen", "positive", "negative"],
            "concept_id": [0, 0, 0, 1, -1],
        }
    )
    data = read_concepts(df)
    assert data.frame["concept"].tolist() == ["dates", "dates", "dates", "cats", ""]
    assert data.frame["label"].tolist() == ["positive", "negative", "hard negative", "positive", "negative"]
    assert data.rows("dates", "negative") == [1, 4] and data.rows("cats", "negative") == [4]
    assert data.rows("dates", "hard negative") == [2]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
def test_files_of_every_format_and_plain_layout_read_the_same(tmp_path, suffix):
    df = pd.DataFrame(
        {
            "text": ["a cat", "a dog", "the tax"],
            "concept": ["pets", "pets", ""],
            "label": ["positive"] * 2 + ["negative"],
        }
    )
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        path.write_text(json.dumps(df.to_dict(orient="records")))
    else:
        df.to_parquet(path)
    data = read_concepts(path)
    assert data.texts == ["a cat", "a dog", "the tax"] and data.concepts == ["pets"] and data.prompts == [""] * 3


def test_a_datasets_dataset_reads_too():
    from datasets import Dataset

    ds = Dataset.from_dict({"text": ["x y", "z w"], "concept": ["c", ""], "label": ["positive", "negative"]})
    assert read_concepts(ds).concepts == ["c"]


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        ({"output": ["a"], "category": ["positive"]}, "neither AxBench's"),
        ({"text": ["a"], "concept": ["c"], "label": ["maybe"]}, "column 'label' has values \\['maybe'\\]"),
        ({"text": ["a"], "concept": [""], "label": ["positive"]}, "only negatives can be shared"),
        ({"text": [""], "concept": ["c"], "label": ["positive"]}, "column 'text' row 0 is empty"),
        (
            {"output": ["a"], "output_concept": ["c"], "category": ["negative"], "concept_id": [3]},
            "concept_id 3 has no positive row",
        ),
        (
            {"output": ["a"], "output_concept": ["c"], "category": ["positive"], "concept_id": ["x"]},
            "'concept_id' row 0 is not an integer",
        ),
    ],
)
def test_bad_tables_name_the_column_and_the_fix(frame, match):
    with pytest.raises(ValueError, match=match):
        read_concepts(pd.DataFrame(frame), name="mine.csv")


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no data file"):
        read_concepts(tmp_path / "none.csv")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match="must end in"):
        read_concepts(tmp_path / "d.txt")
    (tmp_path / "bad.csv").write_text("output,category\nhello,positive\n")
    with pytest.raises(ValueError, match="bad.csv: columns"):
        read_concepts(tmp_path / "bad.csv")
    with pytest.raises(TypeError, match="give a file path"):
        read_concepts(42)


def test_split_is_stratified_disjoint_and_seeded():
    data = read_concepts(EXAMPLES / "train.csv")
    train, held = data.split(0.25, seed=3)
    assert len(train) + len(held) == len(data)
    for part in (train, held):
        assert set(part.concepts) == set(data.concepts)
        assert (part.summary()["negative"] > 0).all()
    assert held.summary()["positive"].tolist() == [6] * 4
    again, _ = data.split(0.25, seed=3)
    assert again.texts == train.texts
    with pytest.raises(ValueError, match="held_out"):
        data.split(1.5)


def test_training_needs_positives_and_negatives():
    data = ConceptData(pd.DataFrame({"text": ["a b"], "prompt": [""], "concept": ["c"], "label": ["positive"]}))
    with pytest.raises(ValueError, match="has no negative rows"):
        data.check_trainable(["c"])
    with pytest.raises(ValueError, match="has no positive rows"):
        data.check_trainable(["d"])
