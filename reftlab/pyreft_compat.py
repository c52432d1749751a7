"""pyreft's and pyvene's calls on a ReftModel, in one mixin: ``PyreftCompat``.

pyreft users call ``reft_model(base, unit_locations={"sources->base": (None, locs)}, labels=...)``,
``reft_model.generate(base, unit_locations=..., intervene_on_prompt=True, ...)``,
``set_device``, ``get_device``, ``count_parameters`` and ``print_trainable_parameters``; pyvene's
interchange call passes ``sources=[source]``. Each of those takes pyvene's parameters in its order,
refuses the ones a ReFT cannot honour (``reftlab.inputs.refuse_pyvene_only``) and turns
``unit_locations`` into reftlab's ``positions``; then it calls the native surface of
``reftlab.reft_model.ReftModel`` (``run``, ``bindings``, ``place_interventions``), which reads
on its own without any of this.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

import torch
from jaxtyping import Int
from torch import Tensor, nn

from .attach import Binding, ReftLike, attach
from .inputs import as_base, check_inputs, refuse_pyvene_only, unit_locations_to_positions
from .interventions import InterventionDict
from .models.device import check_device
from .models.hooked import HookedModel
from .sites import PositionsArg

_Self = TypeVar("_Self", bound="PyreftCompat")


def parameter_count(module: nn.Module, *, trainable: bool = False) -> int:
    """Elements of ``module``'s parameters (a shared one once: ``parameters()`` yields it once);
    with ``trainable`` only those that require a gradient.

    >>> lin = nn.Linear(3, 2)
    >>> lin.bias.requires_grad_(False)
    Parameter containing:...
    >>> parameter_count(lin), parameter_count(lin, trainable=True)
    (8, 6)
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


