from __future__ import annotations

import sys
from pathlib import Path

import typer

from edgekit.errors import UsageError


def chat_cmd(
    deployment: Path = typer.Argument(None, help="A folder from `edgekit deploy`."),
    model: str = typer.Option(None, "--model", "-m", help="Chat with a model's elastic checkpoint through torch."),
    elastic: str = typer.Option(None, "--elastic", help="Elastic checkpoint (torch, live shape changes)."),
    plan: str = typer.Option(None, "--plan", help="A plan (stage-1 weights; torch, live shape changes)."),
    shape: str = typer.Option(None, "--shape", help="Shape to start with (default: the full model)."),
    plain: bool = typer.Option(False, "--plain", help="Line-based REPL instead of the TUI (automatic off a terminal)."),
    prompt: str = typer.Option(None, "--prompt", "-p", help="Answer this one message and exit."),
    system: str = typer.Option(None, "--system", help="System prompt (the chat template's default if unset)."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 means greedy."),
    top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0, help="Nucleus sampling (with temperature > 0)."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Upper bound on a reply's length."),
    json_out: bool = typer.Option(False, "--json", help="With --prompt: print the reply and figures as JSON."),
) -> None:
    """Chat with a deployment: the Textual UI in a terminal, a plain REPL otherwise."""
    from edgekit.chat.engine import ChatEngine
    from edgekit.cli.console import err
    from edgekit.engines import Sampling

    elastic_mode = model is not None or elastic is not None or plan is not None
    if deployment is None and not elastic_mode:
        raise UsageError(
            "name a deployment folder (from `edgekit deploy --target host --budget ...`), or --model/--elastic"
        )
    if deployment is not None and elastic_mode:
        raise UsageError("give a deployment or --model/--elastic/--plan, not both")
    if json_out and prompt is None:
        raise UsageError("--json needs --prompt (one turn, one JSON object)")
    if elastic_mode:
        from edgekit.deployment.pipeline import resolve_source

        source = resolve_source(elastic, plan, model)
        with err.status(f"loading {source.label}…"):
            engine = ChatEngine.from_elastic(source, shape)
    else:
        with err.status(f"loading {deployment}…"):
            engine = ChatEngine.from_deployment(deployment)
    sampling = Sampling(temperature=temperature, top_p=top_p, max_new_tokens=max_tokens)
    if plain or prompt is not None or not sys.stdout.isatty() or not sys.stdin.isatty():
        from edgekit.chat.plain import run_plain

        raise typer.Exit(run_plain(engine, sampling, system=system, prompt=prompt, json_out=json_out))
    from edgekit.chat.tui.app import ChatApp

    ChatApp(engine, sampling, system=system).run()
