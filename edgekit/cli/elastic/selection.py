"""`edgekit elastic plan` and `edgekit elastic show`: over edgekit.elastic.selection and edgekit.elastic.plan."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from edgekit.cli import options as o
from edgekit.cli.console import out, print_json
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
    force: o.Force = False,
    json_out: o.Json = False,
) -> None:
    """Select the layers of every depth (AmoebaLLM's DP) and rank every layer's FFN channels and query heads;
    write a plan folder."""
    from edgekit.artifacts import atomic_dir
    from edgekit.elastic.plan import save_plan
    from edgekit.elastic.selection import PlanRequest, build_plan
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
    with atomic_dir(out_dir, replace=force) as tmp:
        save_plan(plan, perms, tmp)
    seconds = time.perf_counter() - start
    if json_out:
        print_json({**plan.to_json(), "path": str(out_dir), "wall_seconds": round(seconds, 1)})
        return
    print_plan(plan)
    out.print(
        f"{plan.depth.scorer_calls} scorer calls, depth selection {plan.depth.seconds:.0f} s, "
        f"width ranking {plan.width.seconds:.0f} s, {seconds:.0f} s in all; plan written to {out_dir}"
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


def print_plan(plan: Any) -> None:
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
    widths = Table(
        title=f"widths: FFN {plan.ranges().split(', FFN ')[1]}; {len(space):,} shapes in all. The default grid:"
    )
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
