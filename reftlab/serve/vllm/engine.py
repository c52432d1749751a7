"""``VllmEngine``: the engine behind ``reftlab serve --engine vllm``, vLLM underneath.

It offers what ``reftlab.serve.app`` asks of an engine (``add``, ``cancel``, ``start``,
``stop``, the tokenizer, the served ReFT names, counters), so the endpoints, errors and chat
page are the ones of ``reftlab serve``. One thread drives vLLM's ``LLMEngine``: it hands new
requests over (prompt ids, ``extra_args={"reftlab": route}``), steps the
engine, and turns each request's new tokens into the same events as reftlab's own engine
(stop tokens and stop strings cut as ``reftlab.generate`` cuts; a cut request is aborted in vLLM).

The plugin (``plugin.py``) applies the ReFTs in vLLM's runner and salts each request's prefix
cache with its ReFTs (``plan.cache_salt``), as for ``vllm serve`` users.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..request import Request, accept, report
from ..scheduler import Stats
from ..text import TextStream
from .load import base_config, load_all
from .plan import ServedReft
from .plugin import KEY

log = logging.getLogger("reftlab.serve.vllm")


class VllmEngine:
    """Named ReFT checkpoints served on vLLM over the base at ``model`` (a folder or Hub id)."""

    def __init__(
        self,
        model: str | Path,
        refts: Mapping[str, str],
        positions: Mapping[str, Sequence[str]] | None = None,
        *,
        max_batch: int = 16,
        dtype: str = "float32",
        prefix_caching: bool = True,
        max_num_batched_tokens: int | None = None,
        max_model_len: int | None = None,
        kv_cache_bytes: int = 1 << 30,
        seed: int = 0,
    ) -> None:
        from transformers import AutoTokenizer

        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
        self.model, self.max_batch = str(model), max_batch
        self.served: dict[str, ServedReft] = load_all(dict(refts), base_config(model), positions)
        self.refts = dict(self.served)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model)
        self.tokenizer_lock = threading.Lock()
        self.stop_ids = _stop_ids(self.model, self.tokenizer)
        self.stats = Stats()
        grouped = any(r.grouped for r in self.served.values())
        self._args: dict[str, Any] = {
            "model": self.model,
            "dtype": dtype,
            # the plugin's hooks run eagerly (see plugin.py); the base alone keeps vLLM's defaults
            "enforce_eager": bool(refts),
            "enable_prefix_caching": prefix_caching,
            # an edit reading several positions at once needs the whole prompt in one forward
            "enable_chunked_prefill": not grouped,
            "max_num_seqs": max_batch,
            "seed": seed,
            "kv_cache_memory_bytes": kv_cache_bytes,
        }
        if refts:
            self._args["additional_config"] = {
                KEY: {"refts": {n: str(p) for n, p in refts.items()}, "positions": dict(positions or {})}
            }
        if max_model_len is not None:
            self._args["max_model_len"] = max_model_len
        if max_num_batched_tokens is not None:
            self._args["max_num_batched_tokens"] = max_num_batched_tokens
        elif grouped:
            self._args["max_num_batched_tokens"] = max_model_len or _context(self.model)
        self._engine: Any = None
        self.context_length: int | None = max_model_len
        self._incoming: deque[Request] = deque()
        self._live: dict[str, Request] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- any thread ------------------------------------------------------------------
    def add(self, request: Request) -> None:
        unknown = [r for r in request.route if r not in self.served]
        if unknown:
            raise ValueError(f"unknown ReFT {unknown[0]!r}; served: {list(self.served)}")
        with self._cond:
            self._incoming.append(request)
            self._cond.notify()

    def cancel(self, request: Request) -> None:
        with self._cond:
            request.cancelled = True
            self._cond.notify()

    def start(self) -> VllmEngine:
        if self._engine is None:
            self._engine = self._build()
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="reftlab-vllm-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # --- the engine thread -------------------------------------------------------------
    def _build(self) -> Any:
        from vllm import EngineArgs
        from vllm.v1.engine.llm_engine import LLMEngine

        engine = LLMEngine.from_engine_args(EngineArgs(**self._args))
        self.context_length = int(engine.vllm_config.model_config.max_model_len)
        return engine

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._incoming or self._live):
                    self._cond.wait()
                if self._stopping:
                    break
                new = list(self._incoming)
                self._incoming.clear()
            try:
                self._iterate(new)
            except Exception as e:  # fail what is in flight, keep serving
                log.exception("vLLM step failed")
                for req in [*new, *self._live.values()]:
                    self._finish(req, "error", f"{type(e).__name__}: {e}")
                self._live.clear()
        for req in [*self._incoming, *self._live.values()]:
            self._finish(req, "cancelled", "the server is shutting down")

    def _iterate(self, new: list[Request]) -> None:
        for req in new:
            if req.cancelled:
                self._finish(req, "cancelled")
            else:
                self._submit(req)
        for rid, req in list(self._live.items()):
            if req.cancelled:
                self._engine.abort_request([rid])
                del self._live[rid]
                self._finish(req, "cancelled")
        if not self._live:
            return
        self.stats.running = len(self._live)
        for out in self._engine.step():
            live = self._live.get(out.request_id)
            if live is not None:
                self._receive(live, out)

    def _submit(self, req: Request) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        s = req.sampling
        params = SamplingParams(
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            seed=s.seed,
            stop_token_ids=list(self.stop_ids),
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
            extra_args={KEY: list(req.route)} if req.route else None,
        )
        prompt = {"prompt_token_ids": list(req.prompt_ids)}  # the plugin salts its prefix cache
        req.stream = TextStream(self.tokenizer, s.stop, self.tokenizer_lock)
        self._engine.add_request(req.id, prompt, params)
        self._live[req.id] = req

    def _receive(self, req: Request, out: Any) -> None:
        stream = req.stream
        assert stream is not None
        for tok in out.outputs[0].token_ids:
            if stream.done:
                break
            accept(req, tok, self.stop_ids, self.stats)
        if not stream.done and out.finished:
            stream.finish("length" if out.outputs[0].finish_reason == "length" else "stop")
        if stream.done:
            if not out.finished:
                self._engine.abort_request([req.id])  # a stop string cut it: free its blocks
            self._live.pop(req.id, None)
            self._finish(req, stream.reason or "stop")

    def _finish(self, req: Request, reason: str, message: str = "") -> None:
        report(req, reason, message, tokenizer=self.tokenizer, lock=self.tokenizer_lock, stats=self.stats)


def _stop_ids(model: str, tok: Any) -> list[int]:
    """As ``reftlab.serve.runner.stop_ids``: the pad token, the generation config's eos, the tokenizer's eos."""
    from transformers import GenerationConfig

    from ..runner import stop_ids_of

    try:
        cfg: Any = GenerationConfig.from_pretrained(model)
    except OSError:  # no generation_config.json
        cfg = None
    return stop_ids_of(getattr(cfg, "eos_token_id", None), tok)


def _context(model: str) -> int:
    cfg = base_config(model)
    text = getattr(cfg, "get_text_config", lambda: cfg)()
    return int(getattr(text, "max_position_embeddings", 2048))
