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
    prompts: o.Prompts = None,
    from_text: Annotated[
        Path | None, typer.Option("--from-text", help="Also make prompts from this corpus's section headings.")
    ] = None,
    part: Annotated[
        str,
        typer.Option("--part", help="Of the prompt file: train (the default), dev (the held-apart tenth) or all."),
    ] = "train",
    model: o.Model = DEFAULT_MODEL,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Prompts to take from the prompt file (default: all).")
    ] = None,
    headings: Annotated[
        int, typer.Option("--headings", min=0, help="Prompts to make from --from-text's section headings.")
    ] = 512,
    api: Annotated[
        int,
        typer.Option(
            "--api",
            min=0,
            help="Questions to make from the functions, classes and modules --from-text documents (Sphinx directives).",
        ),
    ] = 0,
    samples: Annotated[int, typer.Option("--samples", min=1, max=16, help="Sampled replies per prompt.")] = 1,
    max_new_tokens: o.MaxNewTokens = 160,
    temperature: o.Temperature = 0.7,
    top_p: o.TopP = 0.9,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Replies generated together.")] = 16,
    seed: o.Seed = 0,
    device: o.Device = "auto",
    force: o.Force = False,
    json_out: o.Json = False,
) -> None:
    """The base model's own replies to prompts, as JSONL (with a sidecar saying how it was made) that a recipe
    mixes into training (data.chat) so subnets keep the instruct model's chat manners. A prompt file's dev
    tenth (chosen by a hash of each prompt) is held apart for the chat metrics unless --part says otherwise."""
    from edgekit.elastic.teacher_data import (
        DEV_SHARE,
        TeacherSettings,
        api_prompts,
        make_teacher_data,
        prompts_from_file,
        prompts_from_text,
    )
    from edgekit.progress import bar

    if from_text is None and prompts is None:
        raise UsageError("give a prompt source: --prompts FILE, --from-text CORPUS, or both")
    o.refuse_existing(out_file, force)
    asked: list[str] = []
    sources = []
    if prompts is not None:
        taken = prompts_from_file(prompts, count or 10**9, part)
        if not taken:
            raise UsageError(f"{prompts} has no prompts in its {part} part")
        asked += taken
        sources.append(f"{prompts} ({part} part, {len(taken)} prompts)")
    if from_text is not None and headings:
        made = prompts_from_text(from_text, headings, seed)
        asked += made
        sources.append(f"{from_text} (headings, {len(made)} prompts)")
    if from_text is not None and api:
        made = api_prompts(from_text, api, seed)
        asked += made
        sources.append(f"{from_text} (API, {len(made)} prompts)")
    if api and from_text is None:
        raise UsageError("--api makes questions from --from-text's corpus: give --from-text")
    asked = list(dict.fromkeys(asked))
    settings = TeacherSettings(max_new_tokens, temperature, top_p, batch_size, seed, samples)
    split = {"part": part, "dev_share": DEV_SHARE, "rule": "sha256(prompt)[:8] < share"} if prompts else None
    with bar() as progress:
        task = progress.add_task(f"teacher replies ({model or DEFAULT_MODEL})", total=len(asked))
        meta = make_teacher_data(out_file, asked, "; ".join(sources), model or DEFAULT_MODEL, settings, device,
                                 on_batch=lambda n: progress.advance(task, n), split=split)  # fmt: skip
    if json_out:
        print_json({"out": str(out_file), **meta})
        return
    out.print(f"{meta['rows']} replies ({meta['finished']} ended their turn) to {len(asked)} prompts in "
              f"{meta['seconds']:.0f} s -> {out_file}")  # fmt: skip
    out.print(f"mix them into training with: data.chat={out_file} data.chat_fraction=0.5")
