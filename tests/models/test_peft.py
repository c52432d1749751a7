"""reftlab.models.peft on a tiny Llama with a peft LoRA adapter: detection, the base model, LoRA's names."""

import pytest
import torch
from peft import LoraConfig, get_peft_model, inject_adapter_in_model

from reftlab.models import tiny_llama
from reftlab.models.peft import (
    PREFIX,
    base_model,
    base_name,
    freeze_base,
    has_adapters,
    is_lora_parameter,
    is_peft_model,
    lora_modules,
    lora_parameters,
    strip_prefix,
)

LORA = LoraConfig(r=2, lora_alpha=4, target_modules=["o_proj"], layers_to_transform=[1, 3])


@pytest.fixture
def plain():
    torch.manual_seed(0)
    return tiny_llama()


def test_a_plain_model_has_no_adapters(plain):
    assert not has_adapters(plain) and not is_peft_model(plain)
    assert base_model(plain) is plain
    assert lora_parameters(plain) == {} and lora_modules(plain) == []


def test_a_peft_model_is_seen_through(plain):
    own = dict(plain.named_parameters())  # before peft puts its layers into plain's modules
    wrapped = get_peft_model(plain, LORA)
    assert has_adapters(wrapped) and is_peft_model(wrapped)
    assert base_model(wrapped) is plain
    assert lora_modules(wrapped) == [f"{PREFIX}model.layers.{i}.self_attn.o_proj" for i in (1, 3)]
    assert sorted(lora_parameters(wrapped)) == sorted(
        f"{PREFIX}model.layers.{i}.self_attn.o_proj.lora_{ab}.default.weight" for i in (1, 3) for ab in "AB"
    )
    # every other parameter, named as on the plain model, is the plain model's own tensor
    base = {base_name(strip_prefix(n)): p for n, p in wrapped.named_parameters() if not is_lora_parameter(n)}
    assert base.keys() == own.keys() and all(base[n] is own[n] for n in own)
    assert wrapped.get_submodule(PREFIX.rstrip(".")) is plain  # PREFIX is where peft keeps it


def test_adapters_added_in_place_are_adapters_without_a_wrapper(plain):
    # what transformers' model.add_adapter does (it needs peft >= 0.22): LoRA layers in place, a peft_config
    plain = inject_adapter_in_model(LORA, plain)
    plain.peft_config = {"default": LORA}
    assert has_adapters(plain) and not is_peft_model(plain)
    assert base_model(plain) is plain
    assert lora_modules(plain) == [f"model.layers.{i}.self_attn.o_proj" for i in (1, 3)]


def test_freeze_base_keeps_only_lora_trainable(plain):
    wrapped = get_peft_model(plain, LORA)
    for p in wrapped.parameters():
        p.requires_grad_(True)
    freeze_base(wrapped)
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable == set(lora_parameters(wrapped))
    freeze_base(other := tiny_llama())
    assert not any(p.requires_grad for p in other.parameters())
