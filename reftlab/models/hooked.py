"""TransformerLens hook points on an *unmodified* Hugging Face causal LM.

``HookedModel`` is a ``HookedRootModule`` whose ``HookPoint``s sit beside the HF model
rather than inside it. A hook point taps its HF module (a forward hook or pre-hook)
only while it carries at least one TransformerLens hook, so:

- with no hooks, the HF model runs exactly as shipped (SDPA, KV cache, ``generate``,
  peft adapters): logits and greedy tokens equal the untouched model's;
- ``hooks()``, ``run_with_hooks``, ``run_with_cache`` and ``hook_dict`` work as in
  TransformerLens, with the classic names ``blocks.{L}.hook_resid_pre`` etc.;
- removing the last hook from a point removes its tap: nothing stays on the HF model.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, cast, runtime_checkable

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint
from transformers import GenerationMixin, PreTrainedModel

from ..sites import MODULE_SITE
from .arch import ArchSpec, arch_of, get_layers, get_module
from .peft import base_model, strip_prefix
from .placement import device_map_of, execution_device, module_name
from .source import ModelSource

TapKind = Literal["output", "input", "input_heads"]


class SiteHookPoint(HookPoint):
    """A HookPoint fed by a tap on an HF module, installed only while hooks are present."""

    _target: nn.Module
    _tap_handle: RemovableHandle | None

    def __init__(self, module: nn.Module, tap: TapKind, n_heads: int = 0) -> None:
        super().__init__()
        # Not a registered submodule: the HF model owns it.
        object.__setattr__(self, "_target", module)
        self._tap_kind, self._n_heads = tap, n_heads
        self._tap_handle = None

    def add_hook(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().add_hook(*args, **kwargs)
        self._sync_tap()
        return handle

    def remove_hooks(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().remove_hooks(*args, **kwargs)
        finally:
            self._sync_tap()

    @property
    def tapped(self) -> bool:
        return self._tap_handle is not None

    def _sync_tap(self) -> None:
        wanted = bool(self.fwd_hooks or self.bwd_hooks)
        if wanted and self._tap_handle is None:
            self._tap_handle = self._install()
        elif not wanted and self._tap_handle is not None:
            self._tap_handle.remove()
            self._tap_handle = None

    def _install(self) -> RemovableHandle:
        target = self._target
        # prepend: run before transformers' own output-capturing hooks, so that
        # `output_hidden_states` reports the edited representations.
        if self._tap_kind == "output":
            return target.register_forward_hook(self._on_output, prepend=True)
        return target.register_forward_pre_hook(self._on_input, with_kwargs=True, prepend=True)

    def _on_output(self, module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (self(output[0]), *output[1:])
        return self(output)

    def _on_input(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if args:
            x, rest = args[0], args[1:]
        else:
            key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
            x = kwargs[key]
        if self._tap_kind == "input_heads":
            b, p, _ = x.shape
            y = self(x.view(b, p, self._n_heads, -1)).reshape(b, p, -1)  # [b, p, h, dh] -> [b, p, h*dh]
        else:
            y = self(x)
        if args:
            return (y, *rest), kwargs
        return args, {**kwargs, key: y}


class _AttnHooks(nn.Module):
    def __init__(self, out_proj: nn.Module, n_heads: int) -> None:
        super().__init__()
        self.hook_z = SiteHookPoint(out_proj, "input_heads", n_heads)


class _BlockHooks(nn.Module):
    def __init__(self, block: nn.Module, arch: ArchSpec, n_heads: int) -> None:
        super().__init__()
        attn, mlp = get_module(block, arch.attn), get_module(block, arch.mlp)
        self.hook_resid_pre = SiteHookPoint(block, "input")
        self.hook_resid_post = SiteHookPoint(block, "output")
        self.hook_attn_in = SiteHookPoint(attn, "input")
        self.hook_attn_out = SiteHookPoint(attn, "output")
        self.hook_mlp_in = SiteHookPoint(mlp, "input")
        self.hook_mlp_out = SiteHookPoint(mlp, "output")
        self.attn = _AttnHooks(get_module(attn, arch.out_proj), n_heads)


# TransformerLens 4 canonical names that resolve to the classic hook points.
_ALIASES = {"hook_in": "hook_resid_pre", "hook_out": "hook_resid_post"}


class HookedModel(HookedRootModule):
    """An HF causal LM plus TransformerLens hook points, without touching the HF model.

    Attributes: ``model`` (what runs: the HF model, or its peft wrapper), ``hf_model``
    (the underlying ``PreTrainedModel``), ``tokenizer``, ``arch``, ``cfg`` (d_model,
    n_layers, n_heads, d_vocab), ``source`` (where ``load_model`` found it, recorded in
    checkpoints; None for a model handed over in memory).
    """

    source: ModelSource | None
    model: PreTrainedModel
    hf_model: PreTrainedModel
    cfg: dict[str, Any]

    def __init__(self, model: nn.Module, tokenizer: Any = None, *, source: ModelSource | None = None) -> None:
        super().__init__()
        # What runs is a PreTrainedModel or a peft model around one; peft forwards every attribute
        # it lacks (generate, config, ...) to the model it wraps, so PreTrainedModel is the honest
        # static type of both. arch_of below refuses anything that is not an HF causal LM.
        self.model = cast(PreTrainedModel, model)
        self.source = source
        hf = cast(PreTrainedModel, base_model(model))  # a peft model's PreTrainedModel
        object.__setattr__(self, "hf_model", hf)  # same modules as `model`; not registered twice
        self.tokenizer = tokenizer
        self.arch = arch_of(hf)
        c = hf.config
        text = c.get_text_config() if hasattr(c, "get_text_config") else c
        n_heads = int(getattr(text, "num_attention_heads", None) or text.n_head)
        layers = get_layers(hf, self.arch)
        self.cfg = {
            "d_model": int(getattr(text, "hidden_size", None) or text.n_embd),
            "n_layers": len(layers),
            "n_heads": n_heads,
            "d_vocab": int(text.vocab_size),
            "model_type": str(text.model_type),
        }
        self.hook_embed = SiteHookPoint(get_module(hf, self.arch.embed), "output")
        self.blocks = nn.ModuleList(_BlockHooks(b, self.arch, n_heads) for b in layers)
        self.ln_final = nn.Module()
        self.ln_final.hook_normalized = SiteHookPoint(get_module(hf, self.arch.final_norm), "output")
        self.setup()

    def setup(self) -> None:
        # Only our hook points: TransformerLens' setup would write `.name` onto every HF module.
        self.mod_dict, self.hook_dict = {}, {}
        for name, module in self.named_modules():
            if name and not name.startswith("model.") and name != "model":
                module.name = name
                self.mod_dict[name] = module
                if isinstance(module, HookPoint):
                    self.hook_dict[name] = module
        for i in range(len(self.blocks)):
            for alias, target in _ALIASES.items():
                self.mod_dict[f"blocks.{i}.{alias}"] = self.mod_dict[f"blocks.{i}.{target}"]

    @property
    def d_model(self) -> int:
        return int(self.cfg["d_model"])

    @property
    def n_layers(self) -> int:
        return int(self.cfg["n_layers"])

    @property
    def device(self) -> torch.device:
        """Where inputs go: the embedding's execution device (accelerate's, for a dispatched base)."""
        dmap = device_map_of(self.hf_model)
        if dmap is None:
            return next(self.model.parameters()).device
        embed = get_module(self.hf_model, self.arch.embed)
        return execution_device(dmap, module_name(self.hf_model, embed))

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: that of the first floating-point parameter (quantized weights are not)."""
        params = list(self.model.parameters())
        return next((p.dtype for p in params if p.dtype.is_floating_point), params[0].dtype)

    @property
    def dispatched(self) -> bool:
        """True when accelerate placed the base with a ``device_map`` (sharded or offloaded)."""
        return device_map_of(self.hf_model) is not None

    def site_device(self, name: str) -> torch.device:
        """The device of the hidden state at hook point ``name``: where its intervention lives."""
        dmap = device_map_of(self.hf_model)
        if dmap is None:
            return self.device
        hp = self.hook_point(name)
        if not isinstance(hp, SiteHookPoint):  # never: every hook point here taps an HF module
            return self.device
        return execution_device(dmap, module_name(self.hf_model, hp._target))

    def hook_point(self, name: str) -> HookPoint:
        """The hook point called ``name``; the error lists close valid names."""
        found = self.mod_dict.get(name)
        if isinstance(found, HookPoint):
            return found
        if MODULE_SITE.match(name):
            return self.module_hook_point(name)
        suffix = name.rsplit(".", 1)[-1]
        near = [n for n in self.hook_dict if n.endswith(suffix)][:4] or list(self.hook_dict)[:4]
        raise ValueError(f"no hook point {name!r} on this {self.cfg['model_type']} model; e.g. {', '.join(near)}")

    def module_hook_point(self, name: str) -> SiteHookPoint:
        """An on-demand hook point for ``"<module path>.input"`` / ``".output"`` (pyvene's string access).

        The path resolves on ``model`` (e.g. ``base_model.model.model.layers[15]`` under peft),
        else on the HF model (``model.layers[15]``), also with a peft prefix stripped.
        """
        found = self.hook_dict.get(name)
        if isinstance(found, SiteHookPoint):
            return found
        m = MODULE_SITE.match(name)
        if not m:
            raise ValueError(f"{name!r} is not a module path ending in '.input' or '.output'")
        path, errors = m["path"], []
        for root, p in (
            (self.model, path),
            (self.hf_model, path),
            (self.hf_model, strip_prefix(path)),
        ):
            try:
                module = get_module(root, p)
                break
            except ValueError as e:
                errors.append(str(e))
        else:
            raise ValueError(f"no hook point {name!r}: {errors[0]}")
        hp = SiteHookPoint(module, cast(TapKind, m["tap"]))  # MODULE_SITE admits only "input" / "output"
        hp.name = name
        self.mod_dict[name] = self.hook_dict[name] = hp
        return hp

    def forward(self, input_ids: Tensor | None = None, **kwargs: Any) -> Any:
        """Run the HF model (all its keyword arguments are accepted); returns its output."""
        return self.model(input_ids=input_ids, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """The HF model's ``generate`` (no interventions unless ``attach`` is active)."""
        # A causal LM (what arch_of admits) mixes in GenerationMixin; PreTrainedModel alone does not.
        return cast(GenerationMixin, self.model).generate(*args, **kwargs)

    def taps(self) -> list[str]:
        """Names of hook points whose tap is installed on the HF model right now."""
        return [n for n, hp in self.hook_dict.items() if isinstance(hp, SiteHookPoint) and hp.tapped]

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"HookedModel({c['model_type']}, d_model={c['d_model']}, n_layers={c['n_layers']}, "
            f"n_heads={c['n_heads']}, hook points={len(self.hook_dict)})"
        )


@runtime_checkable
class HasHooked(Protocol):
    """Anything that runs on a hooked base: a ``ReftModel`` (or ``ReftLike``) exposes it as ``hooked``."""

    @property
    def hooked(self) -> HookedModel: ...


def hooked_of(model: HookedModel | HasHooked) -> HookedModel:
    """The hooked base model of ``model``: itself, or a ReftModel's ``hooked``.

    >>> from reftlab.models import tiny_llama, tiny_tokenizer
    >>> base = HookedModel(tiny_llama(), tiny_tokenizer())
    >>> hooked_of(base) is base
    True
    """
    if isinstance(model, HookedModel):
        return model
    hooked = getattr(model, "hooked", None)
    if not isinstance(hooked, HookedModel):
        raise TypeError(
            f"expected a HookedModel (reftlab.load_model) or a ReftModel, got {type(model).__name__}; "
            "load the base with reftlab.load_model(...)"
        )
    return hooked
