"""The saved folder as a Hub model repo: model card, uploads that fail cleanly offline, cached downloads.

Nothing here contacts a hub: every test runs with HF_HUB_OFFLINE=1.
"""

import shutil

import huggingface_hub.constants
import pytest
import torch
import yaml

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


def test_folder_is_a_model_repo_with_a_card(rm, tmp_path):
    folder = rm.save(tmp_path / "c", hf_repo_name="me/tiny-reft")
    text = (folder / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "reftlab" and meta["base_model"] == "someone/tiny-llama"
    assert {"reft", "reftlab", "loreft"} <= set(meta["tags"])
    assert "reftlab.ReftModel.load('me/tiny-reft', model)" in body
    assert "| `blocks.1.hook_resid_post` | f1+l1 | loreft | 2 |" in body
    assert sorted(p.name for p in folder.iterdir()) == sorted(["README.md", CONFIG_FILE, WEIGHTS_FILE])


def test_card_usage_snippet_runs(rm, tmp_path):
    folder = rm.save(tmp_path / "c")
    code = (folder / "README.md").read_text().split("```python\n")[1].split("```")[0]
    code = code.replace("'path/to/this/folder'", repr(str(folder)))
    code = code.replace("reftlab.load_model('someone/tiny-llama')", "reftlab.load_model(TINY, TOK)")
    code = code.replace("max_new_tokens=32", "max_new_tokens=3, pad_token_id=256")
    exec(code, {"TINY": tiny_llama(), "TOK": tiny_tokenizer(), "print": lambda *a: None})


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


def fill_hub_cache(cache, repo_id, folder, commit="0123456789abcdef0123456789abcdef01234567"):
    """The hub client's cache layout: models--user--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def test_load_repo_id_from_the_hub_cache_offline(rm, tmp_path):
    rm.save(tmp_path / "c")
    fill_hub_cache(tmp_path / "hub", "me/tiny-reft", tmp_path / "c")
    loaded = reftlab.ReftModel.load("me/tiny-reft", rm.hooked, cache_dir=tmp_path / "hub")
    ids = torch.randint(0, 256, (2, 5))
    with torch.no_grad():
        assert torch.equal(loaded.run(ids).logits, rm.run(ids).logits)


def test_load_uncached_repo_id_offline_is_a_clear_error(rm, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'me/absent' is not a local folder.*not in the local hub cache"):
        reftlab.ReftModel.load("me/absent", rm.hooked, cache_dir=tmp_path / "hub")
