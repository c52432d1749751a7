"""Native checkpoints: bitwise round trips for every kind and dtype, raw r x d storage, atomic writes."""

import json

import pytest
import torch
from helpers import FIXTURES
from safetensors.torch import load_file

import reftlab
import reftlab.io.checkpoint as checkpoint
from reftlab.analysis import SourceBatch
from reftlab.interventions import Sourced, intervention_class, kinds
from reftlab.models import tiny_llama, tiny_tokenizer

COMPOSITE = {  # composite kinds need their children (or, for concat, position pairs)
    "sum": lambda dt: {
        "kind": "sum",
        "children": [{"kind": "loreft", "rank": 3, "dtype": dt}, {"kind": "direft", "rank": 2, "dtype": dt}],
    },
    "simgate": lambda dt: {"kind": "simgate", "child": {"kind": "loreft", "rank": 3, "dtype": dt}},
    "concat_loreft": lambda dt: {"kind": "concat_loreft", "rank": 3, "dtype": dt},
}
# the causal kinds: whole-space ones take no rank; a resample ablation's bank size is in its spec
CAUSAL = {
    "vanilla": lambda dt: {"kind": "vanilla", "dtype": dt},
    "rotated_space": lambda dt: {"kind": "rotated_space", "interchange_dim": 5, "dtype": dt},
    "boundless_rotated_space": lambda dt: {"kind": "boundless_rotated_space", "dtype": dt},
    "zero_ablation": lambda dt: {"kind": "zero_ablation", "dtype": dt},
    "mean_ablation": lambda dt: {"kind": "mean_ablation", "dtype": dt},
    "resample_ablation": lambda dt: {"kind": "resample_ablation", "n_samples": 4, "dtype": dt},
}
COMPOSITE.update(CAUSAL)


def source_for(kind, ids):
    """A source batch for a kind that reads one (the base reversed); None for the others."""
    cls = intervention_class(kind)
    return SourceBatch(ids.flip(0)) if issubclass(cls, Sourced) and cls.needs_source else None


def two_site_config(kind, dtype=None):
    spec = COMPOSITE[kind](dtype) if kind in COMPOSITE else {"kind": kind, "rank": 3, "dtype": dtype}
    positions = "l2" if kind == "concat_loreft" else "f1+l2"
    return reftlab.ReftConfig(
        representations=[
            {"layer": 1, "component": "block_output", "positions": positions, "intervention": dict(spec)},
            {
                "hook": "model.layers[2].mlp.output",
                "positions": "l2" if kind == "concat_loreft" else "all",
                "intervention": dict(spec),
            },
        ]
    )


def perturbed(rm):
    """Move every parameter away from its init, as training would."""
    with torch.no_grad():
        for p in rm.interventions.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return rm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", kinds())
def test_round_trip_is_bitwise_for_every_kind_and_dtype(tmp_path, kind, dtype):
    hooked = reftlab.load_model(tiny_llama(dtype=dtype), tiny_tokenizer())
    rm = perturbed(reftlab.get_reft_model(hooked, two_site_config(kind)))
    ids = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        before = rm.run(ids, source=source_for(kind, ids)).logits
    rm.save(tmp_path / "ckpt")
    fresh = reftlab.load_model(tiny_llama(dtype=dtype), tiny_tokenizer())
    loaded = reftlab.ReftModel.load(tmp_path / "ckpt", fresh)
    with torch.no_grad():
        after = loaded.run(ids, source=source_for(kind, ids)).logits
    assert after.dtype == dtype and torch.equal(before, after)
    assert list(loaded.interventions) == list(rm.interventions)
    assert list(loaded.sites) == list(rm.sites)
    for a, b in zip(rm.interventions.values(), loaded.interventions.values()):
        assert a.spec() == b.spec()
        for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert na == nb and pa.dtype == pb.dtype and torch.equal(pa, pb)