class PyreftCompat(nn.Module):
    """The pyreft/pyvene-compatible methods of ``ReftModel`` (see the module); abstract: it needs
    the native ``run``, ``bindings`` and ``place_interventions``."""

    hooked: HookedModel
    interventions: InterventionDict

    @abstractmethod
    def run(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        positions: PositionsArg = None,
        prompt_lengths: Int[Tensor, " batch"] | Sequence[int] | None = None,
        labels: Tensor | None = None,
        source: Any = None,
        **kwargs: Any,
    ) -> Any: ...

    @abstractmethod
    def bindings(
        self,
        positions: PositionsArg,
        attention_mask: Tensor,
        prompt_lengths: Int[Tensor, " batch"] | Sequence[int] | None = None,
        *,
        allow_empty: bool = False,
    ) -> list[Binding]: ...

    @abstractmethod
    def place_interventions(self) -> None: ...

    def set_device(self: _Self, device: str | torch.device, set_model: bool = True) -> _Self:
        """Move the base and the interventions to ``device`` (pyreft's call); with
        ``set_model=False`` only the interventions.

        On a base dispatched by accelerate (``device_map``: sharded or offloaded) the base
        stays where accelerate put it and every intervention goes to its site's device.
        """
        if self.hooked.dispatched:
            self.place_interventions()
            return self
        if not set_model:
            self.interventions.to(check_device(device))
            return self
        return self.to(check_device(device))

    def get_device(self) -> torch.device:
        """The device of the base model's parameters (pyvene's ``get_device``)."""
        return self.hooked.device

    def count_parameters(self, include_model: bool = False) -> int:
        """Trainable intervention parameters (shared ones once), plus the base model's trainable
        ones (a head, LoRA) with ``include_model=True``: pyreft's count."""
        n = parameter_count(self.interventions, trainable=True)
        return n + parameter_count(self.hooked.model, trainable=True) if include_model else n

    def print_trainable_parameters(self) -> None:
        """pyreft's summary line of trainable intervention, trainable model and all model parameters."""
        iv = parameter_count(self.interventions, trainable=True)
        trainable_model = parameter_count(self.hooked.model, trainable=True)
        total_model = parameter_count(self.hooked.model)
        print(
            f"trainable intervention params: {iv:,d} || trainable model params: {trainable_model:,d}\n"
            f"model params: {total_model:,d} || trainable%: {100 * (iv + trainable_model) / total_model}"
        )

    def forward(
        self,
        base: Mapping[str, Tensor] | None = None,
        sources: Any = None,
        unit_locations: Mapping[str, Any] | None = None,
        source_representations: Any = None,
        subspaces: Any = None,
        labels: Tensor | None = None,
        output_original_output: bool | None = False,
        return_dict: bool | None = None,
        use_cache: bool | None = None,
        intervention_additional_kwargs: Mapping[str, Any] | None = None,
        *,
        positions: PositionsArg = None,
        **kwargs: Any,
    ) -> tuple[None, Any]:
        """pyreft's call: ``reft_model(base, unit_locations={"sources->base": (None, locs)}, labels=...)``.

        Returns ``(None, outputs)`` where ``outputs`` has ``.logits`` and ``.loss``.
        ``locs`` is ``[num_interventions][batch][n]`` absolute positions (one entry is
        broadcast to every intervention). The parameters are pyvene's, in its order;
        ``sources``, ``source_representations``, ``subspaces``, ``output_original_output``
        and ``intervention_additional_kwargs`` must keep their defaults: ReFT interventions
        are sourceless and act on their whole subspace.
        """
        refuse_pyvene_only(None, source_representations, subspaces, output_original_output, intervention_additional_kwargs)  # fmt: skip
        kwargs.update({k: v for k, v in (("return_dict", return_dict), ("use_cache", use_cache)) if v is not None})
        if base is None:
            base = {k: kwargs.pop(k) for k in ("input_ids", "attention_mask") if k in kwargs}
        base = as_base(base)
        if sources is not None:  # pyvene's interchange call (reftlab.analysis.interchange)
            if positions is not None:
                raise ValueError("give either unit_locations (pyvene) or positions (reftlab), not both")
            from .analysis.interchange import pyvene_sources, refuse_sourceless

            refuse_sourceless(cast(ReftLike, self))  # the mixin is only ever a ReftModel, a ReftLike
            source, positions = pyvene_sources(sources, unit_locations, len(self.interventions))
            return None, self.run(**base, positions=positions, labels=labels, source=source, **kwargs)
        positions = self._positions(unit_locations, positions)
        return None, self.run(**base, positions=positions, labels=labels, **kwargs)

    def generate(
        self,
        base: Mapping[str, Tensor],
        sources: Any = None,
        unit_locations: Mapping[str, Any] | None = None,
        source_representations: Any = None,
        intervene_on_prompt: bool = True,
        subspaces: Any = None,
        output_original_output: bool | None = False,
        intervention_additional_kwargs: Mapping[str, Any] | None = None,
        *,
        positions: PositionsArg = None,
        **generate_kwargs: Any,
    ) -> tuple[None, Tensor]:
        """pyreft's generate: returns ``(None, output_ids)``; the prompt is ``base``.

        Interventions with positions act on prompt positions only: the prompt's forward
        pass is edited, and the generated tokens see the edit through the KV cache.
        Interventions with ``positions="all"`` act on every token, generated ones too.
        The parameters are pyvene's, in its order; the source-related ones must keep their
        defaults (as in ``forward``), and ``intervene_on_prompt`` must be True (pyreft's
        README passes True; pyvene's default is False).
        """
        refuse_pyvene_only(sources, source_representations, subspaces, output_original_output, intervention_additional_kwargs)  # fmt: skip
        if not intervene_on_prompt:
            raise ValueError(
                "reftlab intervenes on prompt positions (intervene_on_prompt=True); for an edit on every "
                "generated token use positions='all'"
            )
        positions = self._positions(unit_locations, positions)
        base = as_base(base)
        input_ids = base["input_ids"]
        mask = base.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(input_ids)
            base["attention_mask"] = mask
        check_inputs(self.hooked, input_ids, mask)
        bindings = self.bindings(positions, mask)
        with attach(self.hooked, bindings, min_length=input_ids.shape[1]):
            out = self.hooked.generate(**base, **generate_kwargs)
        return None, out

    def _positions(self, unit_locations: Mapping[str, Any] | None, positions: PositionsArg) -> PositionsArg:
        """pyreft's ``unit_locations`` as reftlab's positions, or ``positions`` as given (not both)."""
        if unit_locations is None:
            return positions
        if positions is not None:
            raise ValueError("give either unit_locations (pyreft) or positions (reftlab), not both")
        return unit_locations_to_positions(unit_locations, len(self.interventions))
