"""`edgekit serve`: over edgekit.serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekit.cli import options as o
from edgekit.cli.console import err


def serve_cmd(
    deployment: Annotated[Path, typer.Argument(help="A deployment folder from `edgekit deploy`.")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on; 0.0.0.0 opens it to the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="TCP port.", min=1, max=65535)] = 8000,
    api_key: o.ApiKey = None,
    queue: Annotated[
        int, typer.Option("--queue", help="Requests that may wait for the running one; past it, 429.", min=0)
    ] = 8,
    max_body: Annotated[int, typer.Option("--max-body", help="Largest request body in bytes; past it, 413.", min=1)] = (
        1 << 20
    ),
) -> None:
    """Serve a deployment over the OpenAI chat-completions API (POST /v1/chat/completions, GET /v1/models,
    GET /health), through the deployment's own runtime."""
    from edgekit.serve.server import build, check_port, serve

    key = api_key or None
    check_port(host, port)
    if host not in ("127.0.0.1", "localhost", "::1") and not key:
        err.print(f"[yellow]warning[/yellow]: listening on {host} without --api-key: anyone who can reach this "
                  "machine can use the model")  # fmt: skip
    with err.status(f"opening {deployment} (verifying its hashes)…"):
        app = build(deployment, key, queue, max_body)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    serve(app, host, port, lambda: err.print(f"serving {deployment} at http://{shown}:{port}/v1 (Ctrl-C stops)"))
