"""What the chat UI costs: decode tokens/s of the runtime alone against the same greedy generation
inside the Textual app (headless, through the same engine), alternating, in one run; and the time
from `edgekit chat DEPLOYMENT` to a ready prompt in a real terminal (tmux), where tmux is installed.

    .venv/bin/python bench/chat_overhead.py DEPLOYMENT [--rounds 5] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine, write_result  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper who finds a map."


def alone(engine: Any, sampling: Any) -> dict[str, Any]:
    stats = None
    for piece in engine.reply([{"role": "user", "content": PROMPT}], sampling):
        stats = piece.stats
    return {"ms_per_token": stats.mean_ms, "tokens": stats.new_tokens, "ttft_ms": stats.ttft_ms}


async def in_app(engine: Any, sampling: Any, store_dir: Path) -> dict[str, Any]:
    from edgekit.chat.store.conversations import Store
    from edgekit.chat.tui.app import ChatApp

    app = ChatApp(engine, sampling, store=Store(store_dir))
    async with app.run_test(size=(120, 36)) as pilot:
        app.query_one("#prompt").value = PROMPT
        await pilot.press("enter")
        while app.replies == 0:  # a plain sleep: pilot.pause() would itself keep the UI busy
            await asyncio.sleep(0.05)
        stats = app.last_stats
    return {"ms_per_token": stats.mean_ms, "tokens": stats.new_tokens, "ttft_ms": stats.ttft_ms}


def ready_time(deployment: Path) -> float | None:
    """Seconds from launching `edgekit chat` in a 120x34 tmux pane to its prompt being on screen."""
    if not shutil.which("tmux"):
        return None
    edgekit = str(Path(sys.executable).parent / "edgekit")
    session = "edgekit-ready"
    with tempfile.TemporaryDirectory() as data:
        start = time.perf_counter()
        cmd = f"EDGEKIT_DATA={data} {edgekit} chat {deployment}"
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "34", cmd], check=True)
        try:
            while time.perf_counter() - start < 60:
                pane = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True)
                if "Message (Enter to send" in pane.stdout:
                    return round(time.perf_counter() - start, 2)
                time.sleep(0.05)
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("deployment", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()

    from edgekit.chat.engine import ChatEngine
    from edgekit.engines import Sampling

    engine = ChatEngine.from_deployment(args.deployment)
    sampling = Sampling(max_new_tokens=args.tokens)
    alone(engine, sampling)  # warm-up
    rows: dict[str, list[dict[str, Any]]] = {"runtime alone": [], "inside the TUI": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            rows["runtime alone"].append(alone(engine, sampling))
            rows["inside the TUI"].append(asyncio.run(in_app(engine, sampling, Path(tmp) / str(i))))
    summary = {}
    for name, runs in rows.items():
        ms = statistics.median(r["ms_per_token"] for r in runs)
        summary[name] = {"ms_per_token": round(ms, 3), "tokens_per_s": round(1000 / ms, 2),
                         "tokens": runs[0]["tokens"], "runs": runs}  # fmt: skip
    a, t = summary["runtime alone"]["tokens_per_s"], summary["inside the TUI"]["tokens_per_s"]
    result = {
        "deployment": str(args.deployment), "info": engine.info.to_dict(), "summary": summary,
        "ui_cost_pct": round(100 * (a - t) / a, 2), "ready_s": ready_time(args.deployment), "machine": machine(),
    }  # fmt: skip
    write_result("chat_overhead", result)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"chat overhead: {engine.info.shape} {engine.info.runtime} {engine.info.precision}")
    for col in ("where", "tokens/s (median)", "ms/token", "tokens"):
        table.add_column(col, justify="right")
    for name, row in summary.items():
        table.add_row(name, f"{row['tokens_per_s']:.1f}", f"{row['ms_per_token']:.2f}", str(row["tokens"]))
    Console().print(table)
    print(f"UI cost: {result['ui_cost_pct']:.1f}% of throughput; `edgekit chat` to ready prompt: {result['ready_s']} s")
    print(describe(result["machine"]))


if __name__ == "__main__":
    main()
