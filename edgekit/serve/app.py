"""`edgekit serve`'s ASGI app: OpenAI-compatible chat completions over one ChatEngine (any runtime a
deployment has), with a bounded queue, bearer keys, a request-size limit and one log line per request.

One reply runs at a time (a session holds one KV cache); up to `queue` more wait for it, and past that the
server answers 429 at once. Each reply runs in a worker thread that streams into the event loop; a client that
goes away sets the reply's cancel event, so its slot frees after the token in flight.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from edgekit.chat.engine import ChatEngine, Piece
from edgekit.engines import Sampling
from edgekit.errors import UsageError
from edgekit.serve import protocol as p

log = logging.getLogger("edgekit.serve")

DEFAULT_MAX_TOKENS = 256


@dataclass
class ServeSettings:
    model_id: str  # what /v1/models lists and requests name
    aliases: tuple[str, ...] = ()  # other names a request may give (the deployment folder's, the model's)
    api_key: str | None = None
    queue: int = 8  # requests that may wait for the running one; past it, 429
    max_body: int = 1 << 20  # bytes of request body; past it, 413
    max_tokens: int = DEFAULT_MAX_TOKENS  # when a request names none


class Admission:
    """At most 1 + queue requests in the server at once; a counter, not a lock: the engine's own lock orders
    the replies."""

    def __init__(self, queue: int) -> None:
        self.capacity = 1 + queue
        self.active = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.active >= self.capacity:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


def create_app(engine: ChatEngine, settings: ServeSettings) -> FastAPI:
    app = FastAPI(title="edgekit serve", docs_url=None, redoc_url=None, openapi_url=None)
    admission = Admission(settings.queue)
    names = {settings.model_id, *settings.aliases}
    app.state.admission = admission

    def error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
              param: str | None = None) -> JSONResponse:  # fmt: skip
        return JSONResponse(p.error_body(message, kind, code, param), status_code=status)

    def invalid(errors: list[Any]) -> JSONResponse:
        """A pydantic validation failure as OpenAI's 400: the first bad field and what is wrong with it."""
        first = errors[0] if errors else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error(400, f"{where or 'request'}: {first.get('msg', 'invalid request')}", param=where or None)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid(list(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        request.state.start = time.perf_counter()
        request.state.figures = ""
        request.state.log_later = False
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body:
            response = error(413, f"the request is {int(length):,} bytes; the limit is {settings.max_body:,}")
        elif settings.api_key and request.url.path.startswith("/v1/") and not _authorised(request, settings.api_key):
            response = error(401, "Incorrect API key provided", code="invalid_api_key")
        else:
            response = await call_next(request)
        if not request.state.log_later:  # a stream logs itself when it ends
            log_request(request, response.status_code)
        return response

    @app.get("/health")
    async def health() -> dict[str, Any]:
        info = engine.info
        return {"status": "ok", "model": settings.model_id, "shape": info.shape, "runtime": info.runtime,
                "precision": info.precision, "context_length": info.context_length, "active": admission.active,
                "capacity": admission.capacity}  # fmt: skip

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": settings.model_id, "object": "model", "created": 0,
                                            "owned_by": "edgekit"}]}  # fmt: skip

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> Any:
        if name not in names:
            return error(404, f"The model '{name}' does not exist; this server serves '{settings.model_id}'",
                         code="model_not_found")  # fmt: skip
        return {"id": settings.model_id, "object": "model", "created": 0, "owned_by": "edgekit"}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > settings.max_body:
            return error(413, f"the request is {len(raw):,} bytes; the limit is {settings.max_body:,}")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error(400, f"the body is not JSON: {exc}")
        try:
            req = p.ChatRequest.model_validate(body)
        except ValidationError as exc:
            return invalid(list(exc.errors()))
        if req.model is not None and req.model not in names:
            return error(404, f"The model '{req.model}' does not exist; this server serves '{settings.model_id}'",
                         code="model_not_found")  # fmt: skip
        if req.chat()[-1]["role"] != "user" or not req.chat()[-1]["content"].strip():
            return error(400, "the last message must be the user's, and not empty", param="messages")
        limit = req.max_completion_tokens or req.max_tokens or settings.max_tokens
        sampling = Sampling(temperature=req.temperature, top_p=req.top_p, max_new_tokens=limit, seed=req.seed,
                            min_new_tokens=min(req.min_tokens, limit))  # fmt: skip
        try:
            engine.check_fits(req.chat(), sampling)
        except UsageError as exc:
            return error(400, str(exc), code="context_length_exceeded", param="messages")
        if not admission.enter():
            return error(429, f"the server is busy: {admission.capacity} requests are in it already; retry later",
                         kind="rate_limit_error", code="rate_limit_exceeded")  # fmt: skip
        reply = Reply(engine, req.chat(), sampling, req.stops(), admission)
        cid = p.completion_id()
        if req.stream:
            include = bool((req.stream_options or {}).get("include_usage"))
            request.state.log_later = True
            return StreamingResponse(_sse(reply, cid, settings.model_id, include, request),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})  # fmt: skip
        try:
            async for _ in reply.pieces():
                if await request.is_disconnected():
                    reply.cancel.set()
        finally:
            reply.cancel.set()
        request.state.figures = reply.figures()
        if reply.failure is not None:
            return error(500, f"generation failed: {reply.failure}", kind="server_error")
        return p.completion(cid, settings.model_id, reply.text, reply.finish, reply.prompt_tokens, reply.new_tokens)

    return app


