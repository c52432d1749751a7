"""Validated loading: wrong base models, changed weights, damaged files and configs give clear errors."""

import json
import warnings

import pytest
import torch

import reftlab
from reftlab.io import FingerprintMismatch, identify, weights_fingerprint
from reftlab.io.checkpoint import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE
from reftlab.models import tiny_gpt2, tiny_llama, tiny_tokenizer


@pytest.fixture
def saved(tmp_path):
    hooked = reftlab.load_model(tiny_llama(), tiny_tokenizer())
    cfg = reftlab.ReftConfig(
        representations={
            "layer": 3,
            "component": "block_output",
            "positions": "l1",
            "intervention": {"kind": "loreft", "rank": 2},
        }
    )
    reftlab.get_reft_model(hooked, cfg).save(tmp_path / "c")
    return tmp_path / "c"


def edit_config(folder, fn):
    path = folder / CONFIG_FILE
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "other, field, want, got",
    [
        (lambda: tiny_gpt2(), "architecture", "'LlamaForCausalLM'", "'GPT2LMHeadModel'"),
        (lambda: tiny_llama(d_model=32), "d_model", "64", "32"),
        (lambda: tiny_llama(n_layers=2), "n_layers", "4", "2"),
        (lambda: tiny_llama(vocab=300), "vocab_size", "260", "300"),
    ],
)
def test_mismatched_base_model_names_field_and_expected_value(saved, other, field, want, got):
    with pytest.raises(ValueError, match=f"trained on a model with {field}={want}, but this model has {field}={got}"):
        reftlab.ReftModel.load(saved, other())


def test_unknown_hook_names_the_hook_the_checkpoint_expects(saved):
    edit_config(saved, lambda d: d["representations"][0].update(hook="blocks.3.hook_nonexistent"))
    with pytest.raises(ValueError, match=r"expects hook point 'blocks.3.hook_nonexistent', which this model lacks"):
        reftlab.ReftModel.load(saved, tiny_llama())
    edit_config(saved, lambda d: d["representations"][0].update(hook="model.layers[9].mlp.output"))
    with pytest.raises(ValueError, match=r"expects hook point 'model.layers\[9\].mlp.output'"):
        reftlab.ReftModel.load(saved, tiny_llama())


def test_other_weights_warn_by_default_and_raise_when_strict(saved):
    finetuned = tiny_llama()
    with torch.no_grad():
        finetuned.model.layers[1].mlp.down_proj.weight.mul_(1.01)
    with pytest.warns(FingerprintMismatch, match="weights differ"):
        rm = reftlab.ReftModel.load(saved, finetuned)
    assert len(rm.interventions) == 1
    with pytest.raises(ValueError, match=r"weights differ.*strict=True"):
        reftlab.ReftModel.load(saved, finetuned, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reftlab.ReftModel.load(saved, tiny_llama(), strict=True)  # the same weights: silent


def test_changed_config_warns(saved):
    other = tiny_llama()
    other.config.rope_theta = 1234.0
    with pytest.warns(FingerprintMismatch, match="config differ"):
        reftlab.ReftModel.load(saved, other)


def test_fingerprint_ignores_dtype_and_peft_wrapping_but_not_weights():
    from peft import LoraConfig, get_peft_model

    m = tiny_llama()
    fp = weights_fingerprint(m)
    assert weights_fingerprint(tiny_llama(dtype=torch.bfloat16)) == fp
    wrapped = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["o_proj"]))
    assert identify(reftlab.load_model(wrapped, tiny_tokenizer())).weights_fingerprint == fp
    assert weights_fingerprint(tiny_llama(seed=1)) != fp


def test_truncated_weights_give_a_clear_error(saved):
    path = saved / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ValueError, match="unreadable \\(truncated or corrupted safetensors"):
        reftlab.ReftModel.load(saved, tiny_llama())


def test_corrupted_header_gives_a_clear_error(saved):
    path = saved / WEIGHTS_FILE
    raw = bytearray(path.read_bytes())
    raw[8:20] = b"\xff" * 12
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="unreadable"):
        reftlab.ReftModel.load(saved, tiny_llama())


def test_missing_weights_file(saved):
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="weights .* are missing"):
        reftlab.ReftModel.load(saved, tiny_llama())


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("base_model"), r"missing fields \['base_model'\]"),
        (lambda d: d.update(surprise=1), r"unknown fields \['surprise'\]"),
        (lambda d: d["representations"][0].pop("positions"), r"representations\[0\]: missing fields \['positions'\]"),
        (lambda d: d["representations"][0].update(extra=True), r"unknown fields \['extra'\]"),
        (lambda d: d["base_model"].pop("d_model"), r"base_model record: missing fields \['d_model'\]"),
        (lambda d: d["representations"][0]["intervention"].update(kind="pickle"), "unknown intervention kind 'pickle'"),
        (lambda d: d["representations"][0]["intervention"].update(rank=3), "tensors of .* need"),
        (
            lambda d: d.update(format_version=FORMAT_VERSION + 1),
            f"format_version {FORMAT_VERSION + 1}.*upgrade reftlab",
        ),
    ],
)
def test_bad_configs_give_clear_errors(saved, edit, message):
    edit_config(saved, edit)
    with pytest.raises(ValueError, match=message):
        reftlab.ReftModel.load(saved, tiny_llama())


def test_invalid_json_and_non_checkpoint_folders(saved, tmp_path):
    (saved / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        reftlab.ReftModel.load(saved, tiny_llama())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a ReFT checkpoint"):
        reftlab.ReftModel.load(tmp_path / "empty", tiny_llama())
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder: .*nope.x .*looks like a path"):
        reftlab.ReftModel.load(tmp_path / "nope" / "x", tiny_llama())


def test_fingerprint_samples_stay_in_bounds_for_large_tensors():
    big = torch.nn.Linear(1, 2**24 + 3, bias=False)  # numel - 1 is not a float32 integer
    a = weights_fingerprint(big)
    with torch.no_grad():
        big.weight[-1] += 1.0  # the last element is always sampled
    assert weights_fingerprint(big) != a


def test_a_missing_relative_checkpoint_path_is_no_such_folder_not_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ["runs/emoj", "./emoj", "out/runs/emoj"]:
        with pytest.raises(FileNotFoundError, match=f"no such checkpoint folder: {name} .*looks like a path"):
            reftlab.ReftModel.load(name, tiny_llama())
