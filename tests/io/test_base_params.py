"""A head trained with the ReFT travels with the checkpoint: saved as safetensors, validated, all-or-nothing."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForSequenceClassification

import reftlab
from reftlab.io import BASE_FILE, load_into


def classifier(num_labels=2, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, pad_token_id=256, num_labels=num_labels,
    )  # fmt: skip
    return LlamaForSequenceClassification(cfg).eval()


def reft_on(hf, tok):
    cfg = reftlab.ReftConfig(
        representations={
            "layer": 1,
            "component": "block_output",
            "positions": "l1",
            "intervention": reftlab.LoreftIntervention(embed_dim=64, low_rank_dimension=2),
        }
    )
    return reftlab.get_reft_model(reftlab.load_model(hf, tok), cfg)


@pytest.fixture
def saved(tok, tmp_path):
    rm = reft_on(classifier(), tok)
    rm.model.score.weight.requires_grad_(True)
    with torch.no_grad():
        rm.model.score.weight.add_(1.0)  # "trained"
    rm.save(tmp_path / "ckpt")
    return rm, tmp_path / "ckpt"


def test_only_trainable_base_parameters_are_saved_and_they_load_back(tok, saved):
    rm, folder = saved
    assert set(load_file(str(folder / BASE_FILE))) == {"score.weight"}
    fresh = classifier()
    again = reftlab.ReftModel.load(folder, fresh, tokenizer=tok)
    assert torch.equal(fresh.score.weight, rm.model.score.weight)
    assert not fresh.score.weight.requires_grad  # loaded frozen, like the rest of the base
    ids = torch.tensor([tok("good day")["input_ids"]])
    assert torch.equal(again(dict(input_ids=ids))[1].logits, rm(dict(input_ids=ids))[1].logits)


def test_no_file_when_nothing_of_the_base_trains(tok, tmp_path):
    reft_on(classifier(), tok).save(tmp_path / "plain")
    assert not (tmp_path / "plain" / BASE_FILE).exists()


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"head.weight": torch.zeros(2, 64)}, "which this model lacks"),
        ({"score.weight": torch.zeros(3, 64)}, "has shape \\(3, 64\\)"),
        ({"score.weight": torch.zeros(2, 64, dtype=torch.int64)}, "dtype torch.int64"),
    ],
)
def test_a_bad_base_parameter_file_is_refused_and_nothing_changes(tok, saved, tensors, message):
    _, folder = saved
    save_file(tensors, str(folder / BASE_FILE))
    fresh = classifier()
    before = fresh.score.weight.clone()
    with pytest.raises(ValueError, match=message):
        reftlab.ReftModel.load(folder, fresh, tokenizer=tok)
    assert torch.equal(fresh.score.weight, before)


def test_a_truncated_file_is_an_error(tok, saved):
    _, folder = saved
    (folder / BASE_FILE).write_bytes((folder / BASE_FILE).read_bytes()[:40])
    with pytest.raises(ValueError, match="unreadable"):
        reftlab.ReftModel.load(folder, classifier(), tokenizer=tok)


def test_the_head_is_put_back_when_a_later_check_fails(tok, saved):
    _, folder = saved
    other = classifier(seed=5)  # other base weights: the strict fingerprint check fails after the head went in
    before = other.score.weight.clone()
    with pytest.raises(ValueError, match="strict=True"):
        reftlab.ReftModel.load(folder, other, tokenizer=tok, strict=True)
    assert torch.equal(other.score.weight, before)


def test_pyreft_format_warns_that_the_head_is_not_saved(tok, saved, tmp_path):
    rm, _ = saved
    with pytest.warns(UserWarning, match="not saved"):
        rm.save(tmp_path / "pyreft", format="pyreft")


def test_load_into_keeps_parameter_identity(tok, saved):
    rm, folder = saved
    target = reft_on(classifier(), tok)
    iv = next(iter(target.interventions.values()))
    params = [id(p) for p in iv.parameters()]
    load_into(target, folder)
    assert [id(p) for p in iv.parameters()] == params
    want = next(iter(rm.interventions.values())).state_dict()
    assert all(torch.equal(iv.state_dict()[k], v) for k, v in want.items())
    assert torch.equal(target.model.score.weight, rm.model.score.weight)
    with pytest.raises(FileNotFoundError, match="no reftlab checkpoint"):
        load_into(target, folder / "missing")
