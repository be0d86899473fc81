"""`edgekit elastic router`: over edgekit.routing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgekit.cli import options as o
from edgekit.cli.console import err, out, print_json
from edgekit.errors import UsageError

Menu = Annotated[
    str,
    typer.Option(
        "--menu",
        help="The shapes the router chooses among (a comma list), or auto: the best ranked shape fitting 55, 70, "
        "85 and 100 % of the full model's latency on --target.",
    ),
]


def router_cmd(
    elastic: o.Elastic = None,
    plan: o.Plan = None,
    prompts: o.Prompts = None,
    menu: Menu = "auto",
    target: o.Target = "host",
    limit: Annotated[
        int | None, typer.Option("--max-prompts", min=10, help="Fit on at most this many router prompts.")
    ] = None,
    out_dir: o.Out = None,
    show_dir: Annotated[Path | None, typer.Option("--show", help="Show a fitted router's folder instead.")] = None,
    json_out: o.Json = False,
) -> None:
    """Fit Flextron's input-adaptive router for an elastic checkpoint: each menu shape's loss on the full model's
    replies to part of --prompts' held-apart dev prompts, predicted from the prompt; checked on held-out folds and
    stored (default: $EDGEKIT_HOME/routers/CHECKPOINT) for `deploy --adaptive`; an auto menu is chosen on
    --target's LUT."""
    from edgekit.elastic.source import Source
    from edgekit.routing import default_dir, fit_router
    from edgekit.routing import router as router_io

    if show_dir is not None:
        fitted, _ = router_io.load(show_dir)
        show(fitted, show_dir, json_out)
        return
    if prompts is None:
        raise UsageError("fitting a router needs --prompts FILE (or --show DIR to see one)")
    source = Source.resolve(elastic, plan)
    shapes = menu_shapes(source, menu, target)
    dest = out_dir or default_dir(source)
    with err.status("fitting the router…") as status:
        fitted, extractor, _ = fit_router(source, prompts, shapes, limit, lambda text: status.update(text))
    router_io.save(fitted, extractor, dest)
    show(fitted, dest, json_out)


def menu_shapes(source: Any, menu: str, target: str) -> list[Any]:
    from edgekit.deployment.resolve import lut_for, resolve_target
    from edgekit.routing.menu import auto_menu, parse_menu

    if menu != "auto":
        return parse_menu(source, menu)
    res = resolve_target(target, None, None)
    lut, _ = lut_for(res, source.plan.model.name)
    shapes = auto_menu(source, lut)
    if len(shapes) < 2:
        raise UsageError(f"the auto menu on {target} has one shape ({shapes[0].name}): name shapes with --menu")
    return shapes


def show(fitted: Any, path: Path, json_out: bool) -> None:
    if json_out:
        print_json({**fitted.to_json(), "path": str(path)})
        return
    s = fitted.stats
    out.print(f"router for {fitted.identity['checkpoint']}: {len(fitted.menu)} shapes, fitted on {s['prompts']} "
              f"prompts, features from {s.get('layers', '?')} shared layers")  # fmt: skip
    table = Table(title="each shape's loss on the full model's replies, predicted on held-out folds")
    for col in ("shape", "mean abs error (nats/token)", "rank correlation"):
        table.add_column(col, justify="left" if col == "shape" else "right")
    for i, name in enumerate(fitted.menu):
        row = s["per_shape"][str(i)]
        table.add_row(name, f"{row['mae']:.3f}", f"{row['spearman']:.3f}")
    out.print(table)
    out.print(f"the predicted best shape is the best on {s['best_found']:.0%} of held-out prompts, giving up "
              f"{s['regret']:.3f} nats/token against always knowing; written to {path}")  # fmt: skip
