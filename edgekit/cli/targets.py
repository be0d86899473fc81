"""`edgekit targets`: over edgekit.deployment.targets."""

from __future__ import annotations

from rich.table import Table

from edgekit.cli import options as o
from edgekit.cli.console import out, print_json


def targets_cmd(json_out: o.Json = False) -> None:
    """Known targets with their specs, runtimes and the LUTs available for them."""
    from edgekit.deployment.targets import catalog

    rows = catalog()
    if json_out:
        print_json(rows)
        return
    table = Table(title="targets")
    for col in ("name", "aliases", "title", "bandwidth", "runtimes", "LUTs"):
        table.add_column(col)
    for r in rows:
        bw = f"{r['bandwidth_gbs']:g} GB/s" if r["bandwidth_gbs"] else "-"
        table.add_row(r["name"], ", ".join(r["aliases"]), r["title"], bw, ", ".join(r["runtimes"]),
                      "\n".join(r["luts"]) or "-")  # fmt: skip
    out.print(table)
