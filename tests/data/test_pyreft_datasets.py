"""pyreft's task datasets on reftlab's encoding: prompt positions only, pyreft's item layout, clear errors."""

import datasets
import pytest
import torch

import reftlab
from reftlab.data import alpaca_prompt

SFT = [
    {"instruction": "Say hi.", "input": "", "output": "hi"},
    {"instruction": "Repeat.", "input": "cat", "output": "cat"},
]


def supervised(tok, rows=SFT, **kw):
    kw = {"num_interventions": 1, "position": "f1+l1", "share_weights": True, **kw}
    return reftlab.ReftSupervisedDataset(
        "alpaca", None, tok, dataset=datasets.Dataset.from_list(rows),
        input_field="input", instruction_field="instruction", output_field="output", **kw,
    )  # fmt: skip


def test_supervised_l1_is_the_last_prompt_token_and_the_prompt_is_what_generation_sees(tok):
    ds = supervised(tok)
    for i, row in enumerate(SFT):
        prompt_ids = tok(alpaca_prompt(row["instruction"], row["input"] or None))["input_ids"]
        n = len(prompt_ids)
        ex = ds[i]
        assert ex["input_ids"][1 : n + 1].tolist() == prompt_ids  # after the leading pad token
        assert ex["intervention_locations"] == [[1, n]]  # f1, l1 (pyreft: l1 at n - 1)
        assert (ex["labels"][: n + 1] == -100).all() and ex["labels"][-1] == tok.eos_token_id
        assert tok.decode(ex["labels"][n + 1 : -1]) == row["output"]


def test_no_stop_drops_the_eos_and_an_eos_used_as_pad_is_still_attended(tok):
    tok.pad_token = tok.eos_token
    ex = supervised(tok)[0]
    assert ex["input_ids"][-1] == tok.eos_token_id and ex["attention_mask"][-1] == 1  # pyreft masked it
    ex = reftlab.ReftSupervisedDataset(
        "alpaca", None, tok, dataset=datasets.Dataset.from_list(SFT), no_stop=True, num_interventions=1, position="l1"
    )[0]
    assert ex["labels"][-1] != tok.eos_token_id


def test_generation_dataset_uses_the_prompt_as_is(tok):
    rows = [{"q": "2+2=", "a": "4"}]
    ds = reftlab.ReftGenerationDataset(
        "gen", None, tok, dataset=rows, prompt_field="q", completion_field="a", num_interventions=1, position="l2"
    )
    n = len(tok("2+2=")["input_ids"])
    assert ds[0]["intervention_locations"] == [[n - 1, n]] and tok.decode(ds[0]["input_ids"][1:]) == "2+2=4<eos>"


def test_long_examples_are_cut_to_model_max_length_and_a_too_long_prompt_is_an_error(tok):
    tok.model_max_length = 160
    rows = [{"instruction": "Say it.", "input": "", "output": "x" * 200}, SFT[0]]
    with pytest.warns(UserWarning, match="1 of 2 examples were longer"):
        ds = supervised(tok, rows)
    assert len(ds[0]["input_ids"]) == 160  # 159 tokens + the leading pad token
    tok.model_max_length = 40
    with pytest.raises(ValueError, match="example 0's prompt is .* tokens"):
        supervised(tok)


def test_a_missing_field_names_the_example_and_its_fields(tok):
    with pytest.raises(ValueError, match="example 1 has no field 'output'"):
        supervised(tok, [SFT[0], {"instruction": "x", "input": ""}])