def log_request(request: Any, status: int) -> None:
    """One line per request: its status, its time and, for a completion, its token figures."""
    log.info("%s %s %d %.0f ms%s", request.method, request.url.path, status,
             (time.perf_counter() - request.state.start) * 1000, request.state.figures)  # fmt: skip


def _authorised(request: Any, key: str) -> bool:
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else ""
    return hmac.compare_digest(given.encode(), key.encode())


async def _sse(reply: Reply, cid: str, model: str, include_usage: bool, request: Any) -> AsyncIterator[str]:
    def event(data: dict[str, Any]) -> str:
        return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"

    try:
        yield event(p.chunk(cid, model, {"role": "assistant", "content": ""}))
        async for text in reply.pieces():
            if text:
                yield event(p.chunk(cid, model, {"content": text}))
        if reply.failure is not None:
            yield event(p.error_body(f"generation failed: {reply.failure}", "server_error"))
        else:
            yield event(p.chunk(cid, model, {}, reply.finish))
            if include_usage:
                yield event(p.chunk(cid, model, None, None, p.usage(reply.prompt_tokens, reply.new_tokens)))
        yield "data: [DONE]\n\n"
    finally:
        reply.cancel.set()  # the client went away (or the stream ended): stop after the token in flight
        request.state.figures = reply.figures()
        log_request(request, 200)


class Reply:
    """One reply made in a worker thread and read in the event loop: text pieces with the stop strings cut,
    the finish reason, token counts and figures. The admission slot frees when the thread is done."""

    def __init__(self, engine: ChatEngine, messages: list[dict[str, str]], sampling: Sampling, stops: list[str],
                 admission: Admission) -> None:  # fmt: skip
        self.engine, self.messages, self.sampling, self.stops = engine, messages, sampling, stops
        self.admission = admission
        self.cancel = threading.Event()
        self.text = ""
        self.finish = "stop"
        self.prompt_tokens = self.new_tokens = 0
        self.failure: str | None = None
        self.stats: Any = None
        self.queued_ms = 0.0

    async def pieces(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        entered = time.perf_counter()

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def work() -> None:
            try:
                first = True
                for piece in self.engine.reply(self.messages, self.sampling, self.cancel):
                    if first:
                        self.queued_ms = (time.perf_counter() - entered) * 1000
                        first = False
                    put("piece", piece)
            except Exception as exc:  # reported to the client as a 500 / an error event, never a hang
                put("error", f"{type(exc).__name__}: {exc}")
            finally:
                self.admission.leave()
                put("done", None)

        threading.Thread(target=work, name="edgekit-serve-reply", daemon=True).start()
        raw, sent = "", 0
        while True:
            kind, value = await queue.get()
            if kind == "done":
                break
            if kind == "error":
                self.failure = value
                continue
            piece: Piece = value
            self.stats = piece.stats
            if self.cancel.is_set():
                continue  # drain to the thread's end; nothing more is sent
            raw += piece.text
            cut, stopped = p.cut_at_stop(raw, self.stops)
            ready = len(cut) if stopped else len(cut) - p.held_back(cut, self.stops)
            if ready > sent:
                yield cut[sent:ready]
                sent = ready
            if stopped:
                self.cancel.set()
                self.finish = "stop"
        if not p.cut_at_stop(raw, self.stops)[1]:
            rest = raw[sent:]
            if rest:
                yield rest
            stats = self.stats
            finished = stats is not None and stats.finished
            self.finish = "stop" if finished else "length"
        self.text = p.cut_at_stop(raw, self.stops)[0].strip()
        if self.stats is not None:
            self.prompt_tokens = self.stats.prompt_tokens
            self.new_tokens = self.stats.new_tokens - (1 if self.stats.finished else 0)

    def figures(self) -> str:
        s = self.stats
        if s is None:
            return ""
        ttft = f"{s.ttft_ms:.0f}" if s.ttft_ms is not None else "-"
        decode = f"{s.mean_ms:.1f}" if s.mean_ms is not None else "-"
        return (f"; {s.prompt_tokens} prompt + {self.new_tokens} new tokens, waited {self.queued_ms:.0f} ms, "
                f"first token {ttft} ms, {decode} ms/token{', cancelled' if s.cancelled else ''}")  # fmt: skip
