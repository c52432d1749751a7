"""Collators: pyreft's ReftDataCollator(data_collator=...) form, the reward collator, location stacking."""

import datasets
import pytest
import torch
from transformers import DataCollatorForSeq2Seq

import reftlab
from reftlab.data import stack_locations

SFT = [
    {"instruction": "Say hi.", "input": "", "output": "hi"},
    {"instruction": "Repeat.", "input": "a long word", "output": "a long word"},
]


def items(tok):
    ds = reftlab.ReftSupervisedDataset(
        "alpaca", None, tok, dataset=datasets.Dataset.from_list(SFT), num_interventions=2, position="f1+l1"
    )
    return [ds[0], ds[1]]


def test_hf_collator_form_pads_like_the_native_one(tok):
    hf = reftlab.ReftDataCollator(
        data_collator=DataCollatorForSeq2Seq(tokenizer=tok, model=None, label_pad_token_id=-100, padding="longest")
    )
    native = reftlab.ReftDataCollator(pad_token_id=tok.pad_token_id)
    a, b = hf(items(tok)), native(items(tok))
    for key in ("input_ids", "attention_mask", "labels", "intervention_locations", "id"):
        assert torch.equal(a[key], b[key]), key
    assert a["attention_mask"][:, 0].tolist() == [0, 0]  # the items' own masks survive padding


def test_left_padding_warns_that_locations_still_index_the_unpadded_examples(tok):
    tok.padding_side = "left"
    hf = reftlab.ReftDataCollator(data_collator=DataCollatorForSeq2Seq(tokenizer=tok, padding="longest"))
    with pytest.warns(UserWarning, match="padded on the left"):
        batch = hf(items(tok))
    assert batch["intervention_locations"][0].tolist() == items(tok)[0]["intervention_locations"]


@pytest.mark.user_errors
def test_a_non_callable_collator_is_refused():
    with pytest.raises(TypeError, match="pad_token_id="):
        reftlab.ReftDataCollator(3)


def test_reward_collator_interleaves_chosen_and_rejected_rows(tok):
    conv = [
        {"a": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
         "b": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "no"}], "ra": 2.0, "rb": 1.0},
        {"a": [{"role": "user", "content": "yo"}, {"role": "assistant", "content": "x"}],
         "b": [{"role": "user", "content": "yo"}, {"role": "assistant", "content": "yes indeed"}]},
    ]  # fmt: skip
    ds = reftlab.ReftRewardDataset(
        "r", None, tok, dataset=conv[:1], conv_A_field="a", conv_B_field="b", conv_A_reward_field="ra",
        conv_B_reward_field="rb", num_interventions=1, position="l1",
    )  # fmt: skip
    unrated = reftlab.ReftRewardDataset(
        "r", None, tok, dataset=conv[1:], conv_A_field="a", conv_B_field="b", num_interventions=1, position="l1"
    )
    batch = reftlab.ReftRewardCollator(tokenizer=tok)([ds[0], unrated[0]])
    assert batch["input_ids"].shape[0] == 4 and batch["reward"].tolist() == [2.0, 1.0, 1.0, 0.0]
    assert torch.equal(batch["input_ids"][1, : len(ds[0]["rejected_output"])], ds[0]["rejected_output"])
    assert batch["attention_mask"][:, 0].tolist() == [0, 0, 0, 0]
    assert torch.equal(batch["intervention_locations"][2], batch["intervention_locations"][3])
    with pytest.raises(ValueError, match="has no \\['chosen_output'"):
        reftlab.ReftRewardCollator(tokenizer=tok)([{"input_ids": [1]}])
    with pytest.raises(ValueError, match="use 'pt'"):
        reftlab.ReftRewardCollator(tokenizer=tok, return_tensors="np")([ds[0]])


def test_stack_locations_pads_ragged_rows_and_names_a_bad_example():
    assert stack_locations([[[0, 1, 2]], [[4]]]).tolist() == [[[0, 1, 2]], [[4, -1, -1]]]
    with pytest.raises(ValueError, match="example 1: intervention_locations must be"):
        stack_locations([[[0]], [0]])
