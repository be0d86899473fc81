"""The Typer app: every command registered, and our errors printed as one line with their exit code."""

from __future__ import annotations

import os
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
    rehash: bool = typer.Option(
        False, "--rehash", help="Hash every file an artifact lists again, ignoring the remembered hashes."
    ),
) -> None:
    if rehash:
        from edgekit.artifacts import REHASH_ENV

        os.environ[REHASH_ENV] = "1"
    if version:
        from edgekit import __version__

        typer.echo(__version__)
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


# Click's usage error, as the Typer in use vendors it (its own copy of Click in 0.29, Click itself before)
UsageError = typer.BadParameter.__mro__[1]


def main(argv: list[str] | None = None) -> None:
    # transformers draws a tqdm bar per model load ("Loading weights"), several per deploy, between our own rich
    # progress lines; HF_HUB_DISABLE_PROGRESS_BARS=0 brings them back
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Click's own errors (a missing argument, a value out of range, an unknown option) are printed here as one
    # line, as ours are, instead of Typer's boxed panel: Click parses, we only render.
    try:
        # outside standalone mode an Exit (Ctrl-C becomes Exit(130) inside Typer) comes back as its code
        code = app(args=argv, prog_name="edgekit", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(_interrupted() if code == INTERRUPTED else code)
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a command group given no command: its help, as Click does
            exc.show()
            sys.exit(exc.exit_code)
        where = exc.ctx.command_path if exc.ctx is not None else "edgekit"
        err.print(f"[bold red]error:[/bold red] {exc.format_message()} (see {where} --help)", markup=True,
                  highlight=False)  # fmt: skip
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(_interrupted())
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:
        err.print(f"[bold red]error:[/bold red] {exc.format_message()}", markup=True, highlight=False)
        sys.exit(exc.exit_code)
    except EdgekitError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", markup=True, highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(_interrupted())
    except OSError as exc:  # a full disk, wherever it struck: one line, as every other failure of the host
        import errno

        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        err.print(f"[bold red]error:[/bold red] no space left on the device ({exc.filename or 'writing'})",
                  markup=True, highlight=False)  # fmt: skip
        sys.exit(5)
    except SystemExit as exc:
        if exc.code == INTERRUPTED:
            _interrupted()
        raise


def _interrupted() -> int:
    err.print("interrupted: nothing was left half-written")
    return INTERRUPTED
