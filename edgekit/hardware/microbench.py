"""Measured memory bandwidth and matmul throughput on the device a model would run on.

Decode at batch 1 is a chain of matrix-vector products, so bandwidth is measured the same way
(fp32 GEMV over a matrix far larger than any cache) rather than with a copy; throughput with a
square matmul in the dtype that device computes in. Warm-up runs are excluded and the median of
several timed runs is reported with its spread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Measurement:
    value: float
    unit: str
    method: str
    runs: int
    spread_pct: float  # (max - min) / median of the timed runs, in percent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pick_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _timed(fn: Callable[[], object], sync: Callable[[], None], warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _sync_for(device: str) -> Callable[[], None]:
    import torch

    if device == "cuda":
        return torch.cuda.synchronize
    if device == "mps":
        return torch.mps.synchronize
    return lambda: None


def _summary(times: list[float], work: float, unit: str, method: str) -> Measurement:
    rates = [work / t for t in times]
    median = statistics.median(rates)
    return Measurement(round(median, 1), unit, method, len(rates), round(100 * (max(rates) - min(rates)) / median, 1))


def memory_bandwidth(device: str, mib: int | None = None, runs: int = 15, reps: int = 4) -> Measurement:
    import torch

    mib = mib or (1024 if device == "cuda" else 256)
    cols = 4096
    rows = mib * 2**20 // (4 * cols)
    weight = torch.randn(rows, cols, device=device)
    vec = torch.randn(cols, device=device)

    def batch() -> None:
        for _ in range(reps):
            torch.mv(weight, vec)

    times = _timed(batch, _sync_for(device), warmup=2, runs=runs)
    return _summary(
        times, reps * weight.numel() * 4 / 1e9, "GB/s", f"fp32 GEMV over {mib} MiB x{reps}, median of {runs}"
    )


def matmul_throughput(device: str, n: int | None = None, runs: int = 9, reps: int = 8) -> Measurement:
    import torch

    dtype = torch.float16 if device in ("cuda", "mps") else torch.float32
    n = n or (8192 if device == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def batch() -> None:
        # Several products per timed run so each sample spans ~0.1 s, long enough to average
        # out scheduler hiccups on small shared machines.
        for _ in range(reps):
            a @ b

    times = _timed(batch, _sync_for(device), warmup=2, runs=runs)
    name = str(dtype).removeprefix("torch.")
    return _summary(times, reps * 2 * n**3 / 1e9, "GFLOP/s", f"{name} {n}x{n} matmul x{reps}, median of {runs}")


def measure(device: str | None = None) -> dict[str, Any]:
    import torch

    device = device or pick_device()
    return {
        "device": device,
        "threads": torch.get_num_threads(),
        "memory_bandwidth": memory_bandwidth(device).to_dict(),
        "matmul": matmul_throughput(device).to_dict(),
    }
