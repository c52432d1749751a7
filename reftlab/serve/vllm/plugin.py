"""reftlab's vLLM plugin: per-request ReFTs inside vLLM's own model runner, no fork, no patched file.

vLLM calls ``register`` in every process it starts (the ``vllm.general_plugins`` entry point in
reftlab's pyproject.toml). It wraps the model runner's ``_model_forward`` (the method vLLM keeps
for subclasses to wrap); nothing happens unless the engine was started with

    additional_config={"reftlab": {"refts": {NAME: CHECKPOINT, ...}, "positions": {NAME: [SPEC, ...]}}}

(``vllm serve ... --enforce-eager --additional-config '{"reftlab": ...}'`` on the command line).
The front end then refuses requests naming unknown ReFTs and salts each request's prefix cache
with its ReFTs (``plan.cache_salt``). At the
first forward, each worker loads the checkpoints (``reftlab.serve.vllm.load``). Before every
forward it reads the step's packed layout from the runner (each scheduled request's rows, tokens
already cached, prompt length, and the ReFTs its ``SamplingParams.extra_args["reftlab"]`` names,
in order), ``reftlab.serve.vllm.plan`` turns it into per-layer ops, and ``_Steering.step`` (a
context manager, like ``reftlab.attach``) hooks the layers that have ops for this forward only,
removing the hooks in ``finally`` (warm-up and profiling runs see the base).

vLLM's decoder layers return ``(hidden, residual)`` whose sum is the residual stream; a hook
returns ``(edited sum, 0)``: the next layer's fused add then reads exactly the edited stream.
Eager mode only (``enforce_eager``): a compiled or CUDA-graph-captured forward would not call
Python hooks with each step's rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from .load import load_all
from .plan import Op, Resolved, Segment, ServedReft, apply, cache_salt, plan, resolve

log = logging.getLogger("reftlab.serve.vllm")
KEY = "reftlab"  # additional_config's key and SamplingParams.extra_args' key


def register() -> None:
    """The ``vllm.general_plugins`` entry point (once per process): wrap the model runner's forward
    and the front end's request intake."""
    from vllm.v1.engine.input_processor import InputProcessor
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner  # the CPU runner inherits it

    if getattr(GPUModelRunner, "_reftlab_wrapped", False):
        return
    _wrap_intake(InputProcessor)
    runners = [GPUModelRunner]
    try:  # the CPU runner loads its model its own way
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner

        runners.append(CPUModelRunner)
    except ImportError:
        pass
    for cls in runners:
        _wrap_load(cls)
    original = GPUModelRunner._model_forward

    def _model_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        state = _state(self)
        if state is None:
            return original(self, *args, **kwargs)
        with state.step(self):
            return original(self, *args, **kwargs)

    GPUModelRunner._model_forward = _model_forward
    GPUModelRunner._reftlab_wrapped = True


def _wrap_load(cls: Any) -> None:
    """After the model loads, load the ReFTs and check them and the mode: a bad checkpoint or a
    compiled forward stops vLLM at startup, not at the first request."""
    original = cls.__dict__.get("load_model")
    if original is None:
        return

    def load_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        _state(self)
        return out

    cls.load_model = load_model


