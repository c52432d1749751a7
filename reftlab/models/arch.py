"""The architecture registry: the one place that knows where HF keeps each part of a model.

Every family reftlab supports is one ``ArchSpec`` entry in ``ARCHS``, keyed by
``config.model_type``. Everything that reaches into an HF model by attribute name reads
it: the hook points (``models.hooked``), the fast training path (``train.fast_forward``),
merging (``io.merge``) and the sparse logits (``lm_logits``). Adding a family is one entry
here plus one line in ``tests/models/test_architectures.py``, whose results generate
``docs/architectures.md``.

What the registry does *not* hold: rotary embeddings, embedding scaling (Gemma's
sqrt(d_model), Granite's multiplier), sliding-window layer patterns and soft-capped
attention. The fast path runs the family's own decoder ``forward`` (see
``train.fast_forward``), so those stay the family's own code and never need a path here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from jaxtyping import Float
from torch import Tensor, nn


@dataclass(frozen=True, kw_only=True)
class ArchSpec:
    """Dotted paths, relative to the HF causal LM (or to one block), and family facts.

    >>> ARCHS["gpt2"].layers, ARCHS["gpt2"].mlp_out
    ('transformer.h', 'c_proj')
    """

    family: str
    decoder: str = "model"  # the base model: its forward(inputs_embeds=..., attention_mask=..., cache=...)
    layers: str = "model.layers"  # nn.ModuleList of decoder blocks
    attn: str = "self_attn"  # inside a block; its output[0] is the attention output
    mlp: str = "mlp"  # inside a block
    out_proj: str = "o_proj"  # inside attn: input = concatenated head outputs (z), output = attention output
    mlp_out: str | None = "down_proj"  # inside mlp: the linear module writing the MLP output (None: MoE)
    embed: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    unembed: str = "lm_head"
    block_returns_tuple: bool = False  # the block returns (hidden_states, ...) instead of a tensor
    # The decoder's attention_mask: one mask for every layer, or a dict keyed by
    # config.layer_types ("full_attention" / "sliding_attention"). A single mask is a
    # sliding-window mask when config.sliding_window is set.
    masks: Literal["single", "by_layer_type"] = "single"
    # Config flag -> the block-relative linear modules whose bias it switches on. A merge
    # that gives a module a bias switches its flag on and zero-biases the rest.
    bias_flags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    always_biased: bool = False  # every linear module has a bias (no flag needed)
    # Logit post-processing after lm_head, as config attribute names (HF applies them in this order).
    logit_multiplier: str | None = None  # logits * config.<name>  (Cohere)
    logit_divisor: str | None = None  # logits / config.<name>  (Granite)
    logit_softcap: str | None = None  # tanh(logits / cap) * cap  (Gemma 2/3)

    def block(self, hf_model: nn.Module, layer: int) -> nn.Module:
        return get_module(hf_model, f"{self.layers}.{layer}")


_QKVO = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
_GATED_MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_ATTN_BIAS = {"attention_bias": _QKVO}
_BOTH_BIAS = {"attention_bias": _QKVO, "mlp_bias": _GATED_MLP}

ARCHS: dict[str, ArchSpec] = {
    spec.family: spec
    for spec in [
        ArchSpec(family="llama", bias_flags=_BOTH_BIAS),
        ArchSpec(family="mistral"),
        ArchSpec(family="mixtral", mlp_out=None),
        ArchSpec(family="qwen2", masks="by_layer_type"),
        ArchSpec(family="qwen2_moe", masks="by_layer_type", mlp_out=None),
        ArchSpec(family="qwen3", masks="by_layer_type", bias_flags=_ATTN_BIAS),
        ArchSpec(family="qwen3_moe", mlp_out=None, bias_flags=_ATTN_BIAS),
        ArchSpec(family="gemma", bias_flags=_ATTN_BIAS),
        ArchSpec(
            family="gemma2", masks="by_layer_type", bias_flags=_ATTN_BIAS, logit_softcap="final_logit_softcapping"
        ),
        ArchSpec(
            family="gemma3_text",
            masks="by_layer_type",
            bias_flags=_ATTN_BIAS,
            logit_softcap="final_logit_softcapping",
        ),
        ArchSpec(family="phi3"),
        ArchSpec(family="olmo", bias_flags=_ATTN_BIAS),
        ArchSpec(family="olmo2", bias_flags=_ATTN_BIAS),
        ArchSpec(family="granite", bias_flags=_BOTH_BIAS, logit_divisor="logits_scaling"),
        ArchSpec(family="smollm3", masks="by_layer_type", bias_flags=_BOTH_BIAS),
        ArchSpec(family="cohere", bias_flags=_ATTN_BIAS, logit_multiplier="logit_scale"),
        ArchSpec(
            family="gpt2",
            decoder="transformer",
            layers="transformer.h",
            attn="attn",
            out_proj="c_proj",
            mlp_out="c_proj",
            embed="transformer.wte",
            final_norm="transformer.ln_f",
            always_biased=True,
        ),
        ArchSpec(
            family="gpt_neox",
            decoder="gpt_neox",
            layers="gpt_neox.layers",
            attn="attention",
            out_proj="dense",
            mlp_out="dense_4h_to_h",
            embed="gpt_neox.embed_in",
            final_norm="gpt_neox.final_layer_norm",
            always_biased=True,
        ),
        ArchSpec(
            family="falcon",
            decoder="transformer",
            layers="transformer.h",
            attn="self_attention",
            out_proj="dense",
            mlp_out="dense_4h_to_h",
            embed="transformer.word_embeddings",
            final_norm="transformer.ln_f",
            block_returns_tuple=True,
            bias_flags={
                "bias": (
                    "self_attention.query_key_value",
                    "self_attention.dense",
                    "mlp.dense_h_to_4h",
                    "mlp.dense_4h_to_h",
                )
            },
        ),
    ]
}


def arch_of(hf_model: nn.Module) -> ArchSpec:
    """The ``ArchSpec`` of an HF causal LM, by ``config.model_type``; the error lists the supported ones."""
    model_type = getattr(getattr(hf_model, "config", None), "model_type", None)
    if model_type not in ARCHS:
        raise ValueError(
            f"model_type={model_type!r} is not supported; supported: {', '.join(sorted(ARCHS))}. "
            "Add an ArchSpec to reftlab.models.arch.ARCHS for it (and a line to tests/models/test_architectures.py)."
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


def get_layers(root: nn.Module, arch: ArchSpec) -> nn.ModuleList:
    """The family's list of transformer blocks (``ArchSpec.layers``)."""
    layers = get_module(root, arch.layers)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{arch.family}: {arch.layers!r} is a {type(layers).__name__}, not the ModuleList of blocks")
    return layers


def text_config(hf_model: nn.Module) -> Any:
    cfg: Any = hf_model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def lm_logits(hf_model: nn.Module, hidden: Float[Tensor, "*shape d_model"]) -> Float[Tensor, "*shape vocab"]:
    """The causal LM's logits for final-norm hidden states, computed as the family's own head does:

        logits = lm_head(h) [* multiplier] [/ divisor] [-> tanh(logits / cap) * cap]

    so sparse logits (only scored tokens) equal the HF model's at those tokens.
    """
    arch = arch_of(hf_model)
    cfg = text_config(hf_model)
    logits = get_module(hf_model, arch.unembed)(hidden)
    if arch.logit_multiplier is not None:
        logits = logits * getattr(cfg, arch.logit_multiplier)
    if arch.logit_divisor is not None:
        logits = logits / getattr(cfg, arch.logit_divisor)
    cap = getattr(cfg, arch.logit_softcap, None) if arch.logit_softcap is not None else None
    if cap is not None:
        logits = logits / cap
        logits = logits.tanh()
        logits = logits * cap
    return logits
