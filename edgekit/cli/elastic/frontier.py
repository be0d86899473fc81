"""`edgekit elastic frontier`: over edgekit.elastic.frontier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgekit.cli import options as o
from edgekit.cli.console import out, print_json
from edgekit.errors import UsageError


def frontier_cmd(
    plans: Annotated[
        list[str] | None,
        typer.Option("--plan", help="Plan: a folder from `edgekit elastic plan`, or a shipped one's name."),
    ] = None,
    shapes: o.Shapes = None,
    baselines: Annotated[
        str,
        typer.Option("--baselines", help="Also build and compare: shortgpt,angular,last,magnitude,activation, or all."),
    ] = "",
    calib: o.Calib = None,
    text: o.Text = None,
    mc: o.MultipleChoice = None,
    labels: o.Labels = None,
    limit: o.Limit = None,
    text_tokens: o.TextTokens = 16384,
    max_length: o.MaxLength = 512,
    stride: o.Stride = 512,
    base_model: o.BaseModel = None,
    space: Annotated[
        bool,
        typer.Option(
            "--space",
            help="The whole space's predicted and measured frontier against the coupled grid, "
            "depth only and width only (needs the plan's or checkpoint's accuracy predictor).",
        ),  # fmt: skip
    ] = False,
    elastic: o.Elastic = None,
    target: o.TargetOptional = None,
    runtime: o.Runtime = None,
    precision: o.Precision = None,
    points: Annotated[int, typer.Option("--points", min=2, help="With --space: shapes measured per line.")] = 8,
    png: Annotated[Path | None, typer.Option("--png", help="Write the accuracy-size plot here.")] = None,
    json_out: o.Json = False,
) -> None:
    """Accuracy against size of plan shapes (--plan, repeatable; default: the default model's), ours against
    baselines derived from the first plan; or (--space) the whole space's frontier against the coupled grid
    and one axis at a time, against parameters or (--target) predicted ms/token there: a table, a terminal
    plot and a PNG. Perplexity on the plan's calibration text skips the tokens planning read."""
    from edgekit.elastic.frontier import compare, plot_png, plot_terminal
    from edgekit.elastic.plan import load_plan
    from edgekit.elastic.selection import DEPTH_BASELINES, WIDTH_BASELINES
    from edgekit.evaluation.settings import EvalData, EvalSettings

    if text is None and mc is None:
        raise UsageError("nothing to evaluate: give --text FILE (perplexity) and/or --mc FILE (multiple choice)")
    settings = EvalSettings(
        str(text) if text else None, text_tokens or 16384, max_length, stride, mc=str(mc) if mc else None,
        mc_labels=str(labels) if labels else None, mc_limit=limit,
    )  # fmt: skip
    if space:
        if len(plans or []) > 1 or baselines or shapes:
            raise UsageError("--space studies one plan or checkpoint: drop --shapes, --baselines and extra --plan")
        space_cmd(elastic, (plans or [None])[0], settings, target, runtime, precision, points, png, json_out)
        return
    if elastic or target:
        raise UsageError("--elastic and --target go with --space")
    loaded = [load_plan(p) for p in plans or ["smollm2-135m"]]
    first = loaded[0]
    grid = first.grid(shapes)
    kinds = [k.strip() for k in baselines.split(",") if k.strip()]
    if kinds == ["all"]:
        kinds = list(DEPTH_BASELINES + WIDTH_BASELINES)
    if kinds and calib is None:
        raise UsageError("--baselines needs --calib: the calibration text the plan was made with")
    EvalData.load(settings, first)  # a bad file fails now, before any baseline is built
    from edgekit.progress import bar

    with bar() as progress:
        task = progress.add_task("preparing", total=None)
        points = compare(
            loaded, grid, settings, kinds, calib, base_model,
            on_stage=lambda label: progress.update(task, description=label),
            on_total=lambda total: progress.update(task, description="evaluating", total=total, completed=0),
            on_point=lambda _p: progress.advance(task),
        )  # fmt: skip
    if png is not None:
        plot_png(points, png, f"{first.model.name}: accuracy vs size, no fine-tuning")
    evaluation = {
        "text": str(text) if text else None, "skip_tokens": first.held_out_skip(text) if text else 0,
        "max_tokens": settings.text_max_tokens, "windows": f"{max_length}/{stride}", "mc": str(mc) if mc else None,
        "items": limit,
    }  # fmt: skip
    result = {"model": first.model.name, "evaluation": evaluation, "points": [p.to_dict() for p in points]}
    if json_out:
        print_json(result)
        return
    print_points(points, evaluation)
    out.print(plot_terminal(points, "ppl" if text is not None else "acc_norm"), markup=False, highlight=False)
    if png is not None:
        out.print(f"plot written to {png}")


def space_cmd(
    elastic: str | None,
    plan: str | None,
    settings: Any,
    target: str | None,
    runtime: str | None,
    precision: str | None,
    points: int,
    png: Path | None,
    json_out: bool,
) -> None:
    from edgekit.elastic import space
    from edgekit.elastic.source import Source
    from edgekit.evaluation.settings import EvalData
    from edgekit.progress import bar

    source = Source.resolve(elastic, plan)
    EvalData.load(settings, source.plan)  # a bad file fails now
    x, note = None, ""
    if target is not None:
        from edgekit.deployment.resolve import lut_for, resolve_target

        lut, _ = lut_for(resolve_target(target, runtime, precision), source.plan.model.name)
        x, note = (lambda s: lut.predict(s).decode_ms), f"{lut.key}, {lut.status}"
    with bar() as progress:
        task = progress.add_task("evaluating", total=None)
        study = space.study(
            source, settings, x, note, points,
            on_total=lambda total: progress.update(task, total=total),
            on_point=lambda p: progress.update(task, advance=1, description=f"evaluated {p.shape}"),
        )  # fmt: skip
    if png is not None:
        space.plot_png(study, png, f"{source.name}: the whole space against the coupled grid ({source.label})")
    if json_out:
        print_json({"source": source.label, **study.to_dict(), "png": str(png) if png else None})
        return
    print_space(study)
    out.print(space.plot_terminal(study), markup=False, highlight=False)
    if png is not None:
        out.print(f"plot written to {png}")


def print_space(study: Any) -> None:
    scale, unit = (1e-6, "M params") if study.x == "params" else (1.0, "ms/token")
    table = Table(title=f"measured along each line ({len(study.predicted)} shapes on the predicted frontier)")
    for col in ("line", "shape", unit, "params", "ppl", "predicted", "acc_norm"):
        table.add_column(col, justify="left" if col in ("line", "shape") else "right")
    for p in study.measured:
        acc = "-" if p.acc_norm is None else f"{p.acc_norm:.3f}"
        table.add_row(p.label, p.shape, f"{p.x * scale:.3g}", f"{p.param_fraction:.0%}", f"{p.ppl:.4g}",
                      f"{p.predicted_ppl:.4g}", acc)  # fmt: skip
    out.print(table)
    out.print(f"[dim]accuracy: {study.predictor}[/dim]")
    if study.x_note:
        out.print(f"[dim]x: predicted ms/token from {study.x_note}[/dim]")


def print_points(points: list[Any], evaluation: dict[str, Any]) -> None:
    table = Table(title="accuracy vs size (no fine-tuning)")
    for col in ("method (depth/width)", "shape", "params", "ppl", "acc", "acc_norm", "s"):
        table.add_column(col, justify="left" if col.startswith("method") else "right")

    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for p in sorted(points, key=lambda p: (-p.params, p.label)):
        size = f"{p.params / 1e6:.1f} M ({p.param_fraction:.0%})"
        cells = (fmt(p.ppl, ".2f"), fmt(p.acc, ".3f"), fmt(p.acc_norm, ".3f"), f"{p.seconds:.0f}")
        table.add_row(p.label + (" *" if p.shared_with else ""), p.shape, size, *cells)
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
