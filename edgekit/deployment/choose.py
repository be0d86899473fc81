"""Choosing a shape: every candidate with its predicted figures and whether it fits the budget, best expected
accuracy first; which are on the latency-accuracy Pareto frontier; the next one to try after a measured miss
(step down) or a measurement well under the budget (step up). Pure functions of the LUT, ranking and budget.

For uniform-width subnets the space is a few thousand shapes at most (SmolLM2-135M: 912), and the LUT and
the accuracy predictor each cost microseconds a shape, so the search is exhaustive: Flextron's static
router, made exact, with nothing learned."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from edgekit.deployment.budget import Budget
from edgekit.deployment.lut import MEASURED, Lut
from edgekit.deployment.measure import RuntimeFigures
from edgekit.elastic.ranking import Ranking
from edgekit.errors import UsageError
from edgekit.shapes import Shape

# the quality floor: a shape whose ranking metric is more than this many times worse than the full model's
# (perplexity ratios; accuracy ratios inverted) is refused unless --allow-degraded. 3x from the retrained
# checkpoint's chat measurements: past 3x chat_ppl its subnets stop giving the full model's short factual
# answers (docs/deploy.md)
FLOOR = 3.0
STEP_UP_BELOW = 0.85  # a measurement under this share of the latency budget is worth a try one shape up
STEP_UP_MARGIN = 0.95  # ... at a shape whose corrected prediction leaves this much of the budget


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
    frontier: bool = False  # no other shape is both predicted faster and expected better

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
    rows = sorted(rows, key=lambda r: (order[r.shape], r.decode_ms))
    for r in pareto(rows):
        r.frontier = True
    return rows


def pareto(ranked: list[Candidate]) -> list[Candidate]:
    """The latency-accuracy frontier of candidates ranked best first: each one faster than every better one."""
    front: list[Candidate] = []
    for c in ranked:
        if not front or c.decode_ms < front[-1].decode_ms:
            front.append(c)
    return front


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


def step_up_candidate(
    ranked: list[Candidate], current: Candidate, tried: set[str], budget: Budget, speedup: float
) -> Candidate | None:
    """After `current` measured `speedup` x its prediction (< 1: faster than predicted), the best shape ranked
    above it that should still fit once its prediction is scaled the same way, with STEP_UP_MARGIN to spare;
    None when there is none."""
    limit = budget.ms_per_token
    if limit is None:
        return None
    for c in ranked:
        if c.shape == current.shape:
            return None
        if c.shape in tried:
            continue
        corrected = budget.violations(c.decode_ms * speedup, c.memory_mb, c.ttft_ms)
        if not corrected and c.decode_ms * speedup <= STEP_UP_MARGIN * limit:
            return c
    return None


def misses(figures: RuntimeFigures, budget: Budget) -> str | None:
    """Which budget terms a measurement breaks, said as measured figures; None when it fits."""
    why = budget.violations(figures.decode_ms, figures.peak_rss_mb)
    return "; ".join(f"measured {w}" for w in why) or None


def quality_ratio(ranking: Ranking, shape: str, full: str) -> float | None:
    """How many times worse than the full model a shape is expected to be on the ranking metric (1.0: as good;
    perplexities divide, accuracies invert); None when the ranking measures no quality (parameter count)."""
    from edgekit.elastic.ranking import LOWER_IS_BETTER

    if ranking.metric == "params" or shape not in ranking.scores or full not in ranking.scores:
        return None
    mine, best = ranking.scores[shape], ranking.scores[full]
    if LOWER_IS_BETTER[ranking.metric]:
        return mine / best if best > 0 else None
    return best / mine if mine > 0 else float("inf")


def below_floor(
    ranking: Ranking | list[Ranking],
    rows: list[Candidate],
    shape: str,
    full: str,
    floor: float,
    full_ms: float,
    slowdown: float = 1.0,
    missed: list[str] | None = None,
) -> str | None:
    """Why `shape` is below the quality floor, naming the cheapest budget that clears it; None when it is not.
    `ranking`: the metric the floor is held on (a list: held on each). After a step down (`missed`: the shapes
    measured over the budget), the predictions are scaled by the `slowdown` measured (measured / predicted) and
    `full_ms` is the full model's measured latency, so the budget named is one this machine can meet, not the
    LUT's."""
    held = ranking if isinstance(ranking, list) else [ranking]
    below = [(r.metric, x) for r in held if (x := quality_ratio(r, shape, full)) is not None and x > floor]
    if not below:
        return None
    clear = [r for r in rows if all((quality_ratio(g, r.shape, full) or 0.0) <= floor for g in held)]
    said = " and ".join(f"{x:.2f}x the full model's {metric}" for metric, x in below)
    why = f"{shape} is expected at {said}, below the quality floor (at most {floor:g}x)"
    if missed:
        why += f"; measured here, {', '.join(missed)} missed the budget"
    if clear:
        cheapest = min(clear, key=lambda r: r.decode_ms)
        ms = cheapest.decode_ms * slowdown
        here = " as measured here" if missed else ""
        # rounded up, both: the budget named must admit the shape when it is given back
        share, ms = math.ceil(100 * ms / full_ms - 1e-9), math.ceil(ms * 100 - 1e-9) / 100
        why += (f"; the cheapest budget that clears it: --budget {ms:g}ms ({share}% of the "
                f"full model{here}), for {cheapest.shape}")  # fmt: skip
    return why
