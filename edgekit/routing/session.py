"""A session that routes each reply: the router picks a menu shape from the prompt, that shape's session
answers. Any runtime serves: one session per menu shape (ONNX Runtime GenAI, TVM, torch folders), or one
elastic torch session that changes shape in place. Every reply is produced whole by one shape, so the KV
cache stays consistent within it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.engines.base import Sampling
from edgekit.routing import policy


@dataclass
class RouteRecord:
    shape: str
    router_ms: float  # features and choice, before the chosen shape sees the prompt
    predicted: dict[str, float]  # each menu shape's predicted loss on this prompt


@dataclass
class RoutedPolicy:
    """A router and the exchange rate calibrated for one target and budget."""

    router: Any
    extractor: Any
    ms: list[float]  # per-token latency of each menu shape on the target
    lam: float
    floor: float | None = None
    history: list[RouteRecord] = field(default_factory=list)

    def route(self, ids: list[int]) -> RouteRecord:
        start = time.perf_counter()
        pred = self.router.predict(self.extractor.features(ids))
        index = int(policy.choose(pred, np.asarray(self.ms), self.lam, self.floor)[0])
        predicted = {n: round(float(v), 4) for n, v in zip(self.router.menu, pred[0], strict=True)}
        record = RouteRecord(self.router.menu[index], (time.perf_counter() - start) * 1000, predicted)
        self.history.append(record)
        return record


class RoutedSession:
    """The Session interface over a routed menu. `sessions` maps a shape name to its session, or `switch(name)`
    returns the session to use (for one session that reshapes)."""

    runtime: str
    device: str

    def __init__(self, routed: RoutedPolicy, switch: Callable[[str], Any], first_shape: str | None = None) -> None:
        self.routed = routed
        self.switch = switch
        first = switch(first_shape or routed.router.menu[-1])
        self.runtime, self.device = first.runtime, first.device
        self.context_length = first.context_length
        self.eos_ids = set(first.eos_ids)
        self.last: RouteRecord | None = None

    @classmethod
    def over(cls, routed: RoutedPolicy, sessions: dict[str, Any]) -> RoutedSession:
        # the runtime, context and end-of-turn ids are read from the largest shape the deployment holds: a
        # shape the policy never chose on the router's prompts is left out of it
        held = next(name for name in reversed(routed.router.menu) if name in sessions)
        return cls(routed, sessions.__getitem__, held)

    def stream(self, ids: list[int], sampling: Sampling) -> Iterator[int]:
        self.last = self.routed.route(ids)
        yield from self.switch(self.last.shape).stream(ids, sampling)

    def first_token(self, ids: list[int]) -> tuple[float, float]:
        self.last = self.routed.route(ids)
        return self.switch(self.last.shape).first_token(ids)

    def sequence_logits(self, ids: list[int]) -> Any:
        self.last = self.routed.route(ids)
        return self.switch(self.last.shape).sequence_logits(ids)
