"""`edgekit elastic ...`: one module per library module it drives (selection, predictor, extract, frontier,
train, trim, teacher_data, checkpoint)."""

from __future__ import annotations

import typer

from edgekit.cli.elastic import checkpoint, extract, frontier, predictor, router, selection, teacher_data, train, trim

app = typer.Typer(
    help="Elastic subnets: plan layer sets and nested widths, cut shapes, compare methods, train one-for-all.",
    no_args_is_help=True,
)
app.command("plan")(selection.plan_cmd)
app.command("show")(selection.show_cmd)
app.command("predictor")(predictor.predictor_cmd)
app.command("router")(router.router_cmd)
app.command("extract")(extract.extract_cmd)
app.command("frontier")(frontier.frontier_cmd)
app.command("train")(train.train_cmd)
app.command("trim")(trim.trim_cmd)
app.command("evaluate")(train.evaluate_cmd)
app.command("teacher-data")(teacher_data.teacher_data_cmd)
app.command("list")(checkpoint.list_cmd)
