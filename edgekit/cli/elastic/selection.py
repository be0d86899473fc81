"""`edgekit elastic plan` and `edgekit elastic show`: over edgekit.elastic.selection and edgekit.elastic.plan."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgekit.cli import options as o
from edgekit.cli.console import out, print_json
from edgekit.elastic.predictor import DEV_TOKENS, HELD_OUT
from edgekit.models.registry import DEFAULT_MODEL
from edgekit.shapes import DEFAULT_FFN_FLOOR


def plan_cmd(
    calib: o.CalibRequired,
    out_dir: o.OutRequired,
    model: o.Model = DEFAULT_MODEL,
    method: Annotated[str, typer.Option("--method", help="Depth: amoeba (DP), shortgpt, angular, last.")] = "amoeba",
    scorer: Annotated[str, typer.Option("--scorer", help="DP scorer: ppl, angular, block-influence.")] = "ppl",
    width_method: Annotated[
        str, typer.Option("--width-method", help="Width ranking: flap, magnitude, activation.")
    ] = "flap",
    calib_tokens: Annotated[int, typer.Option("--calib-tokens", min=16, help="Tokens the depth scorer reads.")] = 1024,
    width_tokens: Annotated[int, typer.Option("--width-tokens", min=16, help="Tokens for channel statistics.")] = 8192,
    seq_len: Annotated[int, typer.Option("--seq-len", min=8, help="Calibration sequence length.")] = 128,
    min_depth: Annotated[
        int | None, typer.Option("--min-depth", help="Smallest depth offered (default: half the layers).")
    ] = None,
    ffn_floor: Annotated[
        int,
        typer.Option("--ffn-floor", min=1, max=100, help="Narrowest FFN offered, in percent of the channels."),
    ] = DEFAULT_FFN_FLOOR,
    predictor_text: Annotated[
        Path | None,
        typer.Option(
            "--predictor-text",
            help="Dev text the accuracy predictor is fitted on (default: the "
            "calibration text past the tokens planning read; skipped with a note if it is too short).",
        ),
    ] = None,  # fmt: skip
    predictor_tokens: Annotated[
        int, typer.Option("--predictor-tokens", min=0, help="Dev tokens per predictor shape; 0: fit no predictor.")
    ] = DEV_TOKENS,
    force: o.Force = False,
    json_out: o.Json = False,
) -> None:
    """Select the layers of every depth (AmoebaLLM's DP), rank every layer's FFN channels and query heads, and
    fit the accuracy predictor of the whole space; write a plan folder."""
    from edgekit.artifacts import atomic_dir
    from edgekit.cli.elastic.predictor import shape_progress
    from edgekit.elastic.plan import save_plan
    from edgekit.elastic.predictor import fit_source, save
    from edgekit.elastic.selection import PlanRequest, build_plan
    from edgekit.elastic.source import Source
    from edgekit.errors import UsageError
    from edgekit.progress import bar

    o.refuse_existing(out_dir, force)
    req = PlanRequest(model or DEFAULT_MODEL, calib, method, scorer, width_method, calib_tokens, width_tokens,
                      seq_len, min_depth, ffn_floor)  # fmt: skip
    start = time.perf_counter()
    with bar() as progress:
        task = progress.add_task("preparing", total=None)
        plan, perms = build_plan(
            req,
            on_stage=lambda label: progress.update(task, description=label),
            on_call=lambda: progress.advance(task),
            on_total=lambda total: progress.update(task, total=total or None, completed=0),
        )
    fitted, note, fit_seconds = None, None, 0.0
    with atomic_dir(out_dir, replace=force) as tmp:
        save_plan(plan, perms, tmp)
        if predictor_tokens:
            plan.path = tmp  # the predictor evaluates shapes cut from the plan being written
            fit_start = time.perf_counter()
            try:
                with bar() as progress:
                    on_shape = shape_progress(progress, plan, HELD_OUT)
                    fitted = fit_source(Source(plan, None, f"plan {plan.name}"), predictor_text or calib,
                                        predictor_tokens, on_shape=on_shape)  # fmt: skip
            except UsageError as exc:
                if predictor_text is not None:
                    raise
                note = (f"no accuracy predictor: {exc}. Fit one with `edgekit elastic predictor --plan {out_dir} "
                        "--dev-text FILE`")  # fmt: skip
            if fitted is not None:
                save(fitted, tmp)
            fit_seconds = time.perf_counter() - fit_start
    plan.path = out_dir
    seconds = time.perf_counter() - start
    if json_out:
        extra = {
            "predictor": fitted.to_dict() if fitted else None,
            "predictor_note": note,
            "predictor_seconds": round(fit_seconds, 1),
        }
        print_json({**plan.to_json(), "path": str(out_dir), "wall_seconds": round(seconds, 1), **extra})
        return
    print_plan(plan, predictor=fitted is not None)
    if note:
        out.print(f"[yellow]{note}[/yellow]")
    out.print(
        f"{plan.depth.scorer_calls} scorer calls, depth selection {plan.depth.seconds:.0f} s, "
        f"width ranking {plan.width.seconds:.0f} s, accuracy predictor {fit_seconds:.0f} s, {seconds:.0f} s in all; "
        f"plan written to {out_dir}"
    )


def show_cmd(
    plan: Annotated[str, typer.Argument(help="Plan: a folder from `edgekit elastic plan`, or a shipped one's name.")],
    json_out: o.Json = False,
) -> None:
    """Print a plan: layer sets per depth, calibration scores, widths and how they map to heads/channels."""
    from edgekit.elastic.plan import load_plan

    p = load_plan(plan)
    if json_out:
        print_json({**p.to_json(), "path": str(p.path)})
        return
    print_plan(p)


def print_plan(plan: Any, predictor: bool = True) -> None:
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
    space = plan.space()
    widths = Table(title=f"widths: {plan.ranges().split(', ', 1)[-1]}; {len(space):,} shapes in all. The default grid:")
    for col in ("width", "shape at full depth", "FFN channels", "heads (q x kv groups)", "params at full depth"):
        widths.add_column(col, justify="right")
    full = g.non_embedding_params(plan.full)
    for w in plan.width.grid:
        shape = g.coupled(n, w)
        dims = g.dims(shape)
        p = g.non_embedding_params(shape)
        heads = f"{dims.num_heads} ({dims.heads_per_group} x {dims.num_kv_heads})"
        widths.add_row(f"w{w}", shape.name, str(dims.ffn), heads, f"{p / 1e6:.1f} M ({p / full:.0%})")
    out.print(widths)
    if predictor and plan.path is not None:
        from edgekit.elastic.predictor import load

        found = load(plan.path, plan)
        if found is not None:
            out.print(f"accuracy: {found.describe()}")
        else:
            out.print(f"[dim]no accuracy predictor: fit one with `edgekit elastic predictor --plan {plan.path} "
                      "--dev-text FILE`[/dim]")  # fmt: skip
