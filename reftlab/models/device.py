"""One check for a device a user names: a clear error instead of torch's assertion."""

from __future__ import annotations

import torch


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine, else a ValueError saying what does.

    >>> check_device("cpu")
    device(type='cpu')
    >>> check_device("gpu")
    Traceback (most recent call last):
    ValueError: device='gpu' is not a device name; use 'cpu', 'cuda', 'cuda:0' or 'mps'
    """
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a device name; use 'cpu', 'cuda', 'cuda:0' or 'mps'") from None
    if d.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device={device!r}: this machine (or this torch build) has no CUDA device; use 'cpu'")
        if d.index is not None and d.index >= n:
            raise ValueError(f"device={device!r}: this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}")
    if d.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r}: MPS is not available on this machine; use 'cpu'")
    return d
