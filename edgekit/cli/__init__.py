"""The `edgekit` command: a thin Typer layer over the library, one module per command, named like the
library module it calls. Every flag is declared once, in `options`."""

from edgekit.cli.app import app, main

__all__ = ["app", "main"]
