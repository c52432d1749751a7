"""Concatenated-position LoReFT: one LoReFT on the concatenation of k positions.

    x = [h_1; ...; h_k]                       in R^{k d}   (k = arity)
    e = R^T (act(W x + b) - R x)              in R^{k d},  split e = [e_1; ...; e_k]
    phi(h_j) = h_j + dropout(e_j)             for every j if write == "all",
    phi(h_j) = h_j + dropout(e_j) if j == write else h_j

R in R^{r x kd} has orthonormal rows, W in R^{r x kd}, b in R^r. It reads all k
positions jointly (e.g. the last two prompt tokens with positions "l2") and writes to
all of them or to one. Parameters: 2 k d r + r (d=576, k=2, r=4: 9,220).

The attach layer hands it groups ``[..., k, d_model]`` (see ``reftlab.attach``): a
binding's positions ``[batch, n]`` are grouped ``[batch, n/k, k]`` in order.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from .base import Intervention, register
from .loreft import LoReFT, loreft_edit


def concat_loreft_edit(
    h: Float[Tensor, "... k d_model"],
    R: Float[Tensor, "rank kd"],
    W: Float[Tensor, "rank kd"],
    b: Float[Tensor, " rank"],
    act: str = "linear",
    write: int | None = None,
) -> Float[Tensor, "... k d_model"]:
    """LoReFT's edit on the flattened ``[..., k * d_model]`` vector, split back per position.

    ``write=None`` keeps every position's share of the edit; ``write=j`` zeroes all but j's.

    >>> h = torch.randn(5, 2, 3); R = torch.eye(2, 6)
    >>> torch.equal(concat_loreft_edit(h, R, R, torch.zeros(2)), torch.zeros(5, 2, 3))
    True
    """
    x = h.flatten(-2)  # [..., k * d_model]
    e = loreft_edit(x, R, W, b, act).unflatten(-1, h.shape[-2:])  # [..., k, d_model]
    if write is None:
        return e
    keep = torch.zeros(h.shape[-2], 1, dtype=e.dtype, device=e.device)
    keep[write] = 1
    return e * keep


@register
class ConcatLoReFT(Intervention):
    """LoReFT over k concatenated positions (``arity = k``); writes to all of them or to ``write``.

    >>> iv = ConcatLoReFT(d_model=8, rank=2, arity=2, write=1, init="identity")
    >>> h = torch.randn(3, 2, 8)                 # 3 groups of (second-to-last, last) token
    >>> torch.equal(iv(h), h), iv.num_parameters() == 2 * 2 * 8 * 2 + 2
    (True, True)
    """

    kind = "concat_loreft"

    def __init__(
        self,
        *,
        d_model: int,
        rank: int,
        arity: int = 2,
        write: int | Literal["all"] = "all",
        dropout: float = 0.0,
        act: str | None = None,
        init: Literal["random", "identity"] = "random",
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(d_model=d_model, rank=rank, dropout=dropout, dtype=dtype)
        if not isinstance(arity, int) or arity < 2:
            raise ValueError(f"arity={arity!r} must be an int >= 2 (the number of concatenated positions)")
        if write != "all" and not (isinstance(write, int) and -arity <= write < arity):
            raise ValueError(f"write={write!r} must be 'all' or a slot index in [0, arity={arity})")
        self.arity = arity
        self.write = write if write == "all" else write % arity
        # The flat LoReFT on R^{k d} owns R (via its free `rotation`), W and b.
        self.flat = LoReFT(d_model=arity * d_model, rank=rank, act=act, init=init, dtype=dtype)

    @property
    def R(self) -> Float[Tensor, "rank kd"]:
        return self.flat.R

    def edit(self, h: Float[Tensor, "... k d_model"]) -> Float[Tensor, "... k d_model"]:
        if h.ndim < 2 or h.shape[-2] != self.arity:
            raise ValueError(
                f"concat_loreft expects groups of shape [..., {self.arity}, {self.d_model}], got {tuple(h.shape)}"
            )
        f = self.flat
        return concat_loreft_edit(h, f.R, f.weight, f.bias, f.act, None if self.write == "all" else self.write)

    def subspace(self) -> Float[Tensor, "rows d_model"]:
        """Rows spanning the edit at every written position: R's block for slot ``write``
        (r x d), or all k blocks stacked (k r x d) when ``write="all"``."""
        blocks = self.R.unflatten(1, (self.arity, self.d_model))  # [rank, k, d_model]
        if self.write != "all":
            return blocks[:, self.write]
        return blocks.transpose(0, 1).reshape(-1, self.d_model)

    def spec(self) -> dict[str, Any]:
        return {
            **self._base_spec(),
            "arity": self.arity,
            "write": self.write,
            "act": self.flat.act,
            "init": self.flat.init,
        }
