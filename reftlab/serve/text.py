"""Incremental detokenization with stop strings, for streaming one request's text.

After each new token the whole continuation is decoded again (``skip_special_tokens``, as
``reftlab.generate`` decodes) and only text that can no longer change is released: a
trailing replacement character (a UTF-8 sequence still incomplete) and any suffix that
could be the start of a stop string are held back. When a stop string appears, the text
ends right before it. The released pieces, concatenated, equal the final text.

>>> from reftlab.models import tiny_tokenizer
>>> tok = tiny_tokenizer()
>>> s = TextStream(tok, stop=("lo w",))
>>> ids = tok("hello world")["input_ids"]
>>> [s.push(ids[: i + 1]) for i in range(len(ids)) if not s.done]
['h', 'e', '', 'l', '', '', '']
>>> s.reason, s.finalize(ids, complete=True), s.text
('stop', '', 'hel')
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any


class TextStream:
    """One request's text: ``push`` the ids so far and get the new, settled text."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = (), lock: Any = None) -> None:
        self.tokenizer, self.stop = tokenizer, tuple(stop)
        self.lock = lock or contextlib.nullcontext()  # shared with other threads using the tokenizer
        self.sent = ""  # released so far
        self.text = ""  # the final text, once finalized
        self.reason: str | None = None
        self.reported = False  # the engine sent the request's Finished event
        self._cut: str | None = None  # the text before a stop string, once one appeared

    @property
    def done(self) -> bool:
        return self.reason is not None

    def finish(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def push(self, ids: Sequence[int]) -> str:
        """The text released by the latest token (often one token's text, sometimes "")."""
        full = self._decode(ids)
        hits = [i for i in (full.find(s) for s in self.stop) if i >= 0]
        if hits:
            self._cut = full[: min(hits)]
            self.finish("stop")
            return self._release(self._cut)
        settled = full.rstrip("\ufffd")
        hold = max((k for s in self.stop for k in range(1, len(s)) if settled.endswith(s[:k])), default=0)
        return self._release(settled[: len(settled) - hold])

    def finalize(self, ids: Sequence[int], *, complete: bool) -> str:
        """End the text; returns what was still held back (nothing unless ``complete``)."""
        if not complete:
            self.text = self.sent
            return ""
        final = self._cut if self._cut is not None else self._decode(ids)
        tail = self._release(final)
        self.text = final
        return tail

    def _release(self, settled: str) -> str:
        if len(settled) <= len(self.sent) or not settled.startswith(self.sent):
            return ""
        new, self.sent = settled[len(self.sent) :], settled
        return new

    def _decode(self, ids: Sequence[int]) -> str:
        with self.lock:
            return self.tokenizer.decode(list(ids), skip_special_tokens=True)
