"""`edgekit generate`: one chat turn, over edgekit.chat.engine."""

from __future__ import annotations

from typing import Annotated

import typer

from edgekit.cli import options as o
from edgekit.cli.console import err, out, print_json
from edgekit.errors import UsageError, utf8_text


def generate_cmd(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    model: o.Model = None,
    deployment: o.Deployment = None,
    max_new_tokens: o.MaxNewTokens = 64,
    stop_loops: o.StopLoops = True,
    system: o.System = None,
    temperature: o.Temperature = 0.0,
    top_p: o.TopP = 0.95,
    json_out: o.Json = False,
) -> None:
    """Answer one prompt with the model's chat template, streaming the reply, and report ms/token, tokens/s
    and time to first token: through a deployment's own runtime (--deployment), or a model through torch
    (--model, default: the default model)."""
    from edgekit.chat.engine import ChatEngine
    from edgekit.engines import Sampling
    from edgekit.models.registry import DEFAULT_MODEL

    if model is not None and deployment is not None:
        raise UsageError("give --model or --deployment, not both")
    utf8_text(prompt, "the prompt")
    utf8_text(system or "", "--system")
    stream = None if json_out else (lambda piece: out.print(piece, end="", markup=False))
    if deployment is not None:
        with err.status(f"loading {deployment}…"):
            engine = ChatEngine.from_deployment(deployment)
        info = {"deployment": str(deployment), "shape": engine.info.shape, "runtime": engine.info.runtime}
    else:
        with err.status(f"loading {model or DEFAULT_MODEL}…"):
            engine = ChatEngine.from_model(model or DEFAULT_MODEL)
        info = {"model": engine.info.model}
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    sampling = Sampling(temperature=temperature, top_p=top_p if temperature > 0 else 1.0, max_new_tokens=max_new_tokens)
    if not stop_loops:
        engine.loop_guard = None
    result = engine.complete(messages, sampling, on_text=stream)
    if json_out:
        print_json({**info, "prompt": prompt, **result.to_dict()})
        return
    i = engine.info
    out.print()
    err.print(
        f"[dim]{result.new_tokens} tokens, {result.ms_per_token:.1f} ms/token ({result.tokens_per_s:.1f} tok/s), "
        f"first token {result.ttft_ms:.0f} ms, {i.shape}, {i.runtime} {i.precision} {i.device}"
        + (", stopped: the reply began repeating itself" if result.looped else "")
        + "[/dim]"
    )
