"""LoRA together with ReFT: pyvene string components, joint training, peft's own files, round trips."""

import io
from contextlib import redirect_stdout

import pytest
import torch
from helpers import no_hooks_anywhere
from peft import LoraConfig, PeftModel, get_peft_model

import reftlab
from reftlab.models import tiny_llama, tiny_tokenizer


def lora_reft(layer=2, d=64):
    peft_model = get_peft_model(
        tiny_llama(),
        LoraConfig(r=4, lora_alpha=8, target_modules=["o_proj"], layers_to_transform=[layer], use_rslora=True),
    )
    cfg = reftlab.ReftConfig(
        representations=[
            {
                "layer": layer,
                "component": f"base_model.model.model.layers[{layer}].output",
                "low_rank_dimension": 4,
                "positions": "l2",
                "intervention": reftlab.LoreftIntervention(embed_dim=d, low_rank_dimension=4),
            },
            {
                "layer": 0,
                "component": "model.layers[0].input",
                "low_rank_dimension": 2,
                "positions": "f1",
                "intervention": reftlab.NoreftIntervention(embed_dim=d, low_rank_dimension=2),
            },
        ]
    )
    rm = reftlab.get_reft_model(peft_model, cfg, tokenizer=tiny_tokenizer())
    with torch.no_grad():  # LoRA's B starts at zero: make the adapter matter
        for n, p in rm.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    return rm


def test_string_components_are_the_same_sites_as_hook_names():
    hooked = reftlab.load_model(tiny_llama(), tiny_tokenizer())
    iv = reftlab.LoReFT(d_model=64, rank=2)
    ids = torch.randint(0, 256, (2, 7))
    outs = []
    for comp in ("block_output", "model.layers[1].output"):
        rm = reftlab.get_reft_model(
            hooked,
            reftlab.ReftConfig(representations={"layer": 1, "component": comp, "positions": "f2", "intervention": iv}),
        )
        with torch.no_grad():
            outs.append(rm.run(ids).logits)
    assert torch.equal(*outs)
    assert list(rm.interventions) == ["model_layers[1]_output#0"]
    assert no_hooks_anywhere(hooked)


def test_input_component_edits_the_block_input():
    hooked = reftlab.load_model(tiny_llama(), tiny_tokenizer())
    iv = reftlab.DiReFT(d_model=64, rank=2)
    ids = torch.randint(0, 256, (1, 5))
    outs = []
    for spec in ({"hook": "blocks.2.hook_resid_pre"}, {"layer": 2, "component": "model.layers[2].input"}):
        rm = reftlab.get_reft_model(
            hooked, reftlab.ReftConfig(representations={**spec, "positions": "all", "intervention": iv})
        )
        with torch.no_grad():
            outs.append(rm.run(ids).logits)
    assert torch.equal(*outs)


def test_unknown_module_path_is_a_clear_error():
    hooked = reftlab.load_model(tiny_llama(), tiny_tokenizer())
    cfg = reftlab.ReftConfig(
        representations={
            "layer": 0,
            "component": "model.layerz[0].output",
            "low_rank_dimension": 2,
            "intervention": {"kind": "loreft"},
        }
    )
    with pytest.raises(ValueError, match="no hook point 'model.layerz\\[0\\].output'.*no submodule 'layerz'"):
        reftlab.get_reft_model(hooked, cfg)


def test_lora_and_reft_train_jointly_and_are_counted():
    rm = lora_reft()
    rm.model.enable_adapter_layers()
    buf = io.StringIO()
    with redirect_stdout(buf):
        rm.print_trainable_parameters()
    iv_params = (2 * 64 * 4 + 4) + (2 * 64 * 2 + 2 + 2)
    assert (
        buf.getvalue().splitlines()[0]
        == f"trainable intervention params: {iv_params:,d} || trainable model params: {2 * 4 * 64:,d}"
    )
    lora = {n: p for n, p in rm.model.named_parameters() if p.requires_grad}
    assert sorted(lora) == [
        "base_model.model.model.layers.2.self_attn.o_proj.lora_A.default.weight",
        "base_model.model.model.layers.2.self_attn.o_proj.lora_B.default.weight",
    ]
    before = {n: p.detach().clone() for n, p in [*lora.items(), *rm.interventions.named_parameters()]}
    opt = torch.optim.AdamW([*lora.values(), *rm.interventions.parameters()], lr=1e-2)
    ids = torch.randint(0, 256, (2, 8))
    loss = rm.run(ids, labels=ids).loss
    loss.backward()
    opt.step()
    after = dict([*lora.items(), *rm.interventions.named_parameters()])
    assert all(not torch.equal(before[n], after[n]) for n in before), [
        n for n in before if torch.equal(before[n], after[n])
    ]
    assert no_hooks_anywhere(rm.hooked)


def test_save_writes_peft_files_and_both_parts_load_back(tmp_path):
    rm = lora_reft()
    ids = torch.randint(0, 256, (2, 8))
    with torch.no_grad():
        want = rm.run(ids).logits
        lora_only = rm.model(input_ids=ids).logits
    folder = rm.save(tmp_path / "c")
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "reftlab_config.json",
        "interventions.safetensors",
        "README.md",
    } <= {p.name for p in folder.iterdir()}
    loaded = reftlab.ReftModel.load(folder, tiny_llama())  # a plain base model: wrapped with the adapter
    assert hasattr(loaded.model, "peft_config")
    with torch.no_grad():
        assert torch.equal(loaded.run(ids).logits, want)
    again = reftlab.ReftModel.load(folder, lora_reft().model)  # a peft model: the weights are loaded into it
    with torch.no_grad():
        assert torch.equal(again.run(ids).logits, want)
    alone = PeftModel.from_pretrained(tiny_llama(), str(folder)).eval()
    with torch.no_grad():
        assert torch.equal(alone(input_ids=ids).logits, lora_only)


def test_lora_config_mismatch_is_refused(tmp_path):
    folder = lora_reft(layer=2).save(tmp_path / "c")
    other = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["o_proj"], layers_to_transform=[2]))
    with pytest.raises(ValueError, match="LoRA adapter has r=4, but the model's peft adapter has 2"):
        reftlab.ReftModel.load(folder, other)


@pytest.mark.embedded
def test_smollm2_lora_on_layer_15_adds_4608_trainable_params():
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(reftlab.embedded_model_path())
    peft_model = get_peft_model(
        hf, LoraConfig(r=4, target_modules=["o_proj"], layers_to_transform=[15], use_rslora=True)
    )
    cfg = reftlab.ReftConfig(
        representations={
            "layer": 15,
            "component": "base_model.model.model.layers[15].output",
            "low_rank_dimension": 4,
            "intervention": reftlab.LoreftIntervention(embed_dim=576, low_rank_dimension=4),
        }
    )
    rm = reftlab.get_reft_model(peft_model, cfg)
    rm.model.enable_adapter_layers()
    buf = io.StringIO()
    with redirect_stdout(buf):
        rm.print_trainable_parameters()
    assert buf.getvalue().splitlines()[0] == "trainable intervention params: 4,612 || trainable model params: 4,608"
