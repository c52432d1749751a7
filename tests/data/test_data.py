"""Data modules: pyreft's interface, positions that never land on a response token, clear errors."""

import json

import pandas as pd
import pytest
import torch

import reftlab
from reftlab.data import IGNORE_INDEX, build_dataset, locations_for

PROMPTS = ["Hello there", "Hi", "What is the answer?"]
RESPONSES = ["yo", "a longer answer", "42"]


def test_last_position_module_matches_pyreft_shape_and_puts_l1_on_last_prompt_token(tok):
    dm = reftlab.make_last_position_supervised_data_module(tok, None, PROMPTS, RESPONSES, num_interventions=2)
    assert set(dm) == {"train_dataset", "eval_dataset", "data_collator"} and dm["eval_dataset"] is None
    ds = dm["train_dataset"]
    batch = dm["data_collator"]([ds[i] for i in range(len(ds))])
    assert batch["intervention_locations"].shape == (3, 2, 1)
    for b, prompt in enumerate(PROMPTS):
        n_prompt = len(tok(prompt)["input_ids"])
        assert batch["prompt_lengths"][b] == n_prompt
        assert (batch["intervention_locations"][b] == n_prompt - 1).all()
        labels = batch["labels"][b]
        assert (labels[:n_prompt] == IGNORE_INDEX).all()
        n = int(batch["attention_mask"][b].sum())
        assert (labels[n:] == IGNORE_INDEX).all()  # padding
        assert labels[n - 1] == tok.eos_token_id and (labels[n_prompt:n] != IGNORE_INDEX).all()


def test_short_prompt_f3_l3_gets_empty_slots_never_response_positions(tok):
    dm = reftlab.make_multiple_position_supervised_data_module(
        tok, None, ["ab", "abcdefgh"], ["xyz", "q"], positions="f3+l3", num_interventions=1, share_weights=True
    )
    batch = dm["data_collator"]([dm["train_dataset"][i] for i in range(2)])
    locs = batch["intervention_locations"]
    assert locs[0, 0].tolist() == [0, 1, -1, -1, 0, 1]
    assert locs[1, 0].tolist() == [0, 1, 2, 5, 6, 7]
    for b in range(2):
        valid = locs[b][locs[b] >= 0]
        assert (valid < batch["prompt_lengths"][b]).all()


def test_share_weights_false_splits_first_and_last_positions_like_pyreft(tok):
    assert locations_for(6, "f2+l2", 4, share_weights=False) == [[0, 1], [0, 1], [4, 5], [4, 5]]
    with pytest.raises(ValueError, match="must be even"):
        locations_for(6, "f1+l1", 3, share_weights=False)


def test_prompt_ids_are_a_prefix_and_match_generation_tokenization(tok):
    ds = build_dataset(pd.DataFrame({"prompt": PROMPTS, "response": RESPONSES}), tok, chat_template=True)
    for ex, prompt in zip(ds, PROMPTS):
        text = tok.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ex["input_ids"][: ex["prompt_length"]] == ids
        assert ex["intervention_locations"] == [[len(ids) - 1]]


@pytest.mark.parametrize("kind", ["jsonl", "csv", "frame", "dataset"])
def test_build_dataset_reads_every_source(tmp_path, tok, kind):
    frame = pd.DataFrame({"q": PROMPTS, "a": RESPONSES})
    if kind == "jsonl":
        src = tmp_path / "d.jsonl"
        src.write_text("".join(json.dumps({"q": p, "a": r}) + "\n" for p, r in zip(PROMPTS, RESPONSES)))
    elif kind == "csv":
        src = tmp_path / "d.csv"
        frame.to_csv(src, index=False)
    elif kind == "frame":
        src = frame
    else:
        import datasets

        src = datasets.Dataset.from_pandas(frame)
    ds = build_dataset(src, tok, positions=["f1+l1", "l1"], num_interventions=2, prompt_column="q", response_column="a")
    assert ds["prompt"] == PROMPTS and ds["response"] == RESPONSES
    first = ds[0]
    assert first["intervention_locations"] == [[0, first["prompt_length"] - 1], [first["prompt_length"] - 1, -1]]


def test_bad_inputs_name_the_example_and_the_fix(tmp_path, tok):
    with pytest.raises(ValueError, match="no examples"):
        build_dataset(pd.DataFrame({"prompt": [], "response": []}), tok)
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no examples|empty"):
        build_dataset(empty, tok)
    with pytest.raises(ValueError, match=r"example 1: the response '' .*tokenizes to nothing"):
        build_dataset(pd.DataFrame({"prompt": ["a", "b"], "response": ["x", ""]}), tok)
    with pytest.raises(ValueError, match=r"example 0: the prompt is 300 tokens, the model's context is 256"):
        build_dataset(pd.DataFrame({"prompt": ["x" * 300], "response": ["y"]}), tok, model=reftlab.tiny_llama())
    with pytest.raises(ValueError, match=r"no column\(s\) \['response'\].*response_column="):
        build_dataset(pd.DataFrame({"prompt": ["a"], "answer": ["b"]}), tok)


def test_collator_pads_right_and_never_locates_padding(tok):
    ds = build_dataset(pd.DataFrame({"prompt": PROMPTS, "response": RESPONSES}), tok, positions="f2+l2")
    batch = reftlab.ReftDataCollator(pad_token_id=tok.pad_token_id)([ds[i] for i in range(3)])
    mask = batch["attention_mask"]
    assert torch.equal(mask, torch.sort(mask, dim=1, descending=True).values)  # 1...1 0...0
    locs = batch["intervention_locations"]
    for b in range(3):
        assert (locs[b][locs[b] >= 0] < batch["prompt_lengths"][b]).all()
