"""`edgekit doctor`: what this host is and what it can do, as one report (dict) and a rich rendering."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table

from edgekit import __version__
from edgekit.host import detect_host
from edgekit.microbench import measure
from edgekit.runtimes import detect_runtimes
from edgekit.target_registry import match_host


def run_doctor(benchmark: bool = True) -> dict[str, Any]:
    start = time.perf_counter()
    host = detect_host()
    matched = match_host(host)
    report: dict[str, Any] = {
        "edgekit_version": __version__,
        "host": host.to_dict(),
        "runtimes": [r.to_dict() for r in detect_runtimes()],
        "target": {
            "matched": matched.name if matched else None,
            "title": matched.title if matched else None,
            "note": None if matched else "no descriptor under targets/ matches; use --target host",
        },
        "measured": measure() if benchmark else None,
    }
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report


def render(report: dict[str, Any]) -> list[Any]:
    host = report["host"]
    cpu = host["cpu"]
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("kind", host["kind"])
    summary.add_row(
        "cpu",
        f"{cpu['model']} ({cpu['arch']}), {cpu['physical_cores']} cores / "
        f"{cpu['logical_cores']} threads, ISA {' '.join(cpu['isa']) or '-'}",
    )
    summary.add_row("memory", f"{host['memory_total_gb']:.1f} GB total, {host['memory_available_gb']:.1f} GB available")
    for gpu in host["gpus"]:
        summary.add_row(
            f"gpu {gpu['index']}",
            f"{gpu['name']}, sm_{gpu['compute_capability'].replace('.', '')}, "
            f"{gpu['memory_free_gb']:.1f}/{gpu['memory_total_gb']:.1f} GB free",
        )
    if host["jetson"]:
        j = host["jetson"]
        summary.add_row(
            "jetson",
            f"{j['board']}, L4T {j['l4t'] or '?'} (JetPack {j['jetpack'] or '?'}), "
            f"power mode {j['power_mode'] or 'unknown'}",
        )
    measured = report.get("measured")
    if measured:
        bw, mm = measured["memory_bandwidth"], measured["matmul"]
        summary.add_row(
            "bandwidth", f"{bw['value']:.1f} GB/s on {measured['device']} ({bw['method']}, spread {bw['spread_pct']}%)"
        )
        summary.add_row(
            "compute", f"{mm['value']:.1f} GFLOP/s on {measured['device']} ({mm['method']}, spread {mm['spread_pct']}%)"
        )
    target = report["target"]
    summary.add_row(
        "target", f"{target['matched']} ({target['title']})" if target["matched"] else f"none ({target['note']})"
    )

    runtimes = Table(title="runtimes", title_justify="left")
    for col in ("runtime", "package", "version", "offers"):
        runtimes.add_column(col)
    for rt in report["runtimes"]:
        offers = ", ".join(rt["offers"]) if rt["installed"] else f"[dim]not installed: {rt['note'] or ''}[/dim]"
        runtimes.add_row(rt["name"], rt["package"], rt["version"] or "-", offers)
    return [summary, runtimes]
