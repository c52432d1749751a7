"""KV-cache surgery for continuous batching: rows join and leave transformers' ``DynamicCache``.

Each layer of the running cache holds keys and values ``[rows, kv_heads, pos, head_dim]`` with
every row *right-aligned*: its prompt was left-padded, so its own tokens end at the last column
and the columns before its first token are masked padding. Hence

- joining (``join_rows``) is a left-pad of the narrower cache to the wider one's width plus a
  concatenation along the rows, with nothing recomputed;
- leaving (``keep_rows``) selects the rows that stay and drops the left columns none of them uses.

Only full-attention caches (``DynamicLayer``: plain per-layer K/V tensors) have that layout;
``new_cache`` refuses the others (sliding-window layers, ...) by name.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..models.hooked import HookedModel


def new_cache(model: HookedModel) -> Any:
    """An empty ``DynamicCache`` for ``model``; a ``ValueError`` if its layers are not plain K/V tensors."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.hf_model.config)
    odd = {type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer}
    if odd:
        raise ValueError(
            f"serving needs a full-attention KV cache; this {model.cfg['model_type']} model uses {sorted(odd)} "
            "(sliding-window or other cache layers are not supported yet)"
        )
    return cache


def width(cache: Any) -> int:
    """Columns in the cache (0 for None): the longest row's tokens."""
    return 0 if cache is None else int(cache.get_seq_length())


def join_rows(cache: Any, new: Any) -> None:
    """Append ``new``'s rows to ``cache`` (in place), both right-aligned to the wider width.

    Built in full before anything changes: a failure leaves ``cache`` intact.
    """
    w = max(width(cache), width(new))
    merged = [  # [rows, kv_heads, pos, head_dim]: right-align both, stack the rows
        (
            torch.cat([left_pad(o.keys, w), left_pad(n.keys, w)]),
            torch.cat([left_pad(o.values, w), left_pad(n.values, w)]),
        )
        for o, n in zip(cache.layers, new.layers)
    ]
    for layer, (keys, values) in zip(cache.layers, merged):
        layer.keys, layer.values = keys, values


def keep_rows(cache: Any, rows: list[int], columns: int) -> None:
    """Keep only ``rows`` of ``cache`` (in place), and only their last ``columns`` positions."""
    idx = torch.tensor(rows)
    trim = width(cache) - columns
    for layer in cache.layers:
        layer.keys = layer.keys[idx.to(layer.keys.device), :, trim:]
        layer.values = layer.values[idx.to(layer.values.device), :, trim:]


def left_pad(x: Float[Tensor, "rows heads pos dim"], width: int) -> Float[Tensor, "rows heads _ dim"]:
    """``[rows, heads, pos, dim]`` -> ``[rows, heads, width, dim]`` with zeros on the left.

    >>> left_pad(torch.ones(1, 1, 2, 1), 3)[0, 0, :, 0]
    tensor([0., 1., 1.])
    """
    extra = width - x.shape[2]
    if extra == 0:
        return x
    return torch.cat([x.new_zeros(x.shape[0], x.shape[1], extra, x.shape[3]), x], dim=2)
