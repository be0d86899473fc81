"""Ending a reply that has begun to loop.

A small model under greedy decoding often falls into a cycle ("the length of the length of the length of ...",
or one sentence over and over) and, left alone, fills the rest of the token limit with it: the reader waits for
text that says nothing new. The chat stops a reply once its newest tokens are one block repeated back to back:
at least COPIES copies and TOKENS tokens in all, so short legitimate repeats ("hello hello hello", a line of
code written twice) go on. The text before the stop is the model's own, unchanged: this changes when a reply
ends, never which tokens it is made of (the accuracy metrics, which generate without it, are unaffected).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

COPIES = 3  # copies of one block back to back
TOKENS = 24  # tokens the copies span at least: a one-token block needs 24 copies, a 12-token sentence 3
MAX_PERIOD = 64  # the longest block looked for: a repeated paragraph is caught by then


@dataclass(frozen=True)
class LoopGuard:
    copies: int = COPIES
    tokens: int = TOKENS
    max_period: int = MAX_PERIOD


def loop_start(tokens: Sequence[int], guard: LoopGuard = LoopGuard()) -> int | None:
    """When the newest tokens are one block repeated back to back, `guard.copies` times or more and spanning
    `guard.tokens` tokens or more: the index where the fewest such copies begin; None otherwise. Called after
    every token, it answers at the token that completes the first such run."""
    n = len(tokens)
    if n < guard.tokens:
        return None
    newest = tokens[-1]
    for period in range(1, min(guard.max_period, n // guard.copies) + 1):
        if tokens[n - 1 - period] != newest:  # the cheap test first: most periods fail on the newest token
            continue
        copies = max(guard.copies, -(-guard.tokens // period))
        span = copies * period
        if span > n:
            continue
        start = n - span
        if all(tokens[i] == tokens[i + period] for i in range(start, n - period)):
            return start
    return None
