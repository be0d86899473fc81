"""A ChatEngine that talks to a running `edgekit serve` (or any OpenAI-compatible server) over HTTP: the TUI and
the plain REPL work against a board across the network as they do on a local deployment. The figures are the
client's: first token and time between streamed pieces, and the server's token counts."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from edgekit.chat.engine import ChatEngine, Info, Piece, Stats
from edgekit.engines import Sampling
from edgekit.errors import ResourceError, UsageError, first_line

TIMEOUT_S = 30.0


class RemoteChatEngine(ChatEngine):
    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.base = url.rstrip("/")
        if not self.base.endswith("/v1"):
            self.base += "/v1"
        self.api_key = api_key
        models = self._get("/models").get("data") or []
        if not models:
            raise ResourceError(f"{self.base} serves no model")
        self.model_id = str(models[0]["id"])
        health = self._get_health()
        name, _, shape = self.model_id.partition(":")
        info = Info(name, health.get("shape") or shape or "?", health.get("runtime", "remote"),
                    health.get("precision", "?"), f"server {self.base}",
                    context_length=int(health.get("context_length") or 2048))  # fmt: skip
        super().__init__(None, None, info)

    # ------------------------------------------------------------------ HTTP

    def _request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method="POST" if data else "GET")
        try:
            return urllib.request.urlopen(req, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            raise _server_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ResourceError(f"cannot reach {self.base}: {first_line(exc)}") from None

    def _get(self, path: str) -> dict[str, Any]:
        with self._request(path) as resp:
            return json.loads(resp.read())

    def _get_health(self) -> dict[str, Any]:
        root = self.base.removesuffix("/v1")
        try:
            with urllib.request.urlopen(root + "/health", timeout=TIMEOUT_S) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, json.JSONDecodeError):
            return {}  # another OpenAI-compatible server: no health endpoint of ours

    # ------------------------------------------------------------------ the engine's interface

    def check_fits(self, messages: list[dict[str, str]], sampling: Sampling) -> None:
        """The server says (400) when a prompt does not fit."""

    def reply(
        self, messages: list[dict[str, str]], sampling: Sampling, cancel: threading.Event | None = None
    ) -> Iterator[Piece]:
        if not messages or not messages[-1]["content"].strip():
            raise UsageError("the prompt is empty")
        body = {"model": self.model_id, "messages": messages, "stream": True, "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p,
                "stream_options": {"include_usage": True}}  # fmt: skip
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        stats = Stats()
        with self.lock:
            start = last = time.perf_counter()
            with self._request("/chat/completions", body) as resp:
                for event in _events(resp):
                    if "error" in event:
                        raise ResourceError(f"the server failed: {event['error'].get('message')}")
                    if event.get("usage"):
                        stats.prompt_tokens = int(event["usage"].get("prompt_tokens", 0))
                        stats.new_tokens = int(event["usage"].get("completion_tokens", stats.new_tokens))
                        stats.context_tokens = stats.prompt_tokens + stats.new_tokens
                    for choice in event.get("choices") or []:
                        if choice.get("finish_reason"):
                            stats.finished = choice["finish_reason"] == "stop"
                        text = (choice.get("delta") or {}).get("content") or ""
                        if not text:
                            continue
                        last = stats.token(start, last)
                        yield Piece(text, stats)
                    if cancel is not None and cancel.is_set():
                        stats.cancelled = True  # closing the response makes the server stop the reply
                        break
        yield Piece("", stats)


def _events(resp: Any) -> Iterator[dict[str, Any]]:
    """The JSON events of a server-sent event stream, until [DONE]."""
    for raw in resp:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


def _server_error(exc: Any) -> Exception:
    try:
        message = json.loads(exc.read()).get("error", {}).get("message") or exc.reason
    except (json.JSONDecodeError, AttributeError, OSError):
        message = exc.reason
    if exc.code == 401:
        return UsageError(f"the server refused the key ({message}): give --api-key")
    if exc.code in (400, 404, 413):
        return UsageError(f"the server refused the request ({exc.code}): {message}")
    return ResourceError(f"the server answered {exc.code}: {message}")
