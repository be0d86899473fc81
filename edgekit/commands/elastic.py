"""`edgekit elastic ...`: plan, show, extract, frontier."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from edgekit.console import err, out, print_json
from edgekit.errors import UsageError
from edgekit.registry import DEFAULT_MODEL

app = typer.Typer(help="Elastic subnets: plan layer sets and nested widths, cut shapes, compare methods.")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


@app.command("plan")
def plan_cmd(
    calib: Path = typer.Option(..., "--calib", help="Calibration text file (plain text)."),
    out_dir: Path = typer.Option(..., "--out", help="Plan folder to write."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Cache name, local HF folder or hub id."),
    method: str = typer.Option("amoeba", "--method", help="Depth: amoeba (DP), shortgpt, angular, last."),
    scorer: str = typer.Option("ppl", "--scorer", help="DP scorer: ppl, angular, block-influence."),
    width_method: str = typer.Option("flap", "--width-method", help="Width ranking: flap, magnitude, activation."),
    calib_tokens: int = typer.Option(1024, "--calib-tokens", min=16, help="Tokens the depth scorer reads."),
    width_tokens: int = typer.Option(8192, "--width-tokens", min=16, help="Tokens for channel statistics."),
    seq_len: int = typer.Option(128, "--seq-len", min=8, help="Calibration sequence length."),
    min_depth: int | None = typer.Option(None, "--min-depth", help="Smallest depth offered (default: half)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing plan folder."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Select layers for every depth (DP) and rank widths; write a plan folder."""
    from edgekit.artifacts import atomic_dir
    from edgekit.elastic.plan import save_plan
    from edgekit.elastic.planner import PlanRequest, build_plan

    if out_dir.exists() and not force:
        raise UsageError(f"{out_dir} exists: pass --force to replace it")
    req = PlanRequest(model, calib, method, scorer, width_method, calib_tokens, width_tokens, seq_len, min_depth)
    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task("preparing", total=None)
        plan, perms = build_plan(
            req,
            on_stage=lambda label: progress.update(task, description=label),
            on_call=lambda: progress.advance(task),
            on_total=lambda total: progress.update(task, total=total or None, completed=0),
        )
    with atomic_dir(out_dir, replace=force) as tmp:
        save_plan(plan, perms, tmp)
    seconds = time.perf_counter() - start
    if json_out:
        print_json({**plan.to_json(), "path": str(out_dir), "wall_seconds": round(seconds, 1)})
        return
    _print_plan(plan)
    out.print(
        f"{plan.depth.scorer_calls} scorer calls, depth selection {plan.depth.seconds:.0f} s, "
        f"width ranking {plan.width.seconds:.0f} s, {seconds:.0f} s in all; plan written to {out_dir}"
    )


