from __future__ import annotations

from pathlib import Path

import typer

from edgekit.cli.console import err, out, print_json
from edgekit.models.registry import DEFAULT_MODEL


def generate_cmd(
    prompt: str = typer.Argument(..., help="The user message."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Cache name, local HF folder or hub id."),
    deployment: Path = typer.Option(
        None, "--deployment", "-d", help="A folder from `edgekit deploy`: answer through its runtime."
    ),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Upper bound on the reply length."),
    system: str = typer.Option(None, "--system", help="System prompt (the chat template's default if unset)."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 means greedy."),
    json_out: bool = typer.Option(False, "--json", help="Print the reply and timings as JSON."),
) -> None:
    """Answer one prompt, streaming the reply: with a model through torch, or through a deployment's runtime."""
    stream = None if json_out else (lambda piece: out.print(piece, end="", markup=False))
    if deployment is not None:
        from edgekit.chat.engine import ChatEngine
        from edgekit.engines import Sampling

        with err.status(f"loading {deployment}…"):
            engine = ChatEngine.from_deployment(deployment)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        sampling = Sampling(
            temperature=temperature, top_p=0.95 if temperature > 0 else 1.0, max_new_tokens=max_new_tokens
        )
        result = engine.complete(messages, sampling, on_text=stream)
        i = engine.info
        where = f"{i.shape}, {i.runtime} {i.precision} {i.device}"
        info = {"deployment": str(deployment), "shape": i.shape, "runtime": i.runtime}
    else:
        from edgekit.chat.generate import generate
        from edgekit.models.reference import load

        with err.status(f"loading {model}…"):
            mdl, tokenizer, ref = load(model)
        result = generate(
            mdl, tokenizer, prompt, max_new_tokens=max_new_tokens, system=system, temperature=temperature,
            on_text=stream,
        )  # fmt: skip
        where = "torch cpu fp32"
        info = {"model": ref.name, "source": ref.source}
    if json_out:
        print_json({**info, "prompt": prompt, **result.to_dict()})
        return
    out.print()
    err.print(
        f"[dim]{result.new_tokens} tokens, {result.ms_per_token:.1f} ms/token "
        f"({result.tokens_per_s:.1f} tok/s), first token {result.ttft_ms:.0f} ms, {where}[/dim]"
    )
