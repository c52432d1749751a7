"""Where the transformer blocks and their parts live in each supported HF architecture."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True, kw_only=True)
class ArchSpec:
    """Dotted paths, relative to the HF causal LM, of the modules the hook points tap."""

    family: str
    layers: str  # nn.ModuleList of decoder blocks
    attn: str  # inside a block; its output[0] is the attention output
    mlp: str  # inside a block
    out_proj: str  # inside the attention module; its input is the concatenated head outputs (z)
    embed: str
    final_norm: str
    unembed: str


_LLAMA_LIKE = {
    "layers": "model.layers",
    "attn": "self_attn",
    "mlp": "mlp",
    "out_proj": "o_proj",
    "embed": "model.embed_tokens",
    "final_norm": "model.norm",
    "unembed": "lm_head",
}
ARCHS: dict[str, ArchSpec] = {
    **{
        t: ArchSpec(family=t, **_LLAMA_LIKE)
        for t in (
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "gemma",
            "gemma2",
            "gemma3_text",
            "olmo",
            "olmo2",
            "smollm3",
            "granite",
            "phi3",
        )
    },
    "gpt2": ArchSpec(
        family="gpt2",
        layers="transformer.h",
        attn="attn",
        mlp="mlp",
        out_proj="c_proj",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        unembed="lm_head",
    ),
    "gpt_neox": ArchSpec(
        family="gpt_neox",
        layers="gpt_neox.layers",
        attn="attention",
        mlp="mlp",
        out_proj="dense",
        embed="gpt_neox.embed_in",
        final_norm="gpt_neox.final_layer_norm",
        unembed="embed_out",
    ),
}


def arch_of(hf_model: nn.Module) -> ArchSpec:
    model_type = getattr(getattr(hf_model, "config", None), "model_type", None)
    if model_type not in ARCHS:
        raise ValueError(
            f"model_type={model_type!r} is not supported; supported: {', '.join(sorted(ARCHS))}. "
            "Add an ArchSpec to reftlab.models.arch.ARCHS for it."
        )
    return ARCHS[model_type]


def get_module(root: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted path with optional ``[i]`` indices, e.g. ``model.layers[15].mlp``."""
    mod = root
    for part in path.replace("[", ".").replace("]", "").split("."):
        if not part:
            continue
        if not hasattr(mod, part):
            raise ValueError(f"module path {path!r}: {type(mod).__name__} has no submodule {part!r}")
        mod = getattr(mod, part)
    return mod
