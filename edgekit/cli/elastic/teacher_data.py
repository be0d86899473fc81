"""`edgekit elastic teacher-data`: over edgekit.elastic.teacher_data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekit.cli import options as o
from edgekit.cli.console import out, print_json
from edgekit.errors import UsageError
from edgekit.models.registry import DEFAULT_MODEL


def teacher_data_cmd(
    out_file: o.OutRequired,
    from_text: Annotated[
        Path | None, typer.Option("--from-text", help="Make prompts from this corpus's section headings.")
    ] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Or: a file of prompts, one per line.")] = None,
    model: o.Model = DEFAULT_MODEL,
    count: Annotated[int, typer.Option("--count", min=1, help="Prompts to answer (at most).")] = 512,
    max_new_tokens: o.MaxNewTokens = 160,
    temperature: o.Temperature = 0.7,
    top_p: o.TopP = 0.9,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Prompts generated together.")] = 16,
    seed: o.Seed = 0,
    device: o.Device = "auto",
    force: o.Force = False,
    json_out: o.Json = False,
) -> None:
    """The base model's own replies to prompts, as JSONL (with a sidecar saying how it was made) that a recipe
    mixes into training (data.chat) so subnets keep the instruct model's chat manners."""
    from edgekit.elastic.teacher_data import TeacherSettings, make_teacher_data, prompts_from_file, prompts_from_text
    from edgekit.progress import bar

    if (from_text is None) == (prompts is None):
        raise UsageError("give one prompt source: --from-text CORPUS or --prompts FILE")
    o.refuse_existing(out_file, force)
    asked = prompts_from_text(from_text, count, seed) if from_text else prompts_from_file(prompts, count)
    settings = TeacherSettings(max_new_tokens, temperature, top_p, batch_size, seed)
    with bar() as progress:
        task = progress.add_task(f"teacher replies ({model or DEFAULT_MODEL})", total=len(asked))
        meta = make_teacher_data(out_file, asked, str(from_text or prompts), model or DEFAULT_MODEL, settings, device,
                                 on_batch=lambda n: progress.advance(task, n))  # fmt: skip
    if json_out:
        print_json({"out": str(out_file), **meta})
        return
    out.print(f"{meta['rows']} replies to {len(asked)} prompts in {meta['seconds']:.0f} s -> {out_file}")
    out.print(f"mix them into training with: data.chat={out_file} data.chat_fraction=0.5")
