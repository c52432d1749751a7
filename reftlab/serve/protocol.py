"""OpenAI's request and response shapes, checked field by field with errors that name the fix.

``parse_request(kind, body, models)`` turns the JSON body of ``/v1/chat/completions``
(``kind="chat"``) or ``/v1/completions`` (``kind="completion"``) into a ``Parsed`` request,
or raises ``ApiError`` (status code, OpenAI-style ``{"error": {...}}`` body). Fields with a
value this server cannot honour (``n=2``, ``logprobs``, tools, penalties) are refused by
name rather than ignored; unknown fields are refused as OpenAI does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Parsed:
    """A checked request: ``route`` holds the ReFT names to apply, in the order they act (empty = base)."""

    model: str
    route: tuple[str, ...]
    messages: tuple[dict[str, str], ...] | None
    prompt: str | None
    max_tokens: int | None
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool


_COMMON = {"model", "max_tokens", "temperature", "top_p", "stop", "seed", "stream", "stream_options", "reft", "user"}
_CHAT = {"messages", "max_completion_tokens", "logprobs", "top_logprobs", "n", "presence_penalty"}
_CHAT |= {"frequency_penalty", "logit_bias", "tools", "tool_choice", "functions", "function_call", "response_format"}
_CHAT |= {"parallel_tool_calls", "metadata", "store", "service_tier"}
_COMPLETION = {"prompt", "logprobs", "n", "best_of", "echo", "suffix", "presence_penalty", "frequency_penalty"}
_COMPLETION |= {"logit_bias"}
# field -> the values accepted (the defaults): anything else is refused by name
_ONLY_DEFAULT: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "best_of": (1,),
    "echo": (False,),
    "suffix": ("",),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logit_bias": ({},),
    "tools": ([],),
    "tool_choice": ("none",),
    "functions": ([],),
    "function_call": ("none",),
    "response_format": ({"type": "text"},),
    "parallel_tool_calls": (False, True),
}
_ROLES = ("system", "developer", "user", "assistant")


def parse_request(kind: str, body: Any, models: Mapping[str, Sequence[str]]) -> Parsed:
    """Check ``body``; ``models`` maps each served model id to the ReFT names it applies."""
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    allowed = _COMMON | (_CHAT if kind == "chat" else _COMPLETION)
    for key in body:
        if key not in allowed:
            raise ApiError(400, f"Unrecognized request argument supplied: {key}", param=key)
    for key, ok in _ONLY_DEFAULT.items():
        value = body.get(key)
        if value is not None and not any(value == v and type(value) is type(v) for v in ok):
            raise ApiError(
                400, f"{key}={value!r} is not supported by this server; leave it out", param=key, code="unsupported"
            )
    model = _required(body, "model", str)
    if model not in models:
        raise ApiError(
            404,
            f"The model {model!r} does not exist on this server; served models: {', '.join(models)}",
            param="model",
            code="model_not_found",
        )
    route = _route(body.get("reft"), model, models)
    messages, prompt = None, None
    if kind == "chat":
        messages = _messages(body)
    else:
        prompt = _prompt(body)
    max_tokens = _max_tokens(body, kind)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0.0:
        raise ApiError(400, "top_p=0 keeps no token; give a value in (0, 1]", param="top_p")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ApiError(400, f"seed must be an integer, got {seed!r}", param="seed")
    stream = body.get("stream", False) or False
    if not isinstance(stream, bool):
        raise ApiError(400, f"stream must be true or false, got {stream!r}", param="stream")
    return Parsed(
        model=model,
        route=route,
        messages=messages,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=_stop(body.get("stop")),
        seed=seed,
        stream=stream,
        include_usage=_include_usage(body, stream),
    )


def _required(body: dict, key: str, typ: type) -> Any:
    if key not in body or body[key] is None:
        raise ApiError(400, f"you must provide a '{key}' parameter", param=key, code="missing_required_parameter")
    if not isinstance(body[key], typ):
        raise ApiError(400, f"'{key}' must be a {typ.__name__}, got {type(body[key]).__name__}", param=key)
    return body[key]


def _route(reft: Any, model: str, models: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The ReFTs to apply, in the order they act: the model's own, then ``reft``'s in the order
    given; a list that names the model's own ReFT places it where the list says."""
    names = list(models[model])
    if reft is None:
        return tuple(names)
    extra = [reft] if isinstance(reft, str) else reft
    if not isinstance(extra, list) or not all(isinstance(x, str) for x in extra):
        raise ApiError(400, f"reft must be a ReFT name or a list of names, got {reft!r}", param="reft")
    singles = {m: r[0] for m, r in models.items() if len(r) == 1}
    for name in extra:
        if name not in singles:
            raise ApiError(
                404,
                f"ReFT {name!r} is not served; served ReFTs: {', '.join(singles) or '(none)'}",
                param="reft",
                code="model_not_found",
            )
    listed = [singles[name] for name in extra]
    twice = [n for i, n in enumerate(listed) if n in listed[:i]]
    if twice:
        raise ApiError(400, f"reft names ReFT {twice[0]!r} twice; name each ReFT once", param="reft")
    return tuple(listed if set(names) <= set(listed) else [*names, *listed])


