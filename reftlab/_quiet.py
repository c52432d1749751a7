"""Drop two harmless start-up messages that torchao (the CPU quantization backend) prints.

transformers imports torchao whenever it is installed, and torchao then logs, on every
start: "Failed to load .../torchao/_C_*.so" for its CUDA kernels when torch has no CUDA (it
falls back to PyTorch ops), and, through torch's pytree logger, that registering its Enums
is deprecated. Neither says anything about the user's run, and they would open every
``reftlab`` command. Only those exact messages are filtered; imported first by ``reftlab``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable


class _DropMessages(logging.Filter):
    def __init__(self, test: Callable[[str], bool]) -> None:
        super().__init__()
        self._test = test

    def filter(self, record: logging.LogRecord) -> bool:
        return not self._test(record.getMessage())


def _torchao_kernels(message: str) -> bool:
    return message.startswith("Failed to load ") and "/torchao/_C" in message


def _enum_registration(message: str) -> bool:
    return "is an Enum subclass and is now natively supported by torch.compile" in message


logging.getLogger("torchao").addFilter(_DropMessages(_torchao_kernels))
logging.getLogger("torch.utils._pytree").addFilter(_DropMessages(_enum_registration))
