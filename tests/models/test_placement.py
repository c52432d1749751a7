"""A base dispatched by accelerate with blocks offloaded to disk: same logits, training, checkpoints both ways."""

import warnings

import pandas as pd
import pytest
import torch

import reftlab
from reftlab.io import FingerprintMismatch
from reftlab.models.placement import execution_device, main_device

DF = pd.DataFrame({"prompt": ["Say a", "Say bb", "Name c"], "response": ["a", "bb", "cc"]})
REPS = [
    {"layer": 1, "component": "block_output", "positions": "l1", "intervention": {"kind": "loreft", "rank": 2}},
    {"layer": 2, "component": "mlp_input", "positions": "l1", "intervention": {"kind": "direft", "rank": 2}},
]
DEVICE_MAP = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "disk",
    "model.layers.3": "cpu",
    "model.norm": "cpu",
    "lm_head": "cpu",
}


def test_execution_device_follows_accelerates_rules():
    dmap = {
        "model.embed_tokens": 0,
        "model.layers.0": 0,
        "model.layers.1": 1,
        "model.layers.2": "cpu",
        "lm_head": "disk",
    }
    assert main_device(dmap) == torch.device("cuda", 0)
    assert execution_device(dmap, "model.layers.1.self_attn.o_proj") == torch.device("cuda", 1)
    assert execution_device(dmap, "model.layers.2.mlp") == torch.device("cuda", 0)  # offloaded: runs on main
    assert execution_device(dmap, "model.layers.10") == torch.device("cuda", 0)  # "layers.1" is not its prefix
    assert execution_device({"": "cpu"}, "model.layers.3") == torch.device("cpu")
    assert main_device({"a": "cpu", "b": "disk"}) == torch.device("cpu")


def test_disk_offloaded_base_matches_trains_and_loads_checkpoints(tmp_path):
    folder = tmp_path / "tiny"
    reftlab.tiny_llama(seed=0).save_pretrained(folder)
    reftlab.tiny_tokenizer().save_pretrained(folder)
    full = reftlab.load_model(folder)
    dispatched = reftlab.load_model(folder, device_map=DEVICE_MAP, offload_folder=tmp_path / "offload")
    assert dispatched.dispatched and not full.dispatched
    assert dispatched.hf_model.model.layers[1].mlp.down_proj.weight.device.type == "meta"  # on disk
    ids = torch.randint(0, 250, (2, 9))
    assert torch.equal(dispatched(ids).logits, full(ids).logits)

    config = reftlab.ReftConfig(representations=REPS)
    torch.manual_seed(0)
    on_full = reftlab.get_reft_model(full, config)
    saved = on_full.save(tmp_path / "from-full")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FingerprintMismatch)  # the same fingerprint, read from the offloaded weights
        reft = reftlab.ReftModel.load(saved, dispatched)
    for site in reft.sites:
        assert reft.hooked.site_device(site.hook) == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in reft.interventions.parameters())
    enc = full.tokenizer(["Say bb", "Name c"], return_tensors="pt", padding=True)
    assert torch.allclose(reft.run(**enc, positions="l1").logits, on_full.run(**enc, positions="l1").logits, atol=1e-6)

    ds = reftlab.build_dataset(DF, full.tokenizer, positions="l1", num_interventions=2)
    for fast in (True, False):  # the packed fast path runs offloaded blocks by hand, the plain one through HF
        result = reftlab.train(reft, ds, epochs=2, batch_size=3, lr=0.05, fast=fast, progress=False, log_every=0)
        assert result.fast is fast and all(map(torch.isfinite, map(torch.tensor, result.losses)))
    assert not torch.equal(reft.interventions["layer_1_comp_block_output#0"].weight, on_full.interventions["layer_1_comp_block_output#0"].weight)  # fmt: skip

    trained = reft.save(tmp_path / "from-dispatched")
    back = reftlab.ReftModel.load(trained, full)
    assert torch.allclose(back.run(**enc, positions="l1").logits, reft.run(**enc, positions="l1").logits, atol=1e-6)
    assert reft.set_device("cpu") is reft and reft.hooked.dispatched  # the base stays where accelerate put it
    with pytest.raises(ValueError, match="offload_folder= goes with device_map="):
        reftlab.load_model(folder, offload_folder=tmp_path / "x")
