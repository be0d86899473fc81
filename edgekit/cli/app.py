"""The Typer app: every command registered, and our errors printed as one line with their exit code."""

from __future__ import annotations

import sys

import typer

from edgekit.cli import chat, container, deploy, doctor, elastic, export, generate, models, profile, serve, targets
from edgekit.cli.console import err
from edgekit.cli.evaluation import eval_cmd
from edgekit.errors import EdgekitError

INTERRUPTED = 130

app = typer.Typer(
    name="edgekit",
    help="One elastic checkpoint, the right subnet for every edge device under a latency budget.",
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("doctor")(doctor.doctor)
app.command("generate")(generate.generate_cmd)
app.command("eval")(eval_cmd)
app.command("profile")(profile.profile_cmd)
app.command("deploy")(deploy.deploy_cmd)
app.command("targets")(targets.targets_cmd)
app.command("chat")(chat.chat_cmd)
app.command("serve")(serve.serve_cmd)
app.add_typer(models.app, name="models")
app.add_typer(elastic.app, name="elastic")
app.add_typer(container.app, name="container")
app.add_typer(export.app, name="export")


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        from edgekit import __version__

        typer.echo(__version__)
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


def main(argv: list[str] | None = None) -> None:
    # Typer's standalone mode shows usage errors and help itself and turns Ctrl-C into exit 130;
    # our own errors pass through it untouched and are printed here as one line.
    try:
        app(args=argv, prog_name="edgekit")
    except EdgekitError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", markup=True, highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(_interrupted())
    except SystemExit as exc:
        if exc.code == INTERRUPTED:
            _interrupted()
        raise


def _interrupted() -> int:
    err.print("interrupted: nothing was left half-written")
    return INTERRUPTED