def test_config_records_specs_identity_and_raw_r_by_d_parameters(tmp_path):
    hooked = reftlab.load_model(tiny_llama(), tiny_tokenizer())
    cfg = reftlab.ReftConfig(
        representations={
            "layer": 2,
            "component": "block_output",
            "positions": "l1",
            "intervention": {"kind": "loreft", "rank": 4, "dropout": 0.1, "act": "relu"},
        }
    )
    rm = reftlab.get_reft_model(hooked, cfg)
    rm.save(tmp_path / "c")
    data = json.loads((tmp_path / "c" / checkpoint.CONFIG_FILE).read_text())
    assert data["format_version"] == checkpoint.FORMAT_VERSION and data["reftlab_version"] == reftlab.__version__
    rep = data["representations"][0]
    assert rep["hook"] == "blocks.2.hook_resid_post" and rep["positions"] == "l1"
    assert rep["intervention"] == {
        "kind": "loreft",
        "d_model": 64,
        "rank": 4,
        "dropout": 0.1,
        "dtype": None,
        "act": "relu",
        "init": "random",
    }
    base = data["base_model"]
    assert (base["architecture"], base["d_model"], base["n_layers"], base["vocab_size"]) == (
        "LlamaForCausalLM",
        64,
        4,
        260,
    )
    tensors = load_file(str(tmp_path / "c" / checkpoint.WEIGHTS_FILE))
    key = "interventions.layer_2_comp_block_output#0"
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        f"{key}.rotation": (4, 64),
        f"{key}.weight": (4, 64),
        f"{key}.bias": (4,),
    }
    assert not list((tmp_path / "c").glob("*.bin"))


def test_checkpoint_size_is_parameters_times_width(tmp_path):
    hooked = reftlab.load_model(tiny_llama(), tiny_tokenizer())
    rm = reftlab.get_reft_model(
        hooked,
        reftlab.ReftConfig(
            representations={"layer": 1, "component": "block_output", "intervention": {"kind": "loreft", "rank": 4}}
        ),
    )
    rm.save(tmp_path / "c")
    size = (tmp_path / "c" / checkpoint.WEIGHTS_FILE).stat().st_size
    params = rm.num_intervention_parameters()
    assert params * 4 <= size < params * 4 + 1024


def test_shared_intervention_is_stored_once_and_stays_shared(tmp_path):
    hooked = reftlab.load_model(tiny_llama(), tiny_tokenizer())
    iv = reftlab.LoReFT(d_model=64, rank=2)
    cfg = reftlab.ReftConfig(
        representations=[
            {"layer": 1, "component": "block_output", "positions": "l1", "intervention": iv},
            {"layer": 3, "component": "block_output", "positions": "l1", "intervention": iv},
        ]
    )
    rm = reftlab.get_reft_model(hooked, cfg)
    rm.save(tmp_path / "c")
    assert len(load_file(str(tmp_path / "c" / checkpoint.WEIGHTS_FILE))) == 3
    loaded = reftlab.ReftModel.load(tmp_path / "c", hooked)
    first, second = loaded.interventions.values()
    assert first is second
    ids = torch.randint(0, 256, (1, 6))
    with torch.no_grad():
        assert torch.equal(rm.run(ids).logits, loaded.run(ids).logits)


