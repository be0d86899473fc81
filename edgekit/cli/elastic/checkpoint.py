"""`edgekit elastic list`: over edgekit.elastic.checkpoint."""

from __future__ import annotations

from rich.table import Table

from edgekit.cli import options as o
from edgekit.cli.console import out, print_json


def list_cmd(json_out: o.Json = False) -> None:
    """Elastic checkpoints: shipped with edgekit, and the user's (under $EDGEKIT_HOME/elastic and ./runs)."""
    from edgekit.elastic.checkpoint import list_checkpoints, user_dirs
    from edgekit.elastic.plan import shipped_plans

    rows = [entry.to_dict() for entry in list_checkpoints(user_dirs())]
    if json_out:
        print_json({"checkpoints": rows, "plans": shipped_plans()})
        return
    table = Table(title="elastic checkpoints")
    for col in ("name", "origin", "kind", "model", "steps", "accuracy table", "path"):
        table.add_column(col)
    for row in rows:
        kind = f"domain: {row['domain']}" if row["kind"] == "domain" else row["kind"]
        table.add_row(row["name"], row["origin"], kind, row["model"] or "[red]broken[/red]", str(row["steps"] or "-"),
                      "yes" if row["has_accuracy"] else "no", row["path"])  # fmt: skip
    out.print(table)
    out.print(f"[dim]shipped plans (stage 1, no fine-tuning): {', '.join(shipped_plans()) or 'none'}[/dim]")
