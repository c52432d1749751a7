"""Fold affine all-position interventions into the linear module that writes their site.

An intervention with a linear activation is affine: ``phi(y) = y + A y + c`` with
``c = edit(0)`` and ``A = d edit / d y`` (d x d, read off as ``edit(e_j) - c``). When it acts
at every position on the output ``y = W x + b`` of a linear module (``attention_output``:
the family's ``ArchSpec.out_proj``; ``mlp_output``: its ``ArchSpec.mlp_out``; or a module path
``"...o_proj.output"``), then

    phi(W x + b) = (I + A) W x + ((I + A) b + c)

so ``W <- (I + A) W`` and ``b <- (I + A) b + c`` reproduce it exactly (computed in float64,
stored in the module's dtype). A module without a bias gets one; the config flag that
governs it (``ArchSpec.bias_flags``, e.g. Llama's ``attention_bias``) is switched on and the
other modules it governs get zero biases, so ``save_pretrained`` + plain ``from_pretrained``
rebuild the merged model. Anything else is refused with the reason: positions other than
``all``, a non-linear activation, dropout, a residual-stream or input site, a
mixture-of-experts MLP, a bias no config flag can carry, a peft-wrapped module.

All or nothing: every new weight is computed before the first one is written, and if
writing fails midway the touched modules and config flags are restored.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..interventions import Intervention
from ..models.arch import ArchSpec, get_layers, get_module
from ..models.peft import has_adapters, strip_prefix
from ..models.quantize import describe as describe_quantization
from ..sites import MODULE_SITE, Site


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
        target, flag = _target(site, hooked)
    except ValueError as e:
        return str(e)
    if not _is_linear(target):
        return f"the module writing {site.hook!r} is a {type(target).__name__}, not a linear layer"
    if target.bias is None and flag is None:
        return (
            f"{site.hook!r} has no bias and no {hooked.arch.family} config flag adds one, so the merged bias "
            "would not survive save_pretrained + from_pretrained"
        )
    if target.bias is None and not hasattr(hooked.hf_model.config, flag):
        return f"{hooked.arch.family}'s config has no {flag!r} flag, so a merged bias would not survive reloading"
    return None


@dataclass
class _Plan:
    """New parameters for every module a merge touches, and the config flags it switches on."""

    weights: dict[nn.Module, tuple[Tensor, Tensor]] = field(default_factory=dict)  # module -> (W, b) in float64
    zero_biases: list[nn.Module] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


def merge_into_base(sites: list[Site], interventions: list[Intervention], hooked: Any) -> nn.Module:
    """Fold every intervention into its module, all or nothing; returns the HF model."""
    quantized = describe_quantization(hooked.hf_model)
    if quantized is not None:
        raise ValueError(
            f"cannot merge into a quantized base ({quantized}): its weights are stored quantized, so a folded edit "
            "would be rounded to the quantization grid (or cannot be written at all); merge on the full-precision "
            "base (reftlab.load_model without quantization=), save it, then quantize the merged model"
        )
    if has_adapters(hooked.model):
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
    plan = _plan(sites, interventions, hooked)
    _commit(plan, hooked)
    return hooked.hf_model


def _plan(sites: list[Site], interventions: list[Intervention], hooked: Any) -> _Plan:
    """Compute every new weight and bias (float64), touching nothing."""
    plan = _Plan()
    config = hooked.hf_model.config
    for site, iv in zip(sites, interventions):  # in order: two edits on one module compose
        target, flag = _target(site, hooked)
        W, b = plan.weights.get(target) or _current(target)
        A, c = affine_parts(iv)
        plan.weights[target] = _fold(target, W, b, A, c)
        needs_flag = flag is not None and _bias(target) is None and getattr(config, flag, None) is not True
        if needs_flag and flag is not None and flag not in plan.flags:
            plan.flags.append(flag)
    for flag in plan.flags:
        for block in get_layers(hooked.hf_model, hooked.arch):
            for path in hooked.arch.bias_flags[flag]:
                mod = _maybe_module(block, path)
                if mod is not None and _is_linear(mod) and _bias(mod) is None and mod not in plan.weights:
                    plan.zero_biases.append(mod)
    return plan


def _commit(plan: _Plan, hooked: Any) -> None:
    """Write the plan; on any failure put back every module and flag it had changed."""
    config = hooked.hf_model.config
    saved_flags = {f: getattr(config, f) for f in plan.flags}
    touched = [*plan.weights, *plan.zero_biases]
    saved = []
    for m in touched:
        bias = _bias(m)
        saved.append((m, _weight(m).detach().clone(), bias, None if bias is None else bias.detach().clone()))
    try:
        for module, (W, b) in plan.weights.items():
            _write(module, W, b)
        for module in plan.zero_biases:
            _write(module, None, torch.zeros(_weight(module).shape[_out_dim(module)], dtype=torch.float64))
        for flag in plan.flags:
            setattr(config, flag, True)
    except BaseException:
        with torch.no_grad():
            for module, weight, bias, bias_values in saved:
                _weight(module).copy_(weight)
                setattr(module, "bias", bias)  # noqa: B010  # nn.Module types .bias as Tensor | Module
                if bias is not None and bias_values is not None:
                    bias.copy_(bias_values)
        for flag, value in saved_flags.items():
            setattr(config, flag, value)
        raise


@torch.no_grad()
def affine_parts(iv: Intervention) -> tuple[Tensor, Tensor]:
    """(A, c) in float64 with ``edit(y) = A y + c`` (A: [d_model, d_model], c: [d_model])."""
    exact = copy.deepcopy(iv).double().eval()
    probe = torch.cat([torch.zeros(1, iv.d_model), torch.eye(iv.d_model)]).double()  # [1 + d, d]: 0, e_1..e_d
    out = exact.edit(probe.to(next(exact.parameters()).device)).cpu()
    c = out[0]
    return (out[1:] - c).T.contiguous(), c  # row j of out[1:] - c is A e_j, so A = (out - c)^T


def _target(site: Site, hooked: Any) -> tuple[nn.Module, str | None]:
    """The linear module writing ``site``, and the config flag that governs its bias (if any)."""
    arch: ArchSpec = hooked.arch
    m = MODULE_SITE.match(site.hook)
    if m:
        if m["tap"] != "output":
            raise ValueError(f"{site.hook!r} is a module input; only a linear module's output can be merged")
        path = strip_prefix(m["path"])
        return get_module(hooked.hf_model, path), _flag_for(arch, _block_relative(arch, path))
    layer, comp = site.layer, site.component
    if layer is None or comp not in ("attention_output", "mlp_output"):
        what = "a residual-stream site" if comp in ("block_input", "block_output") or layer is None else "an input site"
        raise ValueError(
            f"{site.hook!r} is {what}: no single linear module writes it; "
            "use attention_output (after the attention's output projection) or mlp_output (after the MLP's)"
        )
    block = arch.block(hooked.hf_model, layer)
    if comp == "attention_output":
        rel = f"{arch.attn}.{arch.out_proj}"
    elif arch.mlp_out is None:
        raise ValueError(
            f"{site.hook!r}: {arch.family}'s MLP is a mixture of experts, so no single linear module writes it"
        )
    else:
        rel = f"{arch.mlp}.{arch.mlp_out}"
    return get_module(block, rel), _flag_for(arch, rel)


def _block_relative(arch: ArchSpec, path: str) -> str | None:
    m = re.match(rf"^{re.escape(arch.layers)}\.?\[?(\d+)\]?\.(.+)$", path)
    return m.group(2) if m else None


def _flag_for(arch: ArchSpec, rel: str | None) -> str | None:
    return next((flag for flag, paths in arch.bias_flags.items() if rel in paths), None)


def _maybe_module(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return get_module(root, path)
    except ValueError:
        return None


def _is_linear(module: nn.Module | None) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


# Linear and transformers' Conv1D (the modules _is_linear accepts) own `weight` and an optional `bias`;
# nn.Module types attributes loosely, so these two name the parameter types once.
def _weight(module: nn.Module) -> nn.Parameter:
    return cast(nn.Parameter, module.weight)


def _bias(module: nn.Module) -> nn.Parameter | None:
    return cast("nn.Parameter | None", module.bias)


def _out_dim(module: nn.Module) -> int:
    return 0 if isinstance(module, nn.Linear) else 1  # Linear W: [out, in]; Conv1D W: [in, out]


def _current(module: nn.Module) -> tuple[Tensor, Tensor]:
    W = _weight(module).detach().double().cpu()
    bias = _bias(module)
    b = (
        bias.detach().double().cpu()
        if bias is not None
        else torch.zeros(W.shape[_out_dim(module)], dtype=torch.float64)
    )
    return W, b


def _fold(module: nn.Module, W: Tensor, b: Tensor, A: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    M = torch.eye(A.shape[0], dtype=torch.float64) + A.to(torch.float64)  # [out, out]
    new_w = M @ W if isinstance(module, nn.Linear) else W @ M.T  # Linear: y = x W^T + b; Conv1D: y = x W + b
    return new_w, M @ b + c.double().cpu()


def _write(module: nn.Module, W: Tensor | None, b: Tensor) -> None:
    weight, bias = _weight(module), _bias(module)
    with torch.no_grad():
        if W is not None:
            weight.copy_(W.to(weight.dtype))
        if bias is None:
            module.bias = nn.Parameter(
                b.to(device=weight.device, dtype=weight.dtype), requires_grad=weight.requires_grad
            )
        else:
            bias.copy_(b.to(bias.dtype))
