"""Choosing a shape: every candidate with its predicted figures and whether it fits the budget, best expected
accuracy first; the next one to try after a measured miss. Pure functions of the LUT, ranking and budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgekit.deployment.budget import Budget
from edgekit.deployment.lut import MEASURED, Lut
from edgekit.deployment.measure import RuntimeFigures
from edgekit.elastic.ranking import Ranking
from edgekit.errors import UsageError
from edgekit.shapes import Shape


@dataclass
class Candidate:
    shape: str
    params: int  # non-embedding
    decode_ms: float  # predicted
    ttft_ms: float  # predicted, for the request's prompt length
    memory_mb: float  # predicted peak
    score: float  # the ranking metric
    fits: bool
    why_not: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(**data)


def candidates(lut: Lut, shapes: list[Shape], ranking: Ranking, budget: Budget, prompt_len: int) -> list[Candidate]:
    """Every shape with its predicted figures and whether it fits, best expected accuracy first."""
    rows = []
    for shape in shapes:
        p = lut.predict(shape, prompt_len)
        why = budget.violations(p.decode_ms, p.memory_mb, p.ttft_ms)
        params = lut.geometry.non_embedding_params(shape)
        score = ranking.scores[shape.name]
        rows.append(Candidate(shape.name, params, p.decode_ms, p.ttft_ms, p.memory_mb, score, not why,
                              "; ".join(why) or None))  # fmt: skip
    order = {name: i for i, name in enumerate(ranking.order([r.shape for r in rows]))}
    # equal scores (the params ranking has none, tables rarely): the faster shape first
    return sorted(rows, key=lambda r: (order[r.shape], r.decode_ms))


def infeasible(rows: list[Candidate], budget: Budget, lut: Lut) -> UsageError:
    fastest = min(rows, key=lambda r: r.decode_ms)
    smallest = min(rows, key=lambda r: r.memory_mb)
    label = "" if lut.status == MEASURED else " (estimated)"
    return UsageError(
        f"no shape fits the budget {budget.describe()}: the fastest, {fastest.shape}, is predicted at "
        f"{fastest.decode_ms:.2f} ms/token{label}, first token {fastest.ttft_ms:.0f} ms; the smallest takes "
        f"{smallest.memory_mb:.0f} MB"
    )


def next_candidate(fitting: list[Candidate], tried: set[str], budget: Budget, slowdown: float) -> Candidate | None:
    """The best remaining shape that still fits once its prediction is scaled by the slowdown seen so far;
    if none does, the fastest remaining one (it may still fit: predictions are not exact)."""
    left = [c for c in fitting if c.shape not in tried]
    if not left:
        return None
    limit = budget.ms_per_token
    ok = [c for c in left if limit is None or c.decode_ms * slowdown <= limit]
    return ok[0] if ok else min(left, key=lambda c: c.decode_ms)


def misses(figures: RuntimeFigures, budget: Budget) -> str | None:
    """Which budget terms a measurement breaks, said as measured figures; None when it fits."""
    why = budget.violations(figures.decode_ms, figures.peak_rss_mb)
    return "; ".join(f"measured {w}" for w in why) or None