def test_preference_dataset_keeps_pyreft_layout_with_correct_masks(tok):
    rows = [{"instruction": "Pick.", "input": "", "chosen_output": "yes", "rejected_output": "no way"}]
    fields = {"instruction_field": "instruction", "input_field": "input"}
    kw = {"chosen_output_field": "chosen_output", "rejected_output_field": "rejected_output", **fields}
    ds = reftlab.ReftPreferenceDataset("p", None, tok, dataset=rows, num_interventions=1, position="l1", **kw)
    ex = ds[0]
    n = len(tok(alpaca_prompt("Pick."))["input_ids"])
    assert tok.decode(ex["input_ids"][n + 1 :][ex["attention_mask"][n + 1 :].bool()]) == "no way<eos>"
    assert tok.decode(ex["labels"][ex["labels"] != -100]) == "yes<eos>"
    assert len(ex["input_ids"]) == len(ex["labels"]) and ex["intervention_locations"] == [[n]]
    test = reftlab.ReftPreferenceDataset(
        "p", None, tok, dataset=rows, data_split="test", num_interventions=1, position="l1", **kw
    )
    assert "labels" not in test[0] and len(test[0]["input_ids"]) == n + 1 and test.raw_dataset is not None


def conv(q, a):
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def test_reward_dataset_orders_pairs_by_rating_and_puts_positions_on_the_shared_prompt(tok):
    # Both answers start alike ("I ..."): the prompt ends where the template's generation prompt does.
    rows = [{"a": conv("hi", "I do not know"), "b": conv("hi", "I like you"), "ra": 1.0, "rb": 3.0}]
    ds = reftlab.ReftRewardDataset(
        "r", None, tok, dataset=rows, conv_A_field="a", conv_B_field="b", conv_A_reward_field="ra",
        conv_B_reward_field="rb", num_interventions=1, position="l1",
    )  # fmt: skip
    ex = ds[0]
    assert (ex["chosen_reward"], ex["rejected_reward"]) == (3.0, 1.0)
    assert "I like you" in tok.decode(ex["chosen_output"])
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    n = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert ex["intervention_locations"] == [[n]]  # the last prompt token, not the shared "I"
    assert ex["chosen_output_mask"].tolist() == [0] + [1] * (len(ex["chosen_output"]) - 1)


def test_reward_dataset_with_a_prompt_field_and_plain_texts(tok):
    bench = [{"prompt": "hi", "chosen": "hello!", "rejected": "go away"}]
    ds = reftlab.ReftRewardDataset(
        "allenai/reward-bench", None, tok, dataset=bench, conv_A_field="chosen", conv_B_field="rejected",
        prompt_field="prompt", num_interventions=1, position="l1",
    )  # fmt: skip
    assert "chosen_reward" not in ds[0] and "hello!" in tok.decode(ds[0]["chosen_output"])
    plain = [{"a": "Q: hi A: yes", "b": "Q: hi A: no"}]
    ds = reftlab.ReftRewardDataset(
        "r", None, tok, dataset=plain, conv_A_field="a", conv_B_field="b", num_interventions=1, position="l1"
    )
    n = len(tok("Q: hi A: ")["input_ids"])
    assert ds[0]["intervention_locations"] == [[n]]  # plain texts: the shared prefix is the prompt
    with pytest.raises(ValueError, match="share no leading token"):
        reftlab.ReftRewardDataset(
            "r", None, tok, dataset=[{"a": "yes", "b": "no"}], conv_A_field="a", conv_B_field="b",
            num_interventions=1, position="l1",
        )  # fmt: skip
    with pytest.raises(ValueError, match="needs conv_B_field="):
        reftlab.ReftRewardDataset("r", None, tok, dataset=plain, conv_A_field="a", num_interventions=1, position="l1")


def test_raw_dataset_has_pyreft_attributes(tok, tmp_path):
    path = tmp_path / "raw.json"
    path.write_text('[{"instruction": "Name a colour:", "output": " red"}]')
    train = reftlab.ReftRawDataset("raw", str(path), tok, num_interventions=1, position="f1+l1", share_weights=True)
    n = len(tok("Name a colour:")["input_ids"])
    assert len(train) == 1 and train.id == [0] and train.subspaces is None and train.raw_dataset is None
    assert train.intervention_locations == [[[1, n]]] and train[0]["labels"][n + 1] != -100
    test = reftlab.ReftRawDataset("raw", str(path), tok, data_split="test", num_interventions=1, position="l1")
    assert test.labels is None and "labels" not in test[0] and len(test[0]["input_ids"]) == n + 1
    assert torch.equal(test[0]["attention_mask"], torch.tensor([0] + [1] * n))
