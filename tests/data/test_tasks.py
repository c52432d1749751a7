"""Task types: reading multiple-choice and classification examples, splits, training rows."""

import json

import pytest

from reftlab.data.tasks import (
    as_classes,
    collate_classification,
    encode_task_examples,
    model_prompt,
    read_examples,
    split_held_out,
)


def test_multiple_choice_from_a_file(tmp_path):
    path = tmp_path / "mc.jsonl"
    rows = [
        {"prompt": "Sky?", "choices": ["red", "blue"], "answer": 1},
        {"prompt": "Grass?", "choices": ["green", "pink"], "answer": "green"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ex = read_examples(path, "multiple_choice")
    assert [(e["answer"], e["response"]) for e in ex] == [(1, "blue"), (0, "green")]
    assert model_prompt(ex[0], "multiple_choice") == "Sky?\nOptions:\n- red\n- blue"
    assert model_prompt(ex[0], "generation") == "Sky?"
    with pytest.raises(ValueError, match="answer 'yellow' is not one of its choices"):
        read_examples([{"prompt": "a", "choices": ["x", "y"], "answer": "yellow"}], "multiple_choice")
    with pytest.raises(ValueError, match="answer 5 must index its 2 choices"):
        read_examples([{"prompt": "a", "choices": ["x", "y"], "answer": 5}], "multiple_choice")
    with pytest.raises(ValueError, match=r"no column\(s\) \['choices'\] for task multiple_choice"):
        read_examples([{"prompt": "a", "response": "x"}], "multiple_choice")


def test_classification_labels_and_classes():
    ex = read_examples(
        [{"prompt": "fine", "label": "pos"}, {"prompt": "bad", "label": 0}], "classification", labels=["neg", "pos"]
    )
    assert [(e["answer"], e["choices"]) for e in ex] == [(1, ["neg", "pos"]), (0, ["neg", "pos"])]
    with pytest.raises(ValueError, match="label 'meh' is not one of the classes"):
        read_examples([{"prompt": "x", "label": "meh"}], "classification", labels=["neg", "pos"])
    mixed = [
        {"prompt": "a", "choices": ["plausible", "implausible"], "answer": 1},
        {"prompt": "b", "choices": ["implausible", "plausible"], "answer": 1},
    ]
    assert [e["response"] for e in as_classes(mixed, ["plausible", "implausible"])] == ["implausible", "plausible"]
    assert [e["answer"] for e in as_classes(mixed, ["plausible", "implausible"])] == [1, 0]


def test_held_out_split_is_seeded_and_disjoint():
    a = split_held_out(list(range(50)), 0.2, seed=1)
    assert a == split_held_out(list(range(50)), 0.2, seed=1) != split_held_out(list(range(50)), 0.2, seed=2)
    assert len(a[1]) == 10 and not set(a[0]) & set(a[1])
    with pytest.raises(ValueError, match="cannot be split"):
        split_held_out([1], 0.2)


def test_classification_rows_and_batches(tok):
    ex = read_examples(
        [{"prompt": "good day", "label": 1}, {"prompt": "bad", "label": 0}], "classification", labels=["n", "y"]
    )
    rows = encode_task_examples(tok, ex, "classification", positions="f1+l1", num_interventions=2)
    assert rows[0]["labels"] == [1] and rows[0]["prompt_length"] == len(rows[0]["input_ids"])
    assert rows[1]["intervention_locations"] == [[0, 2], [0, 2]]
    batch = collate_classification(rows, pad_token_id=0)
    assert batch["labels"].tolist() == [1, 0] and batch["attention_mask"].tolist()[1] == [1, 1, 1] + [0] * 5
    mc = read_examples([{"prompt": "Sky?", "choices": ["red", "blue"], "answer": 1}], "multiple_choice")
    (row,) = encode_task_examples(tok, mc, "multiple_choice", positions="l1", num_interventions=1)
    prompt_ids = tok("Sky?\nOptions:\n- red\n- blue")["input_ids"]
    assert (
        row["input_ids"][: row["prompt_length"]] == prompt_ids
        and row["labels"][row["prompt_length"] :][:4] == tok("blue")["input_ids"]
    )
