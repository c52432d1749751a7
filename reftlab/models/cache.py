"""Where a model call carries its KV cache: ``cache=`` or ``past_key_values=``.

transformers renamed the forward's ``past_key_values`` argument to ``cache``; which one the
installed version takes is read from the signature (``cache_keyword``), and a call's cache is
read from its keyword arguments under either name (``passed_cache``). This is the one place
that knows both names: the serving engine, the fast training path and ``reftlab.attach``
ask here.

>>> def forward(input_ids, past_key_values=None, use_cache=None): ...
>>> cache_keyword(forward), passed_cache({"past_key_values": "kv", "cache": None})
('past_key_values', 'kv')
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

CACHE_KEYWORDS = ("cache", "past_key_values")  # the new name first


def cache_keyword(forward: Callable[..., Any]) -> str:
    """The keyword under which ``forward`` takes a KV cache in the installed transformers."""
    params = inspect.signature(forward).parameters
    return next((k for k in CACHE_KEYWORDS if k in params), CACHE_KEYWORDS[-1])


def passed_cache(kwargs: Mapping[str, Any]) -> Any:
    """The KV cache a model call was given (under either name), or None."""
    return next((kwargs[k] for k in CACHE_KEYWORDS if kwargs.get(k) is not None), None)
