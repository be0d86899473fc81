"""Measure a compiled model in its runtime: decode ms/token, prefill and time to first token, peak memory.

Each measurement runs in a fresh process (`python -m edgekit.deployment.measure ...`) so that its peak resident
memory is the runtime's own, not what an earlier shape or the caller's torch left behind. Prompts
are fixed random token ids: latency does not depend on what the tokens say, and min-length keeps
EOS from ending a timed run early. Warm-up runs are discarded; the median of the timed runs is
reported with its spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit import shell
from edgekit.errors import ExternalToolError, IntegrityError, first_line
from edgekit.shell import Command


@dataclass(frozen=True)
class MeasureSettings:
    new_tokens: int = 64
    runs: int = 5
    warmup: int = 2
    prompt_lens: tuple[int, ...] = (16, 64, 256)
    decode_prompt_len: int = 32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RuntimeFigures:
    decode_ms: float
    decode_spread_pct: float
    runs: int
    new_tokens: int
    prefill_ms: dict[int, float] = field(default_factory=dict)
    ttft_ms: dict[int, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    baseline_rss_mb: float = 0.0
    load_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeFigures:
        """From JSON, where the prompt lengths that key prefill and first-token times became strings."""
        data = dict(data)
        for key in ("prefill_ms", "ttft_ms"):
            data[key] = {int(k): v for k, v in data.get(key, {}).items()}
        return cls(**data)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process image. On Linux VmHWM, not getrusage: ru_maxrss survives
    exec, so a worker would report the high-water mark of the parent it was forked from."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS reports bytes, others KiB


def decode_ms(stamps: list[float]) -> float:
    """Per-token decode time of one reply from the times its tokens arrived (the first token's wait excluded)."""
    return (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1) * 1000


def run_worker(argv: tuple[str, ...], label: str, failed: str) -> Any:
    """Run a measurement worker (a fresh process, so its memory and threads are its own) and return the JSON it
    printed; its last error line, prefixed by `failed`, otherwise."""
    done = shell.capture(Command(argv, label), timeout=None)
    if not done.ok:
        raise ExternalToolError(f"{failed}: {done.last_error_line()}")
    return json.loads(done.out)


def worker_output(compute: Callable[[], Any]) -> None:
    """A worker's side: print what `compute()` returns as JSON, or its error as one line and exit 1 (the
    parent shows that line)."""
    try:
        result = compute()
    except Exception as exc:
        print(f"{type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))


def _vocab(folder: Path) -> int:
    for name, keys in (("genai_config.json", ("model", "vocab_size")), ("config.json", ("vocab_size",))):
        path = folder / name
        if path.is_file():
            data: Any = json.loads(path.read_text())
            for key in keys:
                data = data[key]
            return int(data)
    raise IntegrityError(f"{folder} has no genai_config.json or config.json to read the vocabulary size from")


def measure_here(runtime: str, folder: Path, device: str, settings: MeasureSettings) -> RuntimeFigures:
    """Measure in this process (the worker side of measure_folder)."""
    import numpy as np
    import psutil

    from edgekit.engines import Sampling, get_engine
    from edgekit.engines.base import timed_stream

    baseline = psutil.Process().memory_info().rss / 2**20
    start = time.perf_counter()
    session = get_engine(runtime).open(folder, device)
    load_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    vocab = _vocab(folder)

    def prompt(n: int) -> list[int]:
        return [int(t) for t in rng.integers(256, vocab, size=n)]

    decode_ids = prompt(settings.decode_prompt_len)
    timed = Sampling(max_new_tokens=settings.new_tokens, min_new_tokens=settings.new_tokens)
    per_token = []
    for i in range(settings.warmup + settings.runs):
        tokens, stamps, _ = timed_stream(session, decode_ids, timed)
        if len(tokens) < 2:
            raise ExternalToolError(f"{runtime} made {len(tokens)} tokens where {settings.new_tokens} were asked for")
        if i >= settings.warmup:
            per_token.append(decode_ms(stamps))
    prefill, ttft = {}, {}
    for n in settings.prompt_lens:
        if n + 1 > session.context_length:
            continue
        ids = prompt(n)
        times_p, times_t = [], []
        for i in range(settings.warmup + settings.runs):
            p, t = session.first_token(ids)
            if i >= settings.warmup:
                times_p.append(p * 1000)
                times_t.append(t * 1000)
        prefill[n] = round(statistics.median(times_p), 3)
        ttft[n] = round(statistics.median(times_t), 3)
    median = statistics.median(per_token)
    return RuntimeFigures(
        decode_ms=round(median, 4),
        decode_spread_pct=round(100 * (max(per_token) - min(per_token)) / median, 2),
        runs=len(per_token),
        new_tokens=settings.new_tokens,
        prefill_ms=prefill,
        ttft_ms=ttft,
        peak_rss_mb=round(_peak_rss_mb(), 1),
        baseline_rss_mb=round(baseline, 1),
        load_s=round(load_s, 3),
    )


def measure_pair_here(
    runtime: str, folder: Path, other: Path, device: str, settings: MeasureSettings
) -> dict[str, float]:
    """Decode ms/token of two builds in one process, their timed runs alternating (a, b, a, b, ...): a host whose
    speed drifts over seconds (a shared VM) slows both alike, so their ratio holds where two measurements taken
    a minute apart do not."""
    import numpy as np

    from edgekit.engines import Sampling, get_engine
    from edgekit.engines.base import timed_stream

    engine = get_engine(runtime)
    sessions = [engine.open(folder, device), engine.open(other, device)]
    rng = np.random.default_rng(0)
    ids = [int(t) for t in rng.integers(256, _vocab(folder), size=settings.decode_prompt_len)]
    timed = Sampling(max_new_tokens=settings.new_tokens, min_new_tokens=settings.new_tokens)
    runs: list[list[float]] = [[], []]
    for i in range(settings.warmup + settings.runs):
        for session, times in zip(sessions, runs, strict=True):
            _, stamps, _ = timed_stream(session, ids, timed)
            if i >= settings.warmup:
                times.append(decode_ms(stamps))
    return {"decode_ms": round(statistics.median(runs[0]), 4), "other_ms": round(statistics.median(runs[1]), 4)}


def measure_pair(
    runtime: str, folder: Path, other: Path, device: str, settings: MeasureSettings
) -> tuple[float, float]:
    """(ms/token of `folder`, of `other`) timed alternately in a fresh worker process."""
    argv = (sys.executable, "-m", "edgekit.deployment.measure", runtime, str(folder), "--device", device,
            "--settings", json.dumps(settings.to_dict()), "--beside", str(other))  # fmt: skip
    figures = run_worker(argv, f"measure {folder.name} beside {other.name} in {runtime}",
                         f"measuring {folder.name} beside {other.name} failed")  # fmt: skip
    return figures["decode_ms"], figures["other_ms"]


def measure_folder(runtime: str, folder: Path, device: str, settings: MeasureSettings) -> RuntimeFigures:
    """Measure a compiled model in a fresh worker process and return its figures."""
    argv = (sys.executable, "-m", "edgekit.deployment.measure", runtime, str(folder), "--device", device,
            "--settings", json.dumps(settings.to_dict()))  # fmt: skip
    figures = run_worker(argv, f"measure {folder.name} in {runtime}", f"measuring {folder.name} in {runtime} failed")
    return RuntimeFigures.from_dict(figures)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="edgekit's measurement worker (one compiled model, one process)")
    ap.add_argument("runtime")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--settings", default="{}")
    ap.add_argument("--beside", type=Path, default=None, help="a second build, timed alternately with the first")
    args = ap.parse_args(argv)
    raw = json.loads(args.settings)
    raw["prompt_lens"] = tuple(raw.get("prompt_lens", MeasureSettings.prompt_lens))

    def compute() -> dict[str, Any]:
        settings = MeasureSettings(**raw)
        if args.beside is not None:
            return measure_pair_here(args.runtime, args.folder, args.beside, args.device, settings)
        return measure_here(args.runtime, args.folder, args.device, settings).to_dict()

    worker_output(compute)


if __name__ == "__main__":
    main()
