"""`edgekit doctor`: over edgekit.hardware.doctor."""

from __future__ import annotations

from typing import Annotated

import typer

from edgekit.cli import options as o
from edgekit.cli.console import out, print_json


def doctor(
    json_out: o.Json = False,
    no_bench: Annotated[bool, typer.Option("--no-bench", help="Skip the bandwidth and matmul measurements.")] = False,
) -> None:
    """What this host is and what it can do: device, memory, measured bandwidth and compute, runtimes."""
    from edgekit.hardware.doctor import render, run_doctor

    if json_out:
        print_json(run_doctor(benchmark=not no_bench))
        return
    with out.status("measuring memory bandwidth and matmul throughput…"):
        report = run_doctor(benchmark=not no_bench)
    for block in render(report):
        out.print(block)
