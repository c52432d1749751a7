"""The HTTP face of the engine: OpenAI's endpoints on Starlette, streaming over server-sent events.

    engine = Engine(hooked, {"emoji": reft}).start()
    app = create_app(engine, model_name="smollm2")        # an ASGI app: uvicorn.run(app, ...)

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``
(``/v1/models/{id}``), ``GET /health`` (the engine's counters), and the chat page at ``/``.
Every error is ``{"error": {"message", "type", "param", "code"}}`` with a 4xx code (5xx only
for the server's own failures). A client that goes away (streaming or not) cancels its
request, which frees its row in the batch at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .engine import Delta, Finished, Request, Sampling
from .protocol import ApiError, Parsed, parse_request
from .request import ServingEngine


class _State:
    def __init__(self, engine: ServingEngine, model_name: str, default_max_tokens: int) -> None:
        self.engine, self.model_name, self.default_max_tokens = engine, model_name, default_max_tokens
        self.created = int(time.time())
        self.models: dict[str, tuple[str, ...]] = {model_name: ()}
        for name in engine.refts:
            if name == model_name:
                raise ValueError(f"ReFT name {name!r} is also the base model's name; pick another --reft name")
            self.models[name] = (name,)

    @property
    def context(self) -> int | None:
        return self.engine.context_length  # known once the engine started (vLLM sizes it then)


def create_app(engine: ServingEngine, *, model_name: str = "base", default_max_tokens: int = 256) -> Starlette:
    """An ASGI app serving ``engine``; the base model answers to ``model_name``, each ReFT to its
    name. The app starts the engine's thread on startup and stops it on shutdown."""
    state = _State(engine, model_name, default_max_tokens)

    async def chat(request: HttpRequest) -> Response:
        return await _complete(state, request, "chat")

    async def completion(request: HttpRequest) -> Response:
        return await _complete(state, request, "completion")

    async def models(request: HttpRequest) -> Response:
        return JSONResponse({"object": "list", "data": [_model_card(state, m) for m in state.models]})

    async def model(request: HttpRequest) -> Response:
        name = request.path_params["name"]
        if name not in state.models:
            raise ApiError(404, f"The model {name!r} does not exist on this server", code="model_not_found")
        return JSONResponse(_model_card(state, name))

    async def health(request: HttpRequest) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "model": state.model_name,
                "refts": list(engine.refts),
                "max_batch": engine.max_batch,
                "context_length": state.context,
                "stats": engine.stats.as_dict(),
            }
        )

    async def page(request: HttpRequest) -> Response:
        return HTMLResponse(resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    routes = [
        Route("/", page),
        Route("/health", health),
        Route("/v1/models", models),
        Route("/v1/models/{name:path}", model),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completion, methods=["POST"]),
    ]
    handlers: dict[Any, Callable] = {ApiError: _api_error, 404: _not_found, 405: _not_allowed, Exception: _crash}
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


async def _complete(state: _State, request: HttpRequest, kind: str) -> Response:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"We could not parse the JSON body of your request ({e}); send a JSON object") from None
    parsed = parse_request(kind, body, state.models)
    ids = _prompt_ids(state, parsed)
    max_tokens = _budget(state, parsed, len(ids))
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Delta | Finished] = asyncio.Queue()

    def sink(event: Delta | Finished) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    sampling = Sampling(
        max_tokens=max_tokens, temperature=parsed.temperature, top_p=parsed.top_p, seed=parsed.seed, stop=parsed.stop
    )
    req = Request(ids, parsed.route, sampling, sink)
    state.engine.add(req)
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    head = {"id": f"{prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": parsed.model}
    if parsed.stream:
        return _EventStream(_events(kind, head, parsed, queue), on_close=lambda: state.engine.cancel(req))
    done = await _until_done_or_gone(request, queue)
    if done is None:  # the client went away: free its row
        state.engine.cancel(req)
        return Response(status_code=499)
    if done.reason == "error":
        raise ApiError(500, f"generation failed: {done.message}")
    if done.reason == "cancelled":
        raise ApiError(503, f"the request was cancelled: {done.message or 'the server is shutting down'}")
    usage = _usage(done)
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": done.text}, "logprobs": None}
        return JSONResponse(
            {**head, "object": "chat.completion", "choices": [{**choice, "finish_reason": done.reason}], "usage": usage}
        )
    choice = {"index": 0, "text": done.text, "logprobs": None, "finish_reason": done.reason}
    return JSONResponse({**head, "object": "text_completion", "choices": [choice], "usage": usage})


def _prompt_ids(state: _State, parsed: Parsed) -> list[int]:
    with state.engine.tokenizer_lock:
        return _encode(state.engine.tokenizer, parsed)


