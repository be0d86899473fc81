"""The `edgekit` command: a thin Typer layer over the library. Errors become one line on stderr."""

from __future__ import annotations

import sys

import click
import typer

from edgekit.commands import doctor, generate, models
from edgekit.console import err
from edgekit.errors import EdgekitError

INTERRUPTED = 130

app = typer.Typer(
    name="edgekit",
    help="One elastic checkpoint, the right subnet for every edge device under a latency budget.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("doctor")(doctor.doctor)
app.command("generate")(generate.generate_cmd)
app.add_typer(models.app, name="models")


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from edgekit import __version__

        typer.echo(__version__)
        raise typer.Exit()


def main(argv: list[str] | None = None) -> None:
    try:
        rv = app(args=argv, standalone_mode=False)
    except EdgekitError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", markup=True, highlight=False)
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()  # no_args_is_help: show the help, as plain `edgekit` should
        sys.exit(0)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        rv = INTERRUPTED
    if rv == INTERRUPTED:  # Typer turns Ctrl-C into a bare exit code 130
        err.print("interrupted: nothing was left half-written")
    sys.exit(rv if isinstance(rv, int) else 0)
