"""Fold affine all-position interventions into the linear module that writes their site.

An intervention with a linear activation is affine: ``phi(y) = y + A y + c`` with
``c = edit(0)`` and ``A = d edit / d y`` (d x d, read off as ``edit(e_j) - c``). When it acts
at every position on the output ``y = W x + b`` of a linear module (``attention_output`` =
``o_proj``/``c_proj``/``dense``; ``mlp_output`` = ``down_proj``/``c_proj``/``dense_4h_to_h``;
or a module path ``"...o_proj.output"``), then

    phi(W x + b) = (I + A) W x + ((I + A) b + c)

so ``W <- (I + A) W`` and ``b <- (I + A) b + c`` reproduce it exactly (computed in float64).
A module without a bias gets one; for Llama-family configs ``attention_bias``/``mlp_bias``
is switched on and the other projections it governs get zero biases, so
``save_pretrained`` + plain ``from_pretrained`` rebuild the merged model. Anything else is
refused with the reason: positions other than ``all``, a non-linear activation, dropout,
a residual-stream or input site, a peft-wrapped module.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ..interventions import Intervention
from ..models.arch import get_module
from ..models.quantize import describe as describe_quantization
from ..sites import MODULE_SITE, Site

_MLP_OUT = {"gpt2": "c_proj", "gpt_neox": "dense_4h_to_h"}  # default: down_proj
_BIAS_FLAGS = {
    "attn": ("attention_bias", ("q_proj", "k_proj", "v_proj", "o_proj")),
    "mlp": ("mlp_bias", ("gate_proj", "up_proj", "down_proj")),
}


def merge_refusal(site: Site, iv: Intervention, hooked: Any) -> str | None:
    """Why ``iv`` at ``site`` cannot be merged, or None when it can."""
    if site.positions is None or not site.positions.all:
        pos = "given per call" if site.positions is None else f"'{site.positions}'"
        return f"it is position-specific (positions {pos}); only positions='all' acts like a weight"
    if getattr(iv, "act", "linear") != "linear":
        return f"it is non-linear (act={iv.act!r}); only an affine edit folds into a weight"
    if iv.dropout.p:
        return f"it has dropout={iv.dropout.p}; set dropout=0 (dropout is not a weight)"
    try:
        target, group = _target(site, hooked)
    except ValueError as e:
        return str(e)
    if not _is_linear(target):
        return f"the module writing {site.hook!r} is a {type(target).__name__}, not a linear layer"
    if target.bias is None and group is None:
        return (
            f"{site.hook!r} has no bias and no config flag adds one, so the merged bias would not survive "
            "save_pretrained + from_pretrained"
        )
    return None


def merge_into_base(sites: list[Site], interventions: list[Intervention], hooked: Any) -> nn.Module:
    """Fold every intervention into its module (all or nothing); returns the HF model."""
    quantized = describe_quantization(hooked.hf_model)
    if quantized is not None:
        raise ValueError(
            f"cannot merge into a quantized base ({quantized}): its weights are stored quantized, so a folded edit "
            "would be rounded to the quantization grid (or cannot be written at all); merge on the full-precision "
            "base (reftlab.load_model without quantization=), save it, then quantize the merged model"
        )
    if hasattr(hooked.model, "peft_config"):
        raise ValueError(
            "the model is peft-wrapped: merge the LoRA adapter first (model.merge_and_unload()), "
            "then build the ReftModel on the merged model"
        )
    reasons = [
        f"{s.hook} ({iv.kind}): {r}"
        for s, iv in zip(sites, interventions)
        if (r := merge_refusal(s, iv, hooked)) is not None
    ]
    if reasons:
        raise ValueError("cannot merge into the base model: " + "; ".join(reasons))
    for site, iv in zip(sites, interventions):
        target, group = _target(site, hooked)
        A, c = affine_parts(iv)
        _fold(target, A, c)
        if group is not None:
            _sync_bias_flags(hooked, group)
    return hooked.hf_model


@torch.no_grad()
def affine_parts(iv: Intervention) -> tuple[Tensor, Tensor]:
    """(A, c) in float64 with ``edit(y) = A y + c`` (A: [d_model, d_model], c: [d_model])."""
    exact = copy.deepcopy(iv).double().eval()
    probe = torch.cat([torch.zeros(1, iv.d_model), torch.eye(iv.d_model)]).double()  # [1 + d, d]: 0, e_1..e_d
    out = exact.edit(probe.to(next(exact.parameters()).device)).cpu()
    c = out[0]
    return (out[1:] - c).T.contiguous(), c  # row j of out[1:] - c is A e_j, so A = (out - c)^T


def _target(site: Site, hooked: Any) -> tuple[nn.Module, str | None]:
    m = MODULE_SITE.match(site.hook)
    if m:
        if m["tap"] != "output":
            raise ValueError(f"{site.hook!r} is a module input; only a linear module's output can be merged")
        path = m["path"].removeprefix("base_model.model.")
        name = path.replace("]", "").rsplit(".", 1)[-1]
        group = next((g for g, (_, names) in _BIAS_FLAGS.items() if name in names), None)
        return get_module(hooked.hf_model, path), group
    layer, comp = site.layer, site.component
    if layer is None or comp not in ("attention_output", "mlp_output"):
        what = "a residual-stream site" if comp in ("block_input", "block_output") or layer is None else "an input site"
        raise ValueError(
            f"{site.hook!r} is {what}: no single linear module writes it; "
            "use attention_output (after o_proj) or mlp_output (after down_proj)"
        )
    arch = hooked.arch
    block = get_module(hooked.hf_model, f"{arch.layers}.{layer}")
    if comp == "attention_output":
        return get_module(get_module(block, arch.attn), arch.out_proj), "attn"
    return get_module(get_module(block, arch.mlp), _MLP_OUT.get(arch.family, "down_proj")), "mlp"


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _fold(module: nn.Module, A: Tensor, c: Tensor) -> None:
    W = module.weight
    M = torch.eye(A.shape[0], dtype=torch.float64) + A.to(torch.float64)  # [out, out]
    if isinstance(module, nn.Linear):  # y = x W^T + b, W: [out, in]
        new_w = M @ W.detach().double().cpu()
    else:  # Conv1D: y = x W + b, W: [in, out]
        new_w = W.detach().double().cpu() @ M.T
    b = module.bias.detach().double().cpu() if module.bias is not None else torch.zeros(M.shape[0], dtype=torch.float64)
    new_b = M @ b + c.double().cpu()
    with torch.no_grad():
        W.copy_(new_w.to(W.dtype))
        if module.bias is None:
            module.bias = nn.Parameter(new_b.to(device=W.device, dtype=W.dtype), requires_grad=W.requires_grad)
        else:
            module.bias.copy_(new_b.to(module.bias.dtype))


def _sync_bias_flags(hooked: Any, group: str) -> None:
    """Make the HF config describe the added bias, adding zero biases where the flag needs them."""
    flag, names = _BIAS_FLAGS[group]
    config, arch = hooked.hf_model.config, hooked.arch
    if arch.family in ("gpt2", "gpt_neox") or getattr(config, flag, None) is True:
        return  # these always carry biases
    if not hasattr(config, flag):
        raise ValueError(
            f"{config.model_type} has no {flag!r} config flag, so a merged bias would not survive "
            "save_pretrained + from_pretrained; merging is not supported for this architecture"
        )
    setattr(config, flag, True)
    for block in get_module(hooked.hf_model, arch.layers):
        parent = get_module(block, arch.attn if group == "attn" else arch.mlp)
        for name in names:
            mod = getattr(parent, name, None)
            if isinstance(mod, nn.Linear) and mod.bias is None:
                w = mod.weight
                mod.bias = nn.Parameter(
                    torch.zeros(w.shape[0], dtype=w.dtype, device=w.device), requires_grad=w.requires_grad
                )