def test_interrupted_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    hooked = reftlab.load_model(tiny_llama(), tiny_tokenizer())
    rm = reftlab.get_reft_model(hooked, two_site_config("loreft"))
    rm.save(tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}
    perturbed(rm)

    def boom(*args, **kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(checkpoint, "save_file", boom)
    with pytest.raises(OSError, match="injected"):
        rm.save(tmp_path / "ckpt")
    assert {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp folder left behind
    monkeypatch.undo()
    rm.save(tmp_path / "ckpt")  # a later save replaces it
    assert (tmp_path / "ckpt" / checkpoint.WEIGHTS_FILE).read_bytes() != before[checkpoint.WEIGHTS_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_load_leaves_the_global_rng_alone(tmp_path):
    hooked = reftlab.load_model(tiny_llama(), tiny_tokenizer())
    reftlab.get_reft_model(hooked, two_site_config("direft")).save(tmp_path / "c")
    torch.manual_seed(5)
    reftlab.ReftModel.load(tmp_path / "c", hooked)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))


# --- format_version 2: where the base came from, how prompts were formatted; version 1 still reads ---

V1 = FIXTURES / "v1" / "tiny_llama_loreft_direft"  # written by reftlab at format_version 1 (commit 37f306f)


def test_v2_records_the_base_source_dtype_and_prompt_format(tmp_path):
    hf = tiny_llama(dtype=torch.bfloat16)
    hf.save_pretrained(tmp_path / "base")
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    hooked = reftlab.load_model(tmp_path / "base", dtype="auto")
    rm = reftlab.get_reft_model(hooked, two_site_config("loreft"))
    rm.prompt_format = reftlab.PromptFormat(chat_template=True, system_prompt="Be brief.")
    rm.save(tmp_path / "c")
    data = json.loads((tmp_path / "c" / checkpoint.CONFIG_FILE).read_text())
    assert data["format_version"] == 2
    base = data["base_model"]
    assert base["source"] == str((tmp_path / "base").resolve()) and base["revision"] is None
    assert base["name"] == str((tmp_path / "base").resolve()) and base["dtype"] == "bfloat16"
    assert data["prompt_format"] == {"chat_template": True, "system_prompt": "Be brief."}
    loaded = reftlab.ReftModel.load(tmp_path / "c")  # no model: the recorded folder, in bfloat16
    assert loaded.prompt_format == rm.prompt_format
    assert loaded.hooked.dtype == torch.bfloat16 and loaded.tokenizer is not None
    ids = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        assert torch.equal(loaded.run(ids).logits, rm.run(ids).logits)


def test_prompt_format_is_null_when_unknown_and_settable_at_save(tmp_path):
    rm = reftlab.get_reft_model(reftlab.load_model(tiny_llama(), tiny_tokenizer()), two_site_config("direft"))
    rm.save(tmp_path / "a")
    assert json.loads((tmp_path / "a" / checkpoint.CONFIG_FILE).read_text())["prompt_format"] is None
    assert reftlab.ReftModel.load(tmp_path / "a", tiny_llama()).prompt_format is None
    rm.save(tmp_path / "b", prompt_format={"chat_template": False, "system_prompt": None})
    loaded = reftlab.ReftModel.load(tmp_path / "b", tiny_llama())
    assert loaded.prompt_format == reftlab.PromptFormat(chat_template=False) and rm.prompt_format is None
    with pytest.raises(ValueError, match="system_prompt needs chat_template"):
        rm.save(tmp_path / "c", prompt_format={"chat_template": False, "system_prompt": "hi"})
    with pytest.raises(ValueError, match="prompt_format must be null or"):
        rm.save(tmp_path / "c", prompt_format={"chat_template": True})
    assert not (tmp_path / "c").exists()


def test_a_model_built_in_memory_has_no_source_and_needs_a_model_to_load(tmp_path):
    rm = reftlab.get_reft_model(reftlab.load_model(tiny_llama(), tiny_tokenizer()), two_site_config("loreft"))
    rm.save(tmp_path / "c")
    base = json.loads((tmp_path / "c" / checkpoint.CONFIG_FILE).read_text())["base_model"]
    assert base["source"] is None and base["name"] == "LlamaForCausalLM"
    with pytest.raises(
        ValueError, match=r"in-memory LlamaForCausalLM.*pass the base model: ReftModel.load\(dir, model\)"
    ):
        reftlab.ReftModel.load(tmp_path / "c")


def test_version_1_checkpoints_still_load_exactly(tmp_path):
    data = json.loads((V1 / checkpoint.CONFIG_FILE).read_text())
    assert data["format_version"] == 1 and "prompt_format" not in data and "source" not in data["base_model"]
    ref = load_file(str(FIXTURES / "v1" / "tiny_llama_loreft_direft.logits.safetensors"))
    loaded = reftlab.ReftModel.load(V1, tiny_llama(seed=0))
    assert loaded.prompt_format is None and [iv.kind for iv in loaded.interventions.values()] == ["loreft", "direft"]
    saved = load_file(str(V1 / checkpoint.WEIGHTS_FILE))
    for key, iv in loaded.interventions.items():
        for name, t in iv.state_dict().items():
            assert torch.equal(t, saved[f"interventions.{key}.{name}"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.run(ref["input_ids"]).logits, ref["logits"], rtol=0, atol=1e-6)
    loaded.save(tmp_path / "v2")  # re-saved in the current format, bitwise the same parameters
    assert json.loads((tmp_path / "v2" / checkpoint.CONFIG_FILE).read_text())["format_version"] == 2
    assert load_file(str(tmp_path / "v2" / checkpoint.WEIGHTS_FILE)).keys() == saved.keys()
    with pytest.raises(ValueError, match="records no base model|source was not recorded"):
        reftlab.ReftModel.load(V1)


def test_version_1_records_infer_the_source_from_name_or_path(tmp_path):
    from reftlab.io import ModelIdentity

    record = json.loads((V1 / checkpoint.CONFIG_FILE).read_text())["base_model"]
    embedded = ModelIdentity.from_json({**record, "name_or_path": "/root/.cache/reftlab/smollm2-135m-instruct"}, 1)
    assert (embedded.source, embedded.name) == (
        "smollm2-135m-instruct",
        "smollm2-135m-instruct (Q4_1 GGUF, dequantized)",
    )
    hub = ModelIdentity.from_json({**record, "name_or_path": "org/tiny"}, 1)
    assert (hub.source, hub.revision, hub.dtype) == ("org/tiny", None, None)
    with pytest.raises(ValueError, match=r"missing fields \['dtype', 'name', 'revision', 'source'\]"):
        ModelIdentity.from_json(record, 2)
    with pytest.raises(ValueError, match=r"unknown fields \['source'\]"):
        ModelIdentity.from_json({**record, "source": None}, 1)
