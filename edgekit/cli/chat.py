"""`edgekit chat`: over edgekit.chat (the engine, the plain REPL and the Textual app)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from edgekit.cli import options as o
from edgekit.errors import UsageError, utf8_text


def chat_cmd(
    deployment: Annotated[Path | None, typer.Argument(help="A deployment folder, from `edgekit deploy`.")] = None,
    model: o.Model = None,
    elastic: o.Elastic = None,
    plan: o.Plan = None,
    shape: o.Shape = None,
    draft: o.Draft = None,
    draft_k: o.DraftK = 4,
    plain: Annotated[
        bool, typer.Option("--plain", help="A line-based REPL instead of the TUI (automatic off a terminal).")
    ] = False,
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="Answer this one message and exit.")] = None,
    system: o.System = None,
    temperature: o.Temperature = 0.0,
    top_p: o.TopP = 0.95,
    max_new_tokens: o.MaxNewTokens = 256,
    stop_loops: o.StopLoops = True,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Chat with a running `edgekit serve` (or any OpenAI-compatible server) at URL."),
    ] = None,
    api_key: o.ApiKey = None,
    json_out: o.Json = False,
) -> None:
    """Chat with a deployment through its runtime; or, through torch, with a model (--model), or with an
    elastic checkpoint or plan whose shape changes live (--elastic, --plan, starting at --shape, default the
    full model). The Textual UI in a terminal, a plain REPL otherwise; --prompt answers one turn."""
    from edgekit.chat.engine import ChatEngine
    from edgekit.cli.console import err
    from edgekit.engines import Sampling

    sources = [x for x in (deployment, model, elastic or plan, url) if x is not None]
    if not sources:
        raise UsageError("name a deployment folder (from `edgekit deploy --target host --budget ...`), "
                         "or --model, --elastic, --plan or --url")  # fmt: skip
    if len(sources) > 1 or (elastic and plan):
        raise UsageError("give one of: a deployment, --model, --elastic, --plan, --url")
    if shape is not None and not (elastic or plan):
        raise UsageError("--shape needs --elastic or --plan (a deployment or a model has one shape)")
    if draft is not None and not (elastic or plan):
        raise UsageError("--draft needs --elastic or --plan (the draft is a smaller shape of the same checkpoint)")
    if json_out and prompt is None:
        raise UsageError("--json needs --prompt (one turn, one JSON object)")
    utf8_text(prompt or "", "--prompt")
    utf8_text(system or "", "--system")
    if url is not None:
        from edgekit.chat.remote import RemoteChatEngine

        with err.status(f"connecting to {url}…"):
            engine = RemoteChatEngine(url, api_key or None)
    elif elastic or plan:
        from edgekit.elastic.source import Source

        source = Source.resolve(elastic, plan)
        with err.status(f"loading {source.label}…"):
            engine = ChatEngine.from_source(source, shape, draft=draft, k=draft_k)
    elif model is not None:
        with err.status(f"loading {model}…"):
            engine = ChatEngine.from_model(model)
    else:
        with err.status(f"loading {deployment}…"):
            engine = ChatEngine.from_deployment(deployment)
    sampling = Sampling(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    if not stop_loops:
        engine.loop_guard = None
    if plain or prompt is not None or not sys.stdout.isatty() or not sys.stdin.isatty():
        from edgekit.chat.plain import run_plain

        raise typer.Exit(run_plain(engine, sampling, system=system, prompt=prompt, json_out=json_out))
    from edgekit.chat.tui.app import ChatApp

    ChatApp(engine, sampling, system=system).run()
