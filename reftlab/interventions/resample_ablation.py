"""Resample ablation: replace the representation by the one another input had there.

    phi(h)_j = bank[i_j],    i_j uniform in 0 .. n-1, drawn per vector (seeded)

``bank`` is a buffer ``[n_samples, d_model]`` of representations collected at the site on
a reference dataset (``reftlab.analysis.site_activations``), saved with the checkpoint.
Shapes: ``h`` ``[..., d_model]``. No trainable parameters, no source at call time.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .base import register
from .sourced import Sourced


def resample_patch(
    h: Float[Tensor, "... d_model"], bank: Float[Tensor, "n d_model"], index: Int[Tensor, "..."]
) -> Float[Tensor, "... d_model"]:
    """bank[index]: one stored representation per vector of h.

    >>> import torch
    >>> resample_patch(torch.zeros(2, 1), torch.tensor([[5.0], [7.0]]), torch.tensor([1, 0])).tolist()
    [[7.0], [5.0]]
    """
    if index.shape != h.shape[:-1]:
        raise ValueError(f"index has shape {tuple(index.shape)}; expected h's leading shape {tuple(h.shape[:-1])}")
    return bank[index]


@register
class ResampleAblation(Sourced):
    """``phi(h) = bank[i]`` with i drawn uniformly per vector from a seeded generator.

    >>> import torch
    >>> iv = ResampleAblation(d_model=1, bank=torch.tensor([[3.0], [3.0]]))
    >>> iv(torch.zeros(4, 1)).flatten().tolist()
    [3.0, 3.0, 3.0, 3.0]
    """

    kind = "resample_ablation"
    needs_source = False
    bank: Tensor

    def __init__(
        self,
        *,
        d_model: int,
        bank: Float[Tensor, "n d_model"] | None = None,
        n_samples: int | None = None,
        seed: int = 0,
        rank: int | None = None,
        dropout: float = 0.0,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(d_model=d_model, rank=d_model if rank is None else rank, dropout=dropout, dtype=dtype)
        if self.rank != d_model:
            raise ValueError(f"resample_ablation replaces the whole space: rank={rank} must be d_model={d_model}")
        if bank is None and n_samples is None:
            raise ValueError("resample_ablation needs bank= (an [n, d_model] tensor) or n_samples= (filled on load)")
        if bank is not None and (bank.ndim != 2 or bank.shape[1] != d_model or len(bank) == 0):
            raise ValueError(f"bank has shape {tuple(bank.shape)}; expected [n >= 1, d_model={d_model}]")
        if bank is not None and n_samples is not None and n_samples != len(bank):
            raise ValueError(f"n_samples={n_samples} but bank has {len(bank)} rows")
        n = len(bank) if bank is not None else int(n_samples or 0)
        dt = self.requested_dtype or (bank.dtype if bank is not None else torch.float32)
        stored = torch.zeros(n, d_model, dtype=dt) if bank is None else bank.detach().to(dt).clone()
        self.register_buffer("bank", stored)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def patch(self, h: Tensor, source: Tensor | None) -> Tensor:
        index = torch.randint(len(self.bank), h.shape[:-1], generator=self.generator).to(self.bank.device)
        return resample_patch(h, self.bank, index)

    def spec(self) -> dict[str, Any]:
        return self._sourced_spec(n_samples=len(self.bank), seed=self.seed)
