"""The saved folder as a Hub model repo: model card, uploads that fail cleanly offline, cached downloads.

Nothing here contacts a hub: every test runs with HF_HUB_OFFLINE=1.
"""

import json

import huggingface_hub.constants
import pytest
import torch
import yaml
from hub_helpers import add_snapshot, save_tiny

import reftlab
from reftlab.io.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from reftlab.models import tiny_llama, tiny_tokenizer


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def rm():
    hooked = reftlab.load_model(tiny_llama(), tiny_tokenizer())
    hooked.hf_model.config._name_or_path = "someone/tiny-llama"
    cfg = reftlab.ReftConfig(
        representations={
            "layer": 1,
            "component": "block_output",
            "positions": "f1+l1",
            "intervention": {"kind": "loreft", "rank": 2},
        }
    )
    return reftlab.get_reft_model(hooked, cfg)


def card_parts(folder):
    _, front, body = (folder / "README.md").read_text().split("---\n", 2)
    return yaml.safe_load(front), body


def test_folder_is_a_model_repo_with_a_card(rm, tmp_path):
    folder = rm.save(tmp_path / "c", hf_repo_name="me/tiny-reft")
    meta, body = card_parts(folder)
    assert meta["library_name"] == "reftlab" and meta["base_model"] == "someone/tiny-llama"
    assert {"reft", "reftlab", "loreft"} <= set(meta["tags"])
    assert "reftlab.ReftModel.load('me/tiny-reft', model)" in body
    assert "| `blocks.1.hook_resid_post` | f1+l1 | loreft | 2 |" in body
    assert sorted(p.name for p in folder.iterdir()) == sorted(["README.md", CONFIG_FILE, WEIGHTS_FILE])


def run_card_snippet(folder, capsys):
    """Execute the card's usage snippet exactly as written; returns what it printed."""
    code = (folder / "README.md").read_text().split("```python\n")[1].split("```")[0]
    exec(compile(code, str(folder / "README.md"), "exec"), {})
    return capsys.readouterr().out


def test_card_usage_snippet_runs_as_written_for_a_hub_base(hf_home, tmp_path, capsys):
    add_snapshot(hf_home, "someone/tiny-llama", save_tiny(tmp_path / "base", seed=0), COMMIT)
    hooked = reftlab.load_model("someone/tiny-llama")
    cfg = reftlab.ReftConfig(
        representations={"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2}
    )
    folder = reftlab.get_reft_model(hooked, cfg).save(tmp_path / "c")
    meta, body = card_parts(folder)
    assert meta["base_model"] == "someone/tiny-llama"
    assert f"reftlab.load_model('someone/tiny-llama', revision='{COMMIT}')" in body
    assert run_card_snippet(folder, capsys).startswith("Hello")


def test_card_of_a_folder_base_names_no_hub_id_and_runs_as_written(tmp_path, capsys):
    hooked = reftlab.load_model(save_tiny(tmp_path / "base", seed=0))
    cfg = reftlab.ReftConfig(
        representations={"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2}
    )
    folder = reftlab.get_reft_model(hooked, cfg).save(tmp_path / "c")
    meta, body = card_parts(folder)
    assert "base_model" not in meta
    assert f"reftlab.load_model({str((tmp_path / 'base').resolve())!r})" in body
    assert run_card_snippet(folder, capsys).startswith("Hello")


def test_save_to_hub_offline_fails_clearly_and_keeps_the_local_folder(rm, tmp_path):
    with pytest.raises(RuntimeError, match=r"could not upload .* as 'me/tiny-reft'.*local checkpoint at .* is intact"):
        rm.save(tmp_path / "c", save_to_hf_hub=True, hf_repo_name="me/tiny-reft")
    loaded = reftlab.ReftModel.load(tmp_path / "c", rm.hooked)
    ids = torch.randint(0, 256, (1, 5))
    with torch.no_grad():
        assert torch.equal(loaded.run(ids).logits, rm.run(ids).logits)
    with pytest.raises(ValueError, match="needs hf_repo_name"):
        rm.save(tmp_path / "d", save_to_hf_hub=True)


def test_push_to_hub_offline_fails_clearly(rm):
    with pytest.raises(RuntimeError, match="could not upload.*OfflineModeIsEnabled"):
        rm.push_to_hub("me/tiny-reft")


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_load_repo_id_from_the_hub_cache_offline(rm, hf_home, tmp_path):
    rm.save(tmp_path / "c")
    add_snapshot(hf_home, "me/tiny-reft", tmp_path / "c", COMMIT)
    loaded = reftlab.ReftModel.load("me/tiny-reft", rm.hooked)
    ids = torch.randint(0, 256, (2, 5))
    with torch.no_grad():
        assert torch.equal(loaded.run(ids).logits, rm.run(ids).logits)
    loaded = reftlab.ReftModel.load("me/tiny-reft", rm.hooked, cache_dir=hf_home, revision=COMMIT)
    with torch.no_grad():
        assert torch.equal(loaded.run(ids).logits, rm.run(ids).logits)


def test_load_uncached_repo_id_offline_is_a_clear_error(rm, hf_home):
    with pytest.raises(FileNotFoundError) as err:
        reftlab.ReftModel.load("me/absent", rm.hooked)
    message = str(err.value)
    assert "cannot load checkpoint 'me/absent'" in message and "HF_HUB_OFFLINE=1" in message
    assert f"cache at {hf_home}" in message and "`hf download me/absent`" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.embedded
def test_the_embedded_gguf_model_is_labelled_as_such_never_with_the_official_id(smol, tmp_path, capsys):
    hooked, _, _ = smol
    cfg = reftlab.ReftConfig(
        representations={"layer": 15, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2}
    )
    folder = reftlab.get_reft_model(hooked, cfg).save(tmp_path / "c")
    base = json.loads((folder / CONFIG_FILE).read_text())["base_model"]
    assert base["name"] == "smollm2-135m-instruct (Q4_1 GGUF, dequantized)"
    assert (base["source"], base["revision"], base["dtype"]) == ("smollm2-135m-instruct", None, "float32")
    meta, body = card_parts(folder)
    assert "base_model" not in meta and "HuggingFaceTB" not in (folder / "README.md").read_text()
    assert "reftlab.load_model('smollm2-135m-instruct')" in body
    assert run_card_snippet(folder, capsys).startswith("Hello")
    loaded = reftlab.ReftModel.load(folder)  # the embedded base, loaded from the record
    assert loaded.hooked.source.ref == "smollm2-135m-instruct"