def _encode(tok: Any, parsed: Parsed) -> list[int]:
    if parsed.messages is None:
        return list(tok(parsed.prompt)["input_ids"])
    if getattr(tok, "chat_template", None) is None:
        raise ApiError(400, "this model's tokenizer has no chat template; use /v1/completions", param="messages")
    try:
        text = tok.apply_chat_template(list(parsed.messages), tokenize=False, add_generation_prompt=True)
    except Exception as e:  # the template's own checks (role order, ...)
        raise ApiError(400, f"the chat template refused these messages: {e}", param="messages") from None
    return list(tok(text, add_special_tokens=False)["input_ids"])  # as reftlab.generate(chat_template=True)


def _budget(state: _State, parsed: Parsed, prompt_tokens: int) -> int:
    ctx = state.context
    if prompt_tokens == 0:
        raise ApiError(400, "the prompt tokenizes to nothing; give it some text", param="prompt")
    if ctx is None:
        return parsed.max_tokens or state.default_max_tokens
    if prompt_tokens >= ctx:
        raise ApiError(
            400,
            f"This model's maximum context length is {ctx} tokens, but the prompt is {prompt_tokens} tokens; "
            "shorten the prompt",
            param="messages" if parsed.messages is not None else "prompt",
            code="context_length_exceeded",
        )
    room = ctx - prompt_tokens
    if parsed.max_tokens is None:
        return min(state.default_max_tokens, room)
    if parsed.max_tokens > room:
        raise ApiError(
            400,
            f"This model's maximum context length is {ctx} tokens; the prompt is {prompt_tokens} tokens and "
            f"max_tokens={parsed.max_tokens}, so at most {room} new tokens fit; lower max_tokens",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return parsed.max_tokens


async def _events(
    kind: str, head: dict[str, Any], parsed: Parsed, queue: asyncio.Queue[Delta | Finished]
) -> AsyncIterator[str]:
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(text: str | None, finish: str | None, role: bool = False) -> str:
        if kind == "chat":
            delta = ({"role": "assistant"} if role else {}) | ({"content": text} if text is not None else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return _sse({**head, "object": obj, "choices": [choice]})

    if kind == "chat":
        yield chunk("", None, role=True)
    while True:
        event = await queue.get()
        if isinstance(event, Delta):
            if event.text:
                yield chunk(event.text, None)
            continue
        if event.reason == "error":
            yield _sse(ApiError(500, f"generation failed: {event.message}").body())
        elif event.reason != "cancelled":
            yield chunk(None if kind == "chat" else "", event.reason)
            if parsed.include_usage:
                yield _sse({**head, "object": obj, "choices": [], "usage": _usage(event)})
        yield "data: [DONE]\n\n"
        return


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _usage(done: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


class _EventStream(StreamingResponse):
    """An SSE response that stops when the client disconnects and then calls ``on_close``
    (which cancels the request), whatever the ASGI server's spec version."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.ensure_future(self._stream(send))
        listening = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait({streaming, listening}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, listening):
                task.cancel()
            self._on_close()
            await asyncio.gather(streaming, listening, return_exceptions=True)

    async def _stream(self, send: Send) -> None:
        with contextlib.suppress(OSError):
            await self.stream_response(send)


async def _until_done_or_gone(request: HttpRequest, queue: asyncio.Queue[Delta | Finished]) -> Finished | None:
    """The request's ``Finished`` event, or None if the client disconnected first."""

    async def finished() -> Finished:
        while not isinstance(event := await queue.get(), Finished):
            pass
        return event

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    done, waiting = asyncio.ensure_future(finished()), asyncio.ensure_future(gone())
    try:
        await asyncio.wait({done, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    if done.done():
        return done.result()
    done.cancel()
    return None


def _model_card(state: _State, name: str) -> dict[str, Any]:
    card: dict[str, Any] = {"id": name, "object": "model", "created": state.created, "owned_by": "reftlab"}
    if not state.models[name]:
        return {**card, "base": state.model_name, "reft": None}
    reft = state.engine.refts[name]
    sites = [
        {"hook": site.hook, "positions": str(site.positions), "kind": iv.kind, "rank": iv.rank}
        for site, iv in zip(reft.sites, reft.interventions.values())
    ]
    return {
        **card,
        "base": state.model_name,
        "reft": {"sites": sites, "parameters": reft.num_intervention_parameters()},
    }


async def _api_error(request: HttpRequest, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _not_found(request: HttpRequest, exc: Exception) -> Response:
    return await _api_error(
        request, ApiError(404, f"no endpoint {request.url.path}; see GET /v1/models, POST /v1/chat/completions")
    )


async def _not_allowed(request: HttpRequest, exc: Exception) -> Response:
    return await _api_error(request, ApiError(405, f"{request.method} is not allowed on {request.url.path}"))


async def _crash(request: HttpRequest, exc: Exception) -> Response:
    return await _api_error(request, ApiError(500, f"internal error: {type(exc).__name__}: {exc}"))
