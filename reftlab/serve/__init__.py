"""Serving ReFTs: continuous batching over one base model behind an OpenAI-compatible API.

``Engine`` (``reftlab.serve.engine``) batches requests for different ReFTs into shared
forwards (its ``scheduler``, ``runner`` and ``kv`` cache surgery are modules of their own);
``create_app`` (``reftlab.serve.app``) puts it behind HTTP; ``reftlab serve`` is
the command line. ``docs/serving.md`` is the guide.
"""

from .engine import Engine
from .request import Delta, Event, Finished, Request, Sampling
from .scheduler import Stats
from .text import TextStream

__all__ = ["Delta", "Engine", "Event", "Finished", "Request", "Sampling", "Stats", "TextStream"]
