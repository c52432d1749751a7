"""load_model by Hub id from a real offline Hub cache, by revision, with dtype/device_map; clean errors."""

import subprocess
import sys

import pytest
import torch
from helpers import REPO
from hub_helpers import add_snapshot, save_tiny
from huggingface_hub import scan_cache_dir

import reftlab

MAIN, V2 = "a" * 40, "b" * 40
IDS = torch.tensor([[5, 6, 7, 8]])


@pytest.fixture
def cache(hf_home, tmp_path):
    """org/tiny: main -> MAIN (seed 1), branch v2 -> V2 (seed 2); org/tiny-bf16: a bfloat16 checkpoint."""
    add_snapshot(hf_home, "org/tiny", save_tiny(tmp_path / "seed1", seed=1), MAIN, refs=("main",))
    add_snapshot(hf_home, "org/tiny", save_tiny(tmp_path / "seed2", seed=2), V2, refs=("v2",))
    bf16 = tmp_path / "bf16"
    reftlab.tiny_llama(seed=3, dtype=torch.bfloat16).save_pretrained(bf16)
    reftlab.tiny_tokenizer().save_pretrained(bf16)
    add_snapshot(hf_home, "org/tiny-bf16", bf16, MAIN)
    return hf_home


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


def test_the_cache_has_the_hub_clients_layout(cache):
    info = scan_cache_dir(cache)
    assert info.warnings == []
    repo = {r.repo_id: r for r in info.repos}["org/tiny"]
    assert {(rev.commit_hash, frozenset(rev.refs)) for rev in repo.revisions} == {
        (MAIN, frozenset({"main"})),
        (V2, frozenset({"v2"})),
    }
    assert all((cache / "models--org--tiny" / "blobs").iterdir())


def test_load_by_hub_id_offline(cache):
    hooked = reftlab.load_model("org/tiny")
    assert torch.equal(logits(hooked), logits(reftlab.tiny_llama(seed=1)))
    assert hooked.dtype == torch.float32 and hooked.tokenizer("hi")["input_ids"] == [104, 105]
    assert hooked.source == reftlab.models.ModelSource(ref="org/tiny", revision=MAIN, name="org/tiny")


@pytest.mark.parametrize("revision", ["v2", V2])
def test_load_by_hub_id_and_revision(cache, revision):
    hooked = reftlab.load_model("org/tiny", revision=revision)
    assert torch.equal(logits(hooked), logits(reftlab.tiny_llama(seed=2)))
    assert hooked.source.revision == V2  # a branch is recorded as the commit it resolved to


def test_unknown_id_or_revision_is_one_clear_error(cache):
    for kwargs, named in [({}, "'org/absent'"), ({"revision": "nope"}, "'org/tiny' (revision 'nope')")]:
        name = "org/absent" if not kwargs else "org/tiny"
        with pytest.raises(FileNotFoundError) as err:
            reftlab.load_model(name, **kwargs)
        message = str(err.value)
        assert message.startswith(f"cannot load model {named}: it is not a local folder")
        assert f"Hugging Face cache at {cache}" in message and "HF_HUB_OFFLINE=1" in message
        fill = "hf download org/absent" if not kwargs else "hf download org/tiny --revision nope"
        assert f"`{fill}`" in message and "\n" not in message
        assert err.value.__cause__ is None and err.value.__suppress_context__  # no transformers trace chained


def test_dtype_auto_keeps_the_checkpoints_dtype(cache):
    assert reftlab.load_model("org/tiny-bf16", dtype="auto").dtype == torch.bfloat16
    assert reftlab.load_model("org/tiny-bf16").dtype == torch.float32  # None: float32
    assert reftlab.load_model("org/tiny", dtype="bfloat16").dtype == torch.bfloat16
    assert reftlab.load_model("org/tiny", dtype="auto").dtype == torch.float32
    with pytest.raises(ValueError, match="dtype='int8' is not supported; use 'auto'"):
        reftlab.load_model("org/tiny", dtype="int8")


def test_device_map_goes_to_from_pretrained(cache):
    on_cpu = reftlab.load_model("org/tiny", device_map="cpu")
    assert on_cpu.device == torch.device("cpu") and torch.equal(logits(on_cpu), logits(reftlab.tiny_llama(seed=1)))
    assert reftlab.load_model("org/tiny", device_map={"": "meta"}).device == torch.device("meta")
    with pytest.raises(ValueError, match="give device= .* or device_map= .*not both"):
        reftlab.load_model("org/tiny", device="cpu", device_map="cpu")


def test_hub_kernels_stay_off(cache):
    # transformers >= 5.25 kernelizes by default: modules swapped for kernels fetched from the Hub.
    # reftlab keeps the family's own torch code, which its parity tests and fast path are written for.
    for kwargs in [{}, {"device_map": "cpu"}, {"device_map": {"": "meta"}}]:
        assert reftlab.load_model("org/tiny", **kwargs).hf_model.use_kernels is False


def test_options_that_need_a_name_are_refused_for_in_memory_models_and_folders(tmp_path):
    with pytest.raises(ValueError, match="already in memory"):
        reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer(), revision="main")
    with pytest.raises(ValueError, match="revision='main' applies to Hub ids; .* is the folder model"):
        reftlab.load_model(save_tiny(tmp_path / "m", seed=0), revision="main")


def test_tokenizer_by_name_and_in_memory_dtype(cache, tmp_path):
    hooked = reftlab.load_model(reftlab.tiny_llama(seed=1), "org/tiny", dtype=torch.bfloat16)
    assert hooked.dtype == torch.bfloat16 and hooked.tokenizer("a")["input_ids"] == [97]
    assert hooked.source is None


def test_missing_paths_say_no_such_folder_and_never_reach_the_hub(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    for name in ["runs/emoj", "./x", "../x", "a/b/c", "~/no-such-model", "x/", "my model"]:
        with pytest.raises(FileNotFoundError, match=f"no such folder: {name} "):
            reftlab.load_model(name)
    with pytest.raises(NotADirectoryError, match="notes.txt is a file"):
        reftlab.load_model("notes.txt")
    # Without a local runs/ folder, 'runs2/emoj' is a valid Hub id: the Hub error says it is not a folder either.
    with pytest.raises(FileNotFoundError, match="cannot load model 'runs2/emoj': it is not a local folder"):
        reftlab.load_model("runs2/emoj")


def test_a_fresh_process_honours_hf_home_and_hf_hub_offline_from_the_environment(cache):
    code = (
        "import reftlab\n"
        "m = reftlab.load_model('org/tiny', revision='v2')\n"
        "print(m.source.revision, m.hf_model.config._name_or_path)\n"
        "try:\n    reftlab.load_model('org/absent')\nexcept FileNotFoundError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first == f"{V2} org/tiny"
    assert f"cache at {cache}," in second and "HF_HUB_OFFLINE=1" in second
