"""`edgekit doctor`: what this host is and what it can do, as one report (dict) and a rich rendering."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from edgekit import __version__
from edgekit.deployment.targets import match_host
from edgekit.engines import probe_all
from edgekit.hardware.host import detect_host
from edgekit.hardware.microbench import measure


def run_doctor(benchmark: bool = True, root: Path = Path("/")) -> dict[str, Any]:
    """The report; `root` is where Jetson files are read from (tests point it at a recorded board)."""
    start = time.perf_counter()
    host = detect_host(root)
    matched = match_host(host)
    runtimes = probe_all()
    report: dict[str, Any] = {
        "edgekit_version": __version__,
        "host": host.to_dict(),
        # on a board: can the two runtimes a Jetson deployment uses (MLC first, ORT GenAI CUDA) run here
        "jetson_runtimes": board_readiness(runtimes) if host.jetson else None,
        "runtimes": [r.to_dict() for r in runtimes],
        "target": {
            "matched": matched.name if matched else None,
            "title": matched.title if matched else None,
            "note": None if matched else "no descriptor under edgekit's targets matches; use --target host",
        },
        "measured": measure() if benchmark else None,
    }
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report


def board_readiness(runtimes: list[Any]) -> dict[str, dict[str, Any]]:
    found = {r.name: r for r in runtimes}
    mlc, ort = found["mlc"], found["ort"]
    return {
        "mlc": {"usable": mlc.installed, "detail": mlc.gpu_detail if mlc.installed else mlc.note},
        "ort_cuda": {"usable": bool(ort.gpu), "detail": ort.gpu_detail or ort.note or ""},
    }


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
        for label, text in _jetson_rows(host["jetson"], report.get("jetson_runtimes") or {}):
            summary.add_row(label, text)
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


def _jetson_rows(j: dict[str, Any], ready: dict[str, Any]) -> list[tuple[str, str]]:
    """Board, release, power state and runtime readiness: what to check first when a Jetson deploy fails."""
    rows = [("jetson", f"{escape(j['board'])}, L4T {j['l4t'] or '?'} (JetPack {j['jetpack'] or '?'})")]
    power = j.get("power") or {}
    mode = j["power_mode"] or "unknown (no jtop service, no nvpmodel)"
    if power.get("jetson_clocks") is not None:
        mode += f", jetson_clocks {'on' if power['jetson_clocks'] else 'off'}"
    rows.append(
        ("power mode", mode + (f" [dim](via {j['source']})[/dim]" if j.get("source") in ("jtop", "nvpmodel") else ""))
    )
    if j.get("gpu_freq_mhz") is not None:
        top = f" of {power['gpu_max_mhz']:g} MHz max" if power.get("gpu_max_mhz") else ""
        load = f", load {power['gpu_load_pct']:g}%" if power.get("gpu_load_pct") is not None else ""
        rows.append(("gpu clock", f"{j['gpu_freq_mhz']:g} MHz{top}{load}"))
    if power.get("total_mw") is not None:
        rails = ", ".join(f"{r['name']} {r['power_mw'] / 1000:.1f} W" for r in power.get("rails", []))
        rows.append(
            ("power", f"{power['total_mw'] / 1000:.1f} W ({power['total_rail']})" + (f"; {rails}" if rails else ""))
        )
    for key, label in (("mlc", "MLC-LLM"), ("ort_cuda", "ORT CUDA")):
        if key in ready:
            r = ready[key]
            rows.append(
                (
                    label,
                    f"[green]usable[/green]: {escape(r['detail'])}"
                    if r["usable"]
                    else f"[yellow]no[/yellow]: {escape(r['detail'])}",
                )
            )
    return rows
