"""`edgekit serve` against the same deployment in-process, and a bounded load test on localhost.

    .venv/bin/python bench/serve.py DEPLOYMENT [--rounds 3] [--clients 8] [--requests 20] [--queue 8]

Overhead: the same greedy reply (128 tokens, EOS held back so every run makes all of them) made by the chat
engine in this process and streamed through a real `edgekit serve` process with the `openai` client, in
alternating rounds: ms/token and time to first token as each side sees them. Load: --clients threads each
send --requests requests (64 tokens each) as fast as the server answers; every request ends in a complete
answer, a clean 429 (the queue was full) or a failure, counted, with latency percentiles of the completed.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine, write_result  # noqa: E402

PROMPT = "Write a short paragraph about why small language models are useful on edge devices."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(deployment: Path, port: int, queue: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "serve", str(deployment), "--port", str(port),
                             "--queue", str(queue)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    import urllib.request

    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"edgekit serve exited: {proc.stderr.read().decode()[-500:]}") from None
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("edgekit serve did not answer /health in 120 s")


def streamed(client: Any, model: str, tokens: int) -> dict[str, float]:
    """One streamed reply as the client sees it: time to first token, then ms per token."""
    start = time.perf_counter()
    stamps = []
    for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                                max_tokens=tokens, temperature=0, stream=True,
                                                extra_body={"min_tokens": tokens}):  # fmt: skip
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {"ttft_ms": (stamps[0] - start) * 1000, "ms_per_token": statistics.mean(gaps) * 1000,
            "pieces": len(stamps)}  # fmt: skip


def in_process(engine: Any, tokens: int) -> dict[str, float]:
    from edgekit.engines import Sampling

    result = engine.complete([{"role": "user", "content": PROMPT}],
                             Sampling(max_new_tokens=tokens, min_new_tokens=tokens))  # fmt: skip
    return {"ttft_ms": result.ttft_ms, "ms_per_token": result.ms_per_token, "pieces": result.new_tokens}


def load_test(base_url: str, model: str, clients: int, requests: int) -> dict[str, Any]:
    import openai

    outcomes: dict[str, int] = {"completed": 0, "rejected_429": 0, "failed": 0}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=300)
        for _ in range(requests):
            start = time.perf_counter()
            try:
                reply = client.chat.completions.create(model=model, max_tokens=64, temperature=0,
                                                       messages=[{"role": "user", "content": PROMPT}])  # fmt: skip
                ok = bool(reply.choices[0].message.content) and reply.usage.completion_tokens > 0
                with lock:
                    outcomes["completed" if ok else "failed"] += 1
                    latencies.append((time.perf_counter() - start) * 1000)
            except openai.RateLimitError:
                with lock:
                    outcomes["rejected_429"] += 1
            except Exception as exc:
                with lock:
                    outcomes["failed"] += 1
                    errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {**outcomes, "sent": clients * requests, "wall_s": round(wall, 1),
            "latency_ms": {"p50": round(q[49], 1), "p90": round(q[89], 1), "p99": round(q[98], 1)},
            "errors": errors[:5]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("deployment", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--queue", type=int, default=8)
    ap.add_argument("--name", default="serve", help="results file under bench/results/")
    args = ap.parse_args()

    import openai

    from edgekit.chat.engine import ChatEngine

    engine = ChatEngine.from_deployment(args.deployment)
    deployed = {"shape": engine.info.shape, "runtime": engine.info.runtime, "precision": engine.info.precision}
    port = free_port()
    server = start_server(args.deployment, port, args.queue)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)
        model = client.models.list().data[0].id
        rows: dict[str, list[dict[str, float]]] = {"in_process": [], "served": []}
        streamed(client, model, 8)  # warm both paths once
        in_process(engine, 8)
        for r in range(args.rounds):
            rows["in_process"].append(in_process(engine, args.tokens))
            rows["served"].append(streamed(client, model, args.tokens))
            print(f"round {r + 1}: in-process {rows['in_process'][-1]}, served {rows['served'][-1]}", flush=True)
        summary = {side: {k: round(statistics.median(x[k] for x in runs), 2) for k in ("ttft_ms", "ms_per_token")}
                   for side, runs in rows.items()}  # fmt: skip
        summary["overhead"] = {
            "ms_per_token_ratio": round(summary["served"]["ms_per_token"] / summary["in_process"]["ms_per_token"], 3),
            "ttft_ms_added": round(summary["served"]["ttft_ms"] - summary["in_process"]["ttft_ms"], 1),
        }
        del engine  # the load test measures the server alone
        print(f"load: {args.clients} clients x {args.requests} requests, queue {args.queue}", flush=True)
        load = load_test(base_url, model, args.clients, args.requests)
    finally:
        server.terminate()
        server.wait(timeout=30)
    results = {"machine": machine(), "deployment": deployed,
               "tokens": args.tokens, "rounds": rows, "summary": summary,
               "load": {"clients": args.clients, "requests": args.requests, "queue": args.queue, **load}}  # fmt: skip
    write_result(args.name, results)
    print(json.dumps({k: v for k, v in results.items() if k not in ("machine", "rounds")}, indent=1))
    print(describe(results["machine"]))


if __name__ == "__main__":
    main()
