"""pyreft's ReftDataset contract: the steps a subclass overrides, reftlab's positions, the data sources."""

import json

import datasets
import huggingface_hub
import pandas as pd
import pytest
import torch

import reftlab
from reftlab.data import get_intervention_locations, load_task_dataset, parse_positions

ROWS = [{"text": "hello there", "label": 1}, {"text": "hi", "label": 0}, {"text": "what is up", "label": 1}]


class TextTask(reftlab.ReftDataset):
    """A pyreft-style subclass: records the order of its steps and tokenizes one text field."""

    def preprocess(self, kwargs):
        self.steps = ["preprocess"]
        self.text_field = kwargs["text_field"]

    def postprocess(self, kwargs):
        self.steps.append(f"postprocess({len(self.task_dataset)})")

    def tokenize(self, data_item):
        self.steps.append("tokenize")
        ids = self.tokenizer(data_item[self.text_field], return_tensors="pt")["input_ids"][0]
        return {"input_ids": ids, "labels": ids.clone()}, len(ids)


def test_parse_positions_gives_pyreft_first_and_last_counts():
    assert [parse_positions(p) for p in ("f1+l1", "f7+l7", "l1", "f3")] == [(1, 1), (7, 7), (0, 1), (3, 0)]
    with pytest.raises(ValueError, match="no \\(first_n, last_n\\) form"):
        parse_positions("all")
    with pytest.raises(ValueError, match="cannot parse positions"):
        parse_positions("x2")


def test_intervention_locations_are_prompt_positions_with_empty_slots():
    # reftlab's fixes: l1 is the last prompt token; a short prompt leaves -1 slots (pyreft capped
    # each side at half the prompt and pointed the rest at a pad token or at last_position).
    assert get_intervention_locations(last_position=6, positions="f2+l2", num_interventions=2, share_weights=True) == [
        [0, 1, 4, 5],
        [0, 1, 4, 5],
    ]
    assert get_intervention_locations(last_position=6, first_n=2, last_n=1, num_interventions=2) == [[0, 1], [5, -1]]
    assert get_intervention_locations(last_position=2, positions="f3", num_interventions=1, pad_mode="last") == [
        [0, 1, -1]
    ]
    assert get_intervention_locations(last_position=5, positions="f3+l3", num_interventions=1, share_weights=True) == [
        [0, 1, 2, 2, 3, 4]
    ]
    # pyreft passes a dataset's whole kwargs along: unknown keys are ignored
    assert get_intervention_locations(last_position=3, positions="l1", num_interventions=1, input_field="x") == [[2]]
    with pytest.raises(ValueError, match="at least one token"):
        get_intervention_locations(last_position=0, positions="l1", num_interventions=1)
    with pytest.raises(ValueError, match="must be even"):
        get_intervention_locations(last_position=4, positions="f1+l1", num_interventions=3)


def test_subclass_steps_run_in_pyreft_order_and_items_have_pyreft_layout(tok):
    ds = TextTask(
        "text", None, tok, dataset=datasets.Dataset.from_list(ROWS), position="f1+l1", num_interventions=2,
        text_field="text",
    )  # fmt: skip
    assert ds.steps == ["preprocess", "postprocess(3)", "tokenize", "tokenize", "tokenize"]
    assert ds.raw_dataset is None and len(ds) == 3
    ex = ds[0]
    n = len(tok("hello there")["input_ids"])
    # pad_mode "first": one pad token in front, attention 0, label -100; positions shifted by it
    assert ex["input_ids"][0] == tok.pad_token_id and ex["attention_mask"].tolist() == [0] + [1] * n
    assert ex["labels"][0] == -100 and ex["id"] == 0
    assert ex["intervention_locations"] == [[1], [n]]  # share_weights False: f1 and l1 on two interventions
    ex["input_ids"][1] = 0  # items are copies
    assert ds[0]["input_ids"][1] != 0


def test_pad_modes_last_and_none_and_all_positions(tok):
    class Last(TextTask):
        def preprocess(self, kwargs):
            super().preprocess(kwargs)
            self.pad_mode, self.fields_to_pad = "last", ["input_ids"]

    class NoPad(TextTask):
        def preprocess(self, kwargs):
            super().preprocess(kwargs)
            self.pad_mode = "none"

    rows = datasets.Dataset.from_list(ROWS[:1])
    n = len(tok("hello there")["input_ids"])
    last = Last("t", None, tok, dataset=rows, position="f2", num_interventions=1, text_field="text")[0]
    assert last["input_ids"][-1] == tok.pad_token_id and len(last["labels"]) == n  # labels not in fields_to_pad
    assert last["attention_mask"].tolist() == [1] * n + [0] and last["intervention_locations"] == [[0, 1]]
    plain = NoPad("t", None, tok, dataset=rows, position="all", num_interventions=1, text_field="text")[0]
    assert len(plain["input_ids"]) == n and plain["attention_mask"].all()
    assert plain["intervention_locations"] == [list(range(n))]