def _messages(body: dict) -> tuple[dict[str, str], ...]:
    messages = _required(body, "messages", list)
    if not messages:
        raise ApiError(400, "'messages' must hold at least one message", param="messages")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ApiError(400, f"{where} must be an object with 'role' and 'content'", param=where)
        if m["role"] not in _ROLES:
            raise ApiError(400, f"{where}.role={m['role']!r} is not one of {', '.join(_ROLES)}", param=where)
        content = m["content"]
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
            ):
                raise ApiError(400, f"{where}.content: only text parts are supported", param=where)
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ApiError(400, f"{where}.content must be a string, got {type(content).__name__}", param=where)
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    return tuple(out)


def _prompt(body: dict) -> str:
    if "prompt" not in body or body["prompt"] is None:
        raise ApiError(400, "you must provide a 'prompt' parameter", param="prompt", code="missing_required_parameter")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(
            400, "prompt must be a string (or a list of one string); send one request per prompt", param="prompt"
        )
    if not prompt:
        raise ApiError(400, "prompt is empty; give it some text", param="prompt")
    return prompt


def _max_tokens(body: dict, kind: str) -> int | None:
    values = {k: body[k] for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None}
    if len(set(map(repr, values.values()))) > 1:
        raise ApiError(400, "max_tokens and max_completion_tokens disagree; give one", param="max_tokens")
    if not values:
        return None
    key, value = next(iter(values.items()))
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, f"{key} must be an integer, got {value!r}", param=key)
    if value < 1:
        raise ApiError(400, f"{key}={value} must be at least 1", param=key)
    return value


def _number(body: dict, key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ApiError(400, f"{key} must be a number, got {value!r}", param=key)
    if not low <= value <= high:
        raise ApiError(400, f"{key}={value} is out of range; give a value in [{low:g}, {high:g}]", param=key)
    return float(value)


def _stop(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise ApiError(400, f"stop must be a non-empty string or a list of them, got {stop!r}", param="stop")
    if len(items) > 4:
        raise ApiError(400, f"stop holds {len(items)} sequences; at most 4 are allowed", param="stop")
    return tuple(items)


def _include_usage(body: dict, stream: bool) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not stream:
        raise ApiError(400, "stream_options is only allowed with stream=true", param="stream_options")
    if not isinstance(opts, dict) or set(opts) - {"include_usage"}:
        raise ApiError(400, f"stream_options supports only include_usage, got {opts!r}", param="stream_options")
    usage = opts.get("include_usage", False)
    if not isinstance(usage, bool):
        raise ApiError(400, "stream_options.include_usage must be true or false", param="stream_options")
    return usage
