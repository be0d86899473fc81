"""Helpers shared by the chat tests: a slowed-down real session, and a ChatEngine over the tiny model."""

from __future__ import annotations

import time

from edgekit.chat.engine import ChatEngine, Info


class SlowSession:
    """A real session that waits between tokens, so a test can act in the middle of a reply."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.runtime, self.device = inner.runtime, inner.device
        self.context_length, self.eos_ids = inner.context_length, set()  # never stops early at EOS

    def stream(self, ids, sampling):
        for token in self.inner.stream(ids, sampling):
            time.sleep(self.delay)
            yield token


def make_engine(session, tokenizer, context_length: int = 512, budget: float | None = 50.0) -> ChatEngine:
    info = Info("tiny", "d4-w100", "torch", "fp32", "cpu", budget, "50ms" if budget else None, "measured",
                context_length)  # fmt: skip
    return ChatEngine(session, tokenizer, info)
