"""Start `edgekit serve`: open and verify the deployment, check the port, and run uvicorn on the app."""

from __future__ import annotations

import errno
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from edgekit.errors import ResourceError, UsageError
from edgekit.serve.app import ServeSettings, create_app


def check_port(host: str, port: int) -> None:
    """One clear line when the port cannot be bound (in use, or not ours to take), before the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ResourceError(f"port {port} on {host} is in use: stop what holds it, or pick --port") from None
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def settings_for(deployment: Path, engine: Any, api_key: str | None, queue: int, max_body: int) -> ServeSettings:
    """The served model's id: the deployment's model and shape, e.g. smollm2-135m:d24-f75-h3; the folder's name
    and the bare model name are accepted as well."""
    info = engine.info
    model_id = f"{info.model}:{info.shape}"
    return ServeSettings(model_id, (deployment.name, info.model, "edgekit"), api_key, queue, max_body)


def build(deployment: Path, api_key: str | None = None, queue: int = 8, max_body: int = 1 << 20) -> Any:
    """The ASGI app on the deployment (its hashes verified as it opens)."""
    from edgekit.chat.engine import ChatEngine

    engine = ChatEngine.from_deployment(deployment)
    engine.loop_guard = None  # an OpenAI-compatible server gives what was asked for, up to max_tokens or a stop
    return create_app(engine, settings_for(deployment, engine, api_key, queue, max_body))


def serve(app: Any, host: str, port: int, on_ready: Any = None) -> None:
    import uvicorn

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log = logging.getLogger("edgekit.serve")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready()
    server.run()
