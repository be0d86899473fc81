"""The router's menu: a few shapes across the latency-accuracy frontier, the best ranked shape that fits each
of several fractions of the full model's latency on a target (the static router's choice at each)."""

from __future__ import annotations

from typing import Any

from edgekit.errors import UsageError
from edgekit.shapes import Shape

FRACTIONS = (0.55, 0.7, 0.85, 1.0)


def auto_menu(source: Any, lut: Any, fractions: tuple[float, ...] = FRACTIONS) -> list[Shape]:
    """For each fraction, the best shape by the source's default metric predicted to fit that share of the full
    model's latency on `lut`; duplicates dropped, fastest first."""
    plan = source.plan
    metric = source.default_metric()
    shapes = source.shapes(metric)
    ranking = source.ranking(shapes, metric)
    full_ms = lut.predict(plan.full).decode_ms
    ms = {s.name: lut.predict(s).decode_ms for s in shapes}
    menu: dict[str, Shape] = {}
    for frac in fractions:
        fits = [s.name for s in shapes if ms[s.name] <= frac * full_ms + 1e-9 and s.name in ranking.scores]
        if fits:
            best = ranking.order(fits)[0]
            menu[best] = plan.shape(best)
    return sorted(menu.values(), key=lambda s: ms[s.name])


def parse_menu(source: Any, text: str) -> list[Shape]:
    """Comma-separated shape names, each one the checkpoint offers."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) < 2:
        raise UsageError(f"--menu {text!r}: a router needs at least two shapes to choose between")
    shapes = []
    for name in names:
        shape = source.shape(name)  # a shape outside the space is refused here, naming the nearest
        if shape in shapes:
            raise UsageError(f"--menu names {name} twice")
        shapes.append(shape)
    return shapes
