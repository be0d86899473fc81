"""The routing policy: per prompt, the menu shape with the best predicted quality for its cost, one exchange
rate (lambda) between quality and latency for all prompts, calibrated so the mean latency lands on a budget.

Pure functions on arrays: `pred[p, s]` is the predicted loss (mean reply NLL, lower is better) of menu shape s
on prompt p, `ms[s]` its per-token latency on the target. Shape s is chosen for prompt p when it minimises
pred[p, s] + lambda * ms[s]; lambda = 0 always takes the best predicted shape, a large lambda the fastest.
Mean latency falls as lambda grows, so bisection finds the lambda whose mean latency is the largest at or
under the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BISECTION_STEPS = 60


@dataclass(frozen=True)
class Calibrated:
    lam: float
    mean_ms: float  # on the calibration prompts
    shares: list[float]  # of those prompts sent to each menu shape


def choose(pred: np.ndarray, ms: np.ndarray, lam: float, floor: float | None = None) -> np.ndarray:
    """The menu index chosen for each prompt. `floor` (a predicted loss ratio to the best shape's, e.g. log of
    a chat_ppl ratio) rules out, per prompt, shapes predicted more than that far behind its best. A shape whose
    latency is infinite (not in the deployment) is never chosen, even at lambda 0."""
    absent = ~np.isfinite(ms)
    cost = pred + lam * np.where(absent, 0.0, ms)[None, :]
    cost = np.where(absent[None, :], np.inf, cost)
    if floor is not None:
        too_weak = pred > pred.min(axis=1, keepdims=True) + floor
        cost = np.where(too_weak, np.inf, cost)
    return np.argmin(cost, axis=1)


def mean_latency(choice: np.ndarray, ms: np.ndarray) -> float:
    return float(ms[choice].mean())


def calibrate(pred: np.ndarray, ms: np.ndarray, budget_ms: float, floor: float | None = None) -> Calibrated:
    """The exchange rate whose mean latency on these prompts is the largest not over `budget_ms` (a budget at or
    above the slowest menu shape gives lambda 0: every prompt gets its best predicted shape). A budget below
    what the policy can reach is a ValueError naming the lowest mean it can."""
    fastest = choose(pred, ms, 1e12, floor)
    lowest = mean_latency(fastest, ms)
    if budget_ms < lowest - 1e-9:
        raise ValueError(f"{lowest:.3g}")
    if mean_latency(choose(pred, ms, 0.0, floor), ms) <= budget_ms:
        lam = 0.0
    else:
        scale = float(np.ptp(pred)) / max(float(np.ptp(ms)), 1e-9) + 1e-9
        lo, hi = 0.0, scale
        while mean_latency(choose(pred, ms, hi, floor), ms) > budget_ms:
            hi *= 2
        for _ in range(BISECTION_STEPS):
            mid = (lo + hi) / 2
            if mean_latency(choose(pred, ms, mid, floor), ms) > budget_ms:
                lo = mid
            else:
                hi = mid
        lam = hi
    picked = choose(pred, ms, lam, floor)
    shares = np.bincount(picked, minlength=len(ms)) / len(picked)
    return Calibrated(lam, mean_latency(picked, ms), [float(s) for s in shares])
