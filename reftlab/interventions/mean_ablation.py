"""Mean ablation: replace the representation by its mean over a dataset.

    phi(h) = mu,    mu = mean of h over a reference dataset (at the site and positions)

``mu`` is a buffer ``[d_model]`` (saved with the checkpoint); ``reftlab.analysis.site_mean``
computes it with ``dataset_mean`` (exact when every input is the same). Shapes: ``h`` ``[..., d_model]``. No trainable parameters, no source.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .base import register
from .sourced import Sourced


def mean_patch(h: Float[Tensor, "... d_model"], mean: Float[Tensor, " d_model"]) -> Float[Tensor, "... d_model"]:
    """mu at every vector of h.

    >>> import torch
    >>> mean_patch(torch.zeros(2, 2), torch.tensor([1.0, 2.0])).tolist()
    [[1.0, 2.0], [1.0, 2.0]]
    """
    return mean.expand_as(h).clone()


def dataset_mean(x: Float[Tensor, "n d_model"]) -> Float[Tensor, " d_model"]:
    """x_0 + mean(x - x_0) in float64, cast back: the shifted mean, exact for a constant input.

    >>> import torch
    >>> x = torch.full((7, 2), 0.1)
    >>> torch.equal(dataset_mean(x), x[0])
    True
    """
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"dataset_mean takes [n >= 1, d_model] vectors, got shape {tuple(x.shape)}")
    ref = x[0]
    return (ref.double() + (x.double() - ref.double()).mean(0)).to(x.dtype)


@register
class MeanAblation(Sourced):
    """``phi(h) = mu`` with ``mu`` given (or loaded; zeros until then).

    >>> import torch
    >>> iv = MeanAblation(d_model=2, mean=torch.tensor([1.0, -1.0]))
    >>> iv(torch.randn(3, 2)).tolist()
    [[1.0, -1.0], [1.0, -1.0], [1.0, -1.0]]
    """

    kind = "mean_ablation"
    needs_source = False
    mean: Tensor

    def __init__(
        self,
        *,
        d_model: int,
        mean: Float[Tensor, " d_model"] | None = None,
        rank: int | None = None,
        dropout: float = 0.0,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(d_model=d_model, rank=d_model if rank is None else rank, dropout=dropout, dtype=dtype)
        if self.rank != d_model:
            raise ValueError(f"mean_ablation replaces the whole space: rank={rank} must be d_model={d_model}")
        dt = self.requested_dtype or (mean.dtype if mean is not None else torch.float32)
        if mean is not None and tuple(mean.shape) != (d_model,):
            raise ValueError(f"mean has shape {tuple(mean.shape)}; expected [d_model={d_model}]")
        self.register_buffer("mean", torch.zeros(d_model, dtype=dt) if mean is None else mean.detach().to(dt).clone())

    def patch(self, h: Tensor, source: Tensor | None) -> Tensor:
        return mean_patch(h, self.mean)

    def spec(self) -> dict[str, Any]:
        return self._sourced_spec()