@app.command("show")
def show_cmd(
    plan: str = typer.Argument(..., help="Plan folder or shipped plan name."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Print a plan: layer sets per depth, calibration scores, widths and how they map to heads/channels."""
    from edgekit.elastic.plan import load_plan

    p = load_plan(plan)
    if json_out:
        print_json({**p.to_json(), "path": str(p.path)})
        return
    _print_plan(p)


def _print_plan(plan: Any) -> None:
    g = plan.geometry
    n = g.num_layers
    out.print(
        f"[bold]{plan.name}[/bold]  model {plan.model.name} ({plan.model.architecture}, weights "
        f"{plan.model.digest[:12]})  depth: {plan.depth.method}"
        + (f"/{plan.depth.scorer}" if plan.depth.method == "amoeba" else "")
        + f"  width: {plan.width.method}  calibration: {plan.calibration.file} "
        f"({plan.calibration.depth_tokens} / {plan.calibration.width_tokens} tokens)"
    )
    table = Table(title="layer sets (full width)")
    table.add_column("depth", justify="right")
    table.add_column("removed layers")
    table.add_column("calib ppl", justify="right")
    for d in sorted(plan.layer_sets, reverse=True):
        removed = sorted(set(range(n)) - set(plan.layer_sets[d]))
        table.add_row(str(d), " ".join(map(str, removed)) or "-", f"{plan.depth.scores[d]:.2f}")
    out.print(table)
    widths = Table(title=f"widths (any of w{plan.width.min_width}..w100; default grid below)")
    for col in ("width", "FFN channels", "heads (q x kv groups)", "params at full depth"):
        widths.add_column(col, justify="right")
    full = g.non_embedding_params(plan.full)
    for w in plan.width.grid:
        dims = g.dims(w)
        p = g.non_embedding_params(type(plan.full)(n, w))
        widths.add_row(
            f"w{w}",
            str(dims.ffn),
            f"{dims.num_heads} ({dims.heads_per_group} x {dims.num_kv_heads})",
            f"{p / 1e6:.1f} M ({p / full:.0%})",
        )
    out.print(widths)


@app.command("extract")
def extract_cmd(
    plan: str = typer.Option(..., "--plan", help="Plan folder or shipped plan name."),
    shape: str = typer.Option(..., "--shape", help="Shape to cut, e.g. d20-w75, or 'full'."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the Hugging Face checkpoint."),
    model: str | None = typer.Option(None, "--model", "-m", help="Base model (default: the plan's)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write one shape of a plan as a standard Hugging Face checkpoint."""
    from dataclasses import asdict

    from edgekit.elastic.base import base_folder
    from edgekit.elastic.extract import extract
    from edgekit.elastic.plan import load_permutations, load_plan

    start = time.perf_counter()
    p = load_plan(plan)
    s = p.shape(shape)
    if out_dir.exists() and not force:
        raise UsageError(f"{out_dir} exists: pass --force to replace it")
    base = base_folder(p, model)
    info = extract(p, load_permutations(p), base, s, out_dir, force=force)
    seconds = time.perf_counter() - start
    if json_out:
        print_json({**asdict(info), "path": str(out_dir), "seconds": round(seconds, 3)})
        return
    out.print(
        f"{info.shape}: {len(info.layers)} layers, FFN {info.intermediate_size}, {info.num_heads} heads "
        f"({info.num_kv_heads} KV), {info.parameters / 1e6:.1f} M parameters "
        f"({info.non_embedding_parameters / 1e6:.1f} M non-embedding) -> {out_dir} in {seconds:.2f} s"
    )


@app.command("frontier")
def frontier_cmd(
    plans: list[str] = typer.Option(["smollm2-135m"], "--plan", help="Plan(s) to compare (repeatable)."),
    shapes: str | None = typer.Option(None, "--shapes", help="Grid, e.g. 'd30,24,20,15 x w100,82,61,48'."),
    baselines: str = typer.Option(
        "", "--baselines", help="Also build and compare: shortgpt,angular,last,magnitude,activation, or 'all'."
    ),
    calib: Path | None = typer.Option(None, "--calib", help="The plan's calibration text (needed for baselines)."),
    text: Path | None = typer.Option(None, "--text", help="Text for perplexity (held-out part if it is the calib)."),
    mc: Path | None = typer.Option(None, "--mc", help="Multiple-choice JSONL (PIQA layout)."),
    labels: Path | None = typer.Option(None, "--labels", help="PIQA labels file."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Score only the first N items."),
    max_tokens: int = typer.Option(16384, "--max-tokens", min=2, help="Perplexity token budget."),
    max_length: int = typer.Option(512, "--max-length", min=2, help="Perplexity window."),
    stride: int = typer.Option(512, "--stride", min=1, help="Perplexity window step."),
    model: str | None = typer.Option(None, "--model", "-m", help="Base model (default: the plan's)."),
    png: Path | None = typer.Option(None, "--png", help="Write the accuracy-size plot here."),
    json_out: bool = typer.Option(False, "--json", help="Print the points as JSON."),
) -> None:
    """Accuracy vs size of plan shapes, ours against baselines: a table, a terminal plot and a PNG."""
    from edgekit.elastic.frontier import EvalSettings, compare, plot_png, plot_terminal
    from edgekit.elastic.plan import load_plan
    from edgekit.elastic.planner import DEPTH_BASELINES, WIDTH_BASELINES
    from edgekit.evaluate import load_piqa, read_text

    if text is None and mc is None:
        raise UsageError("nothing to evaluate: give --text FILE (perplexity) and/or --mc FILE (multiple choice)")
    loaded = [load_plan(p) for p in plans]
    first = loaded[0]
    grid = first.grid(shapes)
    kinds = [k.strip() for k in baselines.split(",") if k.strip()]
    if kinds == ["all"]:
        kinds = list(DEPTH_BASELINES + WIDTH_BASELINES)
    if kinds and calib is None:
        raise UsageError("--baselines needs --calib: the calibration text the plan was made with")
    corpus = read_text(text) if text is not None else None
    items = load_piqa(mc, labels=labels, limit=limit) if mc is not None else None
    skip = 0
    if text is not None:
        from edgekit.artifacts import sha256_file

        if sha256_file(text) == first.calibration.sha256:
            skip = max(first.calibration.depth_tokens, first.calibration.width_tokens)  # held-out part only
    settings = EvalSettings(corpus, skip, max_tokens, max_length, stride, items)

    with _progress() as progress:
        task = progress.add_task("preparing", total=None)
        points = compare(
            loaded,
            grid,
            settings,
            kinds,
            calib,
            model,
            on_stage=lambda label: progress.update(task, description=label),
            on_total=lambda total: progress.update(task, description="evaluating", total=total, completed=0),
            on_point=lambda _p: progress.advance(task),
        )
    if png is not None:
        plot_png(points, png, f"{first.model.name}: accuracy vs size, no fine-tuning")
    result = {
        "model": first.model.name,
        "evaluation": {
            "text": str(text) if text else None,
            "skip_tokens": skip,
            "max_tokens": max_tokens,
            "windows": f"{max_length}/{stride}",
            "mc": str(mc) if mc else None,
            "items": len(items) if items else 0,
        },
        "points": [p.to_dict() for p in points],
    }
    if json_out:
        print_json(result)
        return
    _print_points(points, result["evaluation"])
    metric = "ppl" if corpus is not None else "acc_norm"
    out.print(plot_terminal(points, metric), markup=False, highlight=False)
    if png is not None:
        out.print(f"plot written to {png}")


def _print_points(points: list[Any], evaluation: dict[str, Any]) -> None:
    table = Table(title="accuracy vs size (no fine-tuning)")
    for col in ("method (depth/width)", "shape", "params", "ppl", "acc", "acc_norm", "s"):
        table.add_column(col, justify="left" if col.startswith("method") else "right")
    for p in sorted(points, key=lambda p: (-p.params, p.label)):
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        table.add_row(
            p.label + (" *" if p.shared_with else ""),
            p.shape,
            f"{p.params / 1e6:.1f} M ({p.param_fraction:.0%})",
            fmt(p.ppl, ".2f"),
            fmt(p.acc, ".3f"),
            fmt(p.acc_norm, ".3f"),
            f"{p.seconds:.0f}",
        )
    out.print(table)
    notes = []
    if evaluation["text"]:
        notes.append(
            f"ppl: {Path(evaluation['text']).name}, {evaluation['max_tokens']} tokens after the first "
            f"{evaluation['skip_tokens']} (held out from calibration), windows {evaluation['windows']}"
        )
    if evaluation["mc"]:
        notes.append(f"acc/acc_norm: {Path(evaluation['mc']).name}, {evaluation['items']} items, zero-shot")
    notes.append("* the same network as another row's (identical layers and channels), evaluated once")
    for n in notes:
        out.print(f"[dim]{n}[/dim]")
