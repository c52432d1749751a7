"""The base of the causal kinds: interventions that read a *source* as well as the base.

    phi(h, s) = patch(h, s)                  dropout p = 0 (the default, as in pyvene)
              = h + dropout(patch(h, s) - h) otherwise (dropout on the change only)

``h`` is the base representation and ``s`` the source's at the matching position (same
shape ``[..., d_model]``); a kind's pure function computes ``patch``. Sourceless ablations
(zero, mean, resample) subclass this too and ignore ``s``: ``needs_source = False``.

A sourced kind never sees positions. The caller pairs base and source vectors (the source
run gathers them at the source positions, in the order the base positions are gathered)
and binds them with ``bind``, which returns an ``Edit`` for ``reftlab.attach``:

>>> import torch
>>> from reftlab.interventions import VanillaIntervention
>>> iv = VanillaIntervention(embed_dim=4)
>>> h, s = torch.zeros(3, 4), torch.ones(3, 4)
>>> torch.equal(iv.bind(s)(h), s)
True
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from .base import Intervention


class Sourced(Intervention):
    """Abstract: ``forward(h, source)`` returns the patched representation (see the module docstring).

    ``derives_rank``: a kind that acts on the whole space has ``rank = d_model`` unless told.
    """

    needs_source: ClassVar[bool] = True
    derives_rank: ClassVar[bool] = True

    @abc.abstractmethod
    def patch(
        self, h: Float[Tensor, "... d_model"], source: Float[Tensor, "... d_model"] | None
    ) -> Float[Tensor, "... d_model"]:
        """The patched representation (the kind's pure function, called with its parameters)."""

    def edit(
        self, h: Float[Tensor, "... d_model"], source: Float[Tensor, "... d_model"] | None = None
    ) -> Float[Tensor, "... d_model"]:
        """patch(h, s) - h: the change, as the ReFT kinds' ``edit`` reports theirs."""
        return self.patch(h, self._check_source(h, source)) - h

    def forward(
        self, h: Float[Tensor, "... d_model"], source: Float[Tensor, "... d_model"] | None = None
    ) -> Float[Tensor, "... d_model"]:
        if h.shape[-1] != self.d_model:
            raise ValueError(
                f"{self.kind} expects representations of width d_model={self.d_model}, got shape {tuple(h.shape)}"
            )
        source = self._check_source(h, source)
        dt = self._own_dtype() or h.dtype  # a kind without tensors (vanilla, zero) works in h's dtype
        s = None if source is None else source.to(dt)
        out = self.patch(h.to(dt), s).to(h.dtype)
        if self.dropout.p == 0.0 or not self.training:
            return out
        return h + self.drop(out - h)

    def _check_source(self, h: Tensor, source: Tensor | None) -> Tensor | None:
        if not self.needs_source:
            return None
        if source is None:
            raise ValueError(
                f"{self.kind} patches from a source: call reft_model(base, sources=[source], unit_locations="
                "{'sources->base': (source_positions, base_positions)}) or reft_model.run(..., source=SourceBatch(...))"
            )
        if source.shape != h.shape:
            raise ValueError(
                f"{self.kind}: the source vectors have shape {tuple(source.shape)} but the base's {tuple(h.shape)}; "
                "give as many source positions as base positions, per example"
            )
        return source

    def _own_dtype(self) -> torch.dtype | None:
        first = next(self.parameters(), None)
        if first is not None:
            return first.dtype
        buf = next(self.buffers(), None)
        return buf.dtype if buf is not None else None

    @property
    def param_dtype(self) -> torch.dtype:
        """The dtype of its parameters or buffers (the requested one, or float32, for a kind with none)."""
        return self._own_dtype() or self.requested_dtype or torch.float32

    def bind(self, source: Float[Tensor, "... d_model"] | None) -> "WithSource":
        """This intervention with its source vectors fixed: an ``Edit`` for one forward pass."""
        if self.needs_source and source is None:
            raise ValueError(f"{self.kind} patches from a source; bind it to the source's vectors, not None")
        return WithSource(self, source)

    def subspace(self) -> Float[Tensor, "rank d_model"]:
        """The whole space (identity rows) unless the kind patches a subspace."""
        return torch.eye(self.d_model, dtype=self.param_dtype)

    def _sourced_spec(self, **extra: Any) -> dict[str, Any]:
        spec = self._base_spec()
        spec.update(extra)
        return spec


class WithSource:
    """A sourced intervention bound to its source vectors: ``h -> phi(h, source)`` (an ``Edit``).

    ``source`` has the shape of the ``h`` the hook gathers: ``[n, d_model]`` for positions,
    ``[batch, pos, d_model]`` for every position. It is moved to ``h``'s device and dtype.
    """

    arity = 1

    def __init__(self, intervention: Sourced, source: Tensor | None) -> None:
        self.intervention = intervention
        self.source = source

    @property
    def kind(self) -> str:
        return self.intervention.kind

    def __call__(self, h: Tensor) -> Tensor:
        iv = self.intervention
        first = next(iv.parameters(), None)
        device = first.device if first is not None else h.device
        s = None if self.source is None else self.source.to(device=device)
        out: Tensor = iv(h.to(device), s)  # nn.Module.__call__ is typed as returning Any
        return out.to(device=h.device, dtype=h.dtype)