def _wrap_intake(processor_class: Any) -> None:
    """Each request entering vLLM: unknown ReFT names are refused (a 400 over HTTP), and its
    ``cache_salt`` gets the digest of its ReFTs (``plan.cache_salt``) so KV blocks computed under
    other edits are never reused; a salt the client gave is kept in front of it."""
    from vllm.exceptions import VLLMValidationError  # vLLM answers it with a 400

    original = processor_class.process_inputs

    def process_inputs(self: Any, request_id: str, prompt: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        refts = _served(self)
        route = route_of(params)
        if route and refts is not None:
            unknown = [r for r in route if r not in refts]
            if unknown:
                raise VLLMValidationError(
                    f"unknown ReFT {unknown[0]!r} in vllm_xargs[{KEY!r}]; served: {', '.join(refts)}", parameter=KEY
                )
        elif route:
            raise VLLMValidationError(
                f"this server serves no ReFTs; start it with --additional-config '{{\"{KEY}\": ...}}'", parameter=KEY
            )
        request = original(self, request_id, prompt, params, *args, **kwargs)
        if route and refts is not None:
            salt = cache_salt([refts[n] for n in route], len(request.prompt_token_ids or ()))
            request.cache_salt = salt if request.cache_salt is None else f"{request.cache_salt}|{salt}"
        return request

    processor_class.process_inputs = process_inputs


def _served(processor: Any) -> dict[str, ServedReft] | None:
    """The ReFTs the front end checks requests against (loaded once, on the CPU; None: none configured)."""
    if "_reftlab_refts" not in processor.__dict__:
        cfg = (getattr(processor.vllm_config, "additional_config", None) or {}).get(KEY)
        processor.__dict__["_reftlab_refts"] = (
            load_all(cfg["refts"], processor.vllm_config.model_config.hf_config, cfg.get("positions"))
            if isinstance(cfg, dict) and isinstance(cfg.get("refts"), dict)
            else None
        )
    served: dict[str, ServedReft] | None = processor.__dict__["_reftlab_refts"]
    return served


def route_of(sampling_params: Any) -> tuple[str, ...]:
    """The ReFT names a request asks for, in order (``extra_args["reftlab"]``: a name or a list)."""
    extra = getattr(sampling_params, "extra_args", None) or {}
    names = extra.get(KEY) or ()
    return (names,) if isinstance(names, str) else tuple(names)


def _state(runner: Any) -> _Steering | None:
    state = runner.__dict__.get("_reftlab_state")
    if state is None:
        cfg = (getattr(runner.vllm_config, "additional_config", None) or {}).get(KEY)
        state = _Steering.build(runner, cfg) if cfg else False
        runner.__dict__["_reftlab_state"] = state
    return state or None


class _Steering:
    """One worker's served ReFTs, its layer hooks, and the ops of the forward in flight."""

    def __init__(self, refts: dict[str, ServedReft], layers: list[nn.Module], device: torch.device) -> None:
        self.refts, self.layers, self.device = refts, layers, device
        self.resolved: dict[str, tuple[tuple[str, ...], int, Resolved]] = {}
        for layer in sorted({s.layer for r in refts.values() for s in r.sites}):
            if not 0 <= layer < len(layers):
                raise ValueError(f"a ReFT edits layer {layer}, but the served model has {len(layers)} layers")

    @classmethod
    def build(cls, runner: Any, cfg: Any) -> _Steering:
        if not isinstance(cfg, dict) or not isinstance(cfg.get("refts"), dict):
            raise ValueError(
                f"additional_config[{KEY!r}] must be {{'refts': {{NAME: CHECKPOINT}}, 'positions': {{NAME: [SPEC]}}}}"
            )
        mode = getattr(runner.vllm_config.compilation_config, "mode", None)
        if mode is not None and int(mode) != 0:
            raise ValueError("reftlab's vLLM plugin runs its hooks eagerly: start vLLM with --enforce-eager")
        model = runner.model
        dtype = next(model.parameters()).dtype
        refts = load_all(
            cfg["refts"], runner.model_config.hf_config, cfg.get("positions"), dtype=dtype, device=runner.device
        )
        log.info("reftlab: serving ReFTs %s", ", ".join(refts))
        return cls(refts, _decoder_layers(model), runner.device)

    @contextmanager
    def step(self, runner: Any) -> Iterator[None]:
        """Hooks on the layers this forward edits, removed in ``finally`` (also after an exception)."""
        ops = self._plan(runner)
        handles = [
            self.layers[layer].register_forward_hook(partial(_edit, ops=layer_ops)) for layer, layer_ops in ops.items()
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _plan(self, runner: Any) -> dict[int, list[Op]]:
        """This step's ops per layer, from the runner's packed layout (see the module docstring)."""
        batch = runner.input_batch
        starts, computed = runner.query_start_loc.np, batch.num_computed_tokens_cpu
        segments, resolved, seen = [], [], {}
        for i, rid in enumerate(batch.req_ids[: batch.num_reqs]):
            req = runner.requests[rid]
            route = route_of(req.sampling_params)
            if not route:
                continue
            prompt_len = len(req.prompt_token_ids)
            known = self.resolved.get(rid)
            if known is None or known[:2] != (route, prompt_len):
                unknown = [r for r in route if r not in self.refts]
                if unknown:
                    raise ValueError(f"unknown ReFT {unknown[0]!r}; served: {list(self.refts)}")
                known = (route, prompt_len, resolve(route, prompt_len, self.refts))
            seen[rid] = known
            start = int(starts[i])
            segments.append(Segment(route, prompt_len, int(computed[i]), int(starts[i + 1]) - start, start))
            resolved.append(known[2])
        self.resolved = seen  # forget requests that left
        return plan(segments, resolved, self.device) if segments else {}


def _edit(module: nn.Module, args: Any, output: Any, *, ops: list[Op]) -> Any:
    """A decoder layer's forward hook: ``(hidden, residual)`` -> ``(edited hidden + residual, 0)``."""
    if not (isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], Tensor)):
        raise TypeError(
            "reftlab's vLLM plugin expects decoder layers returning (hidden, residual); "
            f"{type(module).__name__} returned {type(output).__name__}"
        )
    hidden, residual = output
    stream = apply(hidden + residual, ops)  # [tokens, d_model]: the residual stream, edited
    return stream, torch.zeros_like(residual)


def _decoder_layers(model: nn.Module) -> list[nn.Module]:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"reftlab's vLLM plugin finds decoder layers at model.model.layers; {type(model).__name__} has none there"
        )
    return list(layers)
