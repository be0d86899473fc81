"""The budget grammar of `deploy --budget`: what a deployment must fit, parsed into one Budget.

    40ms            per output token (steady-state decode): the default meaning of a bare time
    25tok/s         decode throughput, the same constraint as 1000/25 = 40 ms/token
    ttft<300ms      time to first token for --prompt-len tokens of prompt (also `ttft<1.5s`)
    mem<2GB         peak memory of the serving process (B, KB/MB/GB, KiB/MiB/GiB)
    60%             per-token latency at most 60 % of the full model's on that target

Terms combine with commas (`40ms,mem<2GB`); the tightest of each kind wins.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from edgekit.errors import UsageError

_NUM = r"(\d+(?:\.\d+)?)"
_MEM_UNITS = {
    "b": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "k": 1e3,
    "m": 1e6,
    "g": 1e9,
}
_MS = re.compile(rf"^(?:decode\s*<=?\s*)?{_NUM}\s*ms(?:\s*/\s*tok(?:en)?)?$")
_RATE = re.compile(rf"^(?:>=?\s*)?{_NUM}\s*(?:tok/s|tokens/s|t/s|tps)$")
_TTFT = re.compile(rf"^ttft\s*<=?\s*{_NUM}\s*(ms|s)$")
_MEM = re.compile(rf"^mem(?:ory)?\s*<=?\s*{_NUM}\s*([kmg]i?b?|b)$")
_REL = re.compile(rf"^{_NUM}\s*%$")

EXAMPLES = "40ms, 25tok/s, ttft<300ms, mem<2GB, 60% or a comma-separated mix"


@dataclass(frozen=True)
class Budget:
    ms_per_token: float | None = None
    ttft_ms: float | None = None
    mem_bytes: float | None = None
    relative: float | None = None  # a fraction of the full model's ms/token on the target
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolve(self, full_ms_per_token: float) -> Budget:
        """The same budget with a relative term turned into an absolute ms/token for one target."""
        if self.relative is None:
            return self
        ms = self.relative * full_ms_per_token
        if self.ms_per_token is not None:
            ms = min(ms, self.ms_per_token)
        return Budget(ms, self.ttft_ms, self.mem_bytes, None, self.text)

    def violations(self, decode_ms: float, memory_mb: float, ttft_ms: float | None = None) -> list[str]:
        """Which absolute terms these figures break, each said with the figure and its limit."""
        why = []
        if self.ms_per_token is not None and decode_ms > self.ms_per_token:
            why.append(f"{decode_ms:.2f} ms/token > {self.ms_per_token:.3g}")
        if self.ttft_ms is not None and ttft_ms is not None and ttft_ms > self.ttft_ms:
            why.append(f"first token {ttft_ms:.0f} > {self.ttft_ms:.4g} ms")
        if self.mem_bytes is not None and memory_mb * 1e6 > self.mem_bytes:
            why.append(f"{memory_mb:.0f} MB > {self.mem_bytes / 1e6:.0f} MB")
        return why

    def describe(self) -> str:
        parts = []
        if self.ms_per_token is not None:
            parts.append(f"≤ {self.ms_per_token:.3g} ms/token")
        if self.relative is not None:
            parts.append(f"≤ {100 * self.relative:.3g}% of the full model's ms/token")
        if self.ttft_ms is not None:
            parts.append(f"time to first token ≤ {self.ttft_ms:.4g} ms")
        if self.mem_bytes is not None:
            parts.append(f"memory ≤ {self.mem_bytes / 1e9:.3g} GB")
        return ", ".join(parts)


def _tightest(old: float | None, new: float) -> float:
    return new if old is None else min(old, new)


def parse_budget(text: str) -> Budget:
    terms = [t.strip().lower() for t in text.split(",")]
    if not text.strip() or any(not t for t in terms):
        raise UsageError(f"empty budget term in '{text}'; write e.g. {EXAMPLES}")
    ms = ttft = mem = rel = None
    for term in terms:
        if m := _MS.match(term):
            value = float(m.group(1))
            ms = _tightest(ms, value)
        elif m := _RATE.match(term):
            value = float(m.group(1))
            if value > 0:
                ms = _tightest(ms, 1000.0 / value)
        elif m := _TTFT.match(term):
            value = float(m.group(1)) * (1000.0 if m.group(2) == "s" else 1.0)
            ttft = _tightest(ttft, value)
        elif m := _MEM.match(term):
            unit = m.group(2) if m.group(2).endswith("b") else m.group(2) + "b"
            value = float(m.group(1)) * _MEM_UNITS[unit]
            mem = _tightest(mem, value)
        elif m := _REL.match(term):
            value = float(m.group(1)) / 100
            if value > 1:
                raise UsageError(f"budget '{term}' allows more than the full model; use at most 100%")
            rel = _tightest(rel, value)
        else:
            raise UsageError(f"cannot read budget term '{term}'; write e.g. {EXAMPLES}")
        if value <= 0:
            raise UsageError(f"budget term '{term}' must be positive")
    return Budget(ms, ttft, mem, rel, text.strip())