def test_bad_dataset_arguments_get_clear_errors(tok):
    rows = datasets.Dataset.from_list(ROWS)
    with pytest.raises(ValueError, match="needs position="):
        TextTask("t", None, tok, dataset=rows, num_interventions=1, text_field="text")
    with pytest.raises(ValueError, match="needs num_interventions="):
        TextTask("t", None, tok, dataset=rows, position="l1", text_field="text")
    with pytest.raises(TypeError, match="abstract"):
        reftlab.ReftDataset("t", None, tok, dataset=rows, position="l1", num_interventions=1)
    with pytest.raises(ValueError, match="'subspaces'"):
        TextTask(
            "t", None, tok, dataset=rows.add_column("subspaces", [[0]] * 3), position="l1", num_interventions=1,
            text_field="text",
        )  # fmt: skip
    no_pad = reftlab.tiny_tokenizer()
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="set tokenizer.pad_token"):
        TextTask("t", None, no_pad, dataset=rows, position="l1", num_interventions=1, text_field="text")
    with pytest.raises(TypeError, match="pass one split"):
        load_task_dataset("t", None, "train", datasets.DatasetDict({"train": rows}))


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_local_files_of_every_format_load_for_any_split(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    frame = pd.DataFrame(ROWS)
    if suffix == ".json":
        path.write_text(json.dumps(ROWS))
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    ds = load_task_dataset("task", str(path), "test")
    assert ds["text"] == [r["text"] for r in ROWS]
    with pytest.raises(FileNotFoundError, match="no data file"):
        load_task_dataset("task", str(tmp_path / f"missing{suffix}"), "train")


def test_max_n_example_keeps_a_seeded_sample_and_raw_dataset_is_set_off_train(tok, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(10)))
    a = TextTask("t", str(path), tok, data_split="test", seed=3, max_n_example=4, position="l1", num_interventions=1, text_field="text")  # fmt: skip
    b = TextTask("t", str(path), tok, data_split="test", seed=3, max_n_example=4, position="l1", num_interventions=1, text_field="text")  # fmt: skip
    assert len(a) == 4 and a.raw_dataset["text"] == b.raw_dataset["text"]
    big = TextTask("t", str(path), tok, max_n_example=50, position="l1", num_interventions=1, text_field="text")
    assert len(big) == 10 and big.raw_dataset is None


def test_a_hub_name_goes_through_datasets_and_its_offline_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="not in the datasets cache and the Hub is unreachable"):
        load_task_dataset("someone/not-cached", "all", "train")
    folder = tmp_path / "local_hub_layout"  # a dataset folder: the same call reads it through datasets
    (folder / "all").mkdir(parents=True)
    (folder / "all" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: all\n  data_files:\n  - split: train\n    path: all/train.jsonl\n---\n"
    )
    assert load_task_dataset(str(folder), "all", "train")["label"] == [1, 0, 1]


def test_dataset_argument_accepts_frames_and_records(tok):
    for data in (pd.DataFrame(ROWS), ROWS):
        ds = TextTask("t", None, tok, dataset=data, position="l1", num_interventions=1, text_field="text")
        assert len(ds) == 3 and torch.is_tensor(ds[2]["input_ids"])
    with pytest.raises(TypeError, match="datasets.Dataset, a pandas DataFrame or a list of dicts"):
        load_task_dataset("t", None, "train", "not data")


def test_the_leading_pad_token_changes_nothing_on_a_rotary_model_and_shifts_gpt2(tok):
    class NoPad(TextTask):
        def preprocess(self, kwargs):
            super().preprocess(kwargs)
            self.pad_mode = "none"

    rows = datasets.Dataset.from_list(ROWS[:1])
    kw = {"dataset": rows, "position": "l1", "num_interventions": 1, "text_field": "text"}
    sink, plain = TextTask("t", None, tok, **kw)[0], NoPad("t", None, tok, **kw)[0]
    for hf, same in ((reftlab.tiny_llama(seed=0), True), (reftlab.tiny_gpt2(seed=0), False)):
        with torch.no_grad():
            a = hf(input_ids=sink["input_ids"][None], attention_mask=sink["attention_mask"][None]).logits[0, 1:]
            b = hf(input_ids=plain["input_ids"][None], attention_mask=plain["attention_mask"][None]).logits[0]
        assert torch.allclose(a, b, atol=1e-5) == same


def test_a_subclass_may_load_its_own_data(tok):
    class Generated(TextTask):
        def load_dataset(self):  # pyreft's extension point: where the examples come from
            self.raw_dataset = datasets.Dataset.from_list([{"text": f"item {i}"} for i in range(self.max_n_example)])
            return self.raw_dataset

    ds = Generated("gen", None, tok, max_n_example=2, position="l1", num_interventions=1, text_field="text")
    assert len(ds) == 2 and ds.raw_dataset["text"] == ["item 0", "item 1"]
    assert ds.steps == ["preprocess", "postprocess(2)", "tokenize", "tokenize"]
