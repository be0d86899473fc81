"""The plan's whole space against the coupled grid and the single-axis baselines: the frontier the accuracy
predictor draws over every shape, and measured points along it and along each baseline.

Lines, each measured on the same evaluator (every distinct network once):
- space: shapes spread along the predicted frontier of the whole space (depth x FFN x heads);
- coupled grid: the plan's default grid, FFN and heads cut by one percentage (the first plans' shapes);
- depth only: full width at the grid's depths;
- width only: full depth, shapes spread along the predicted frontier of the widths.
The x axis is non-embedding parameters, or predicted ms/token on a target when a LUT is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.elastic.frontier import Point, save_png
from edgekit.elastic.plan import Plan, default_depths
from edgekit.evaluation.settings import EvalData, EvalSettings, score
from edgekit.shapes import Shape

LINES = ("space", "coupled grid", "depth only", "width only")


@dataclass
class SpaceStudy:
    x: str  # "params" or "ms/token"
    x_note: str  # what the x axis is (the LUT's key, for latency)
    predicted: list[Point]  # the predicted frontier of the whole space, every shape on it
    measured: list[Point]  # the lines, evaluated
    predictor: str  # the predictor's one-line description
    evaluation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def frontier_shapes(shapes: list[Shape], x: Callable[[Shape], float], y: Callable[[Shape], float]) -> list[Shape]:
    """The Pareto frontier, smallest x first: each shape better (lower y) than every one with a smaller x."""
    front: list[Shape] = []
    for s in sorted(shapes, key=lambda s: (x(s), y(s))):
        if not front or y(s) < y(front[-1]):
            front.append(s)
    return front


def spread(shapes: list[Shape], n: int) -> list[Shape]:
    """`n` shapes evenly spaced along a list (its ends included)."""
    if len(shapes) <= n:
        return shapes
    return list(dict.fromkeys(shapes[round(i * (len(shapes) - 1) / (n - 1))] for i in range(n)))


def lines(plan: Plan, predicted: Callable[[Shape], float], x: Callable[[Shape], float], n: int) -> dict[str, list]:
    g = plan.geometry
    space = plan.space()
    depths = sorted({g.num_layers, *(d for d in plan.depths if d in default_depths(g.num_layers, min(plan.depths)))})
    full_depth = [s for s in space if s.depth == g.num_layers]
    return {
        "space": spread(frontier_shapes(space, x, predicted), n),
        "coupled grid": plan.grid(),
        "depth only": [Shape(d, 100, g.heads_per_group) for d in reversed(depths)],
        "width only": spread(frontier_shapes(full_depth, x, predicted), n),
    }


def study(
    source: Any,
    settings: EvalSettings,
    x: Callable[[Shape], float] | None = None,
    x_note: str = "",
    points: int = 8,
    on_total: Callable[[int], None] | None = None,
    on_point: Callable[[Point], None] | None = None,
) -> SpaceStudy:
    """Predict the whole space of `source` (a plan or checkpoint with an accuracy predictor), then evaluate
    `points` shapes along its frontier and along each baseline line."""
    from edgekit.errors import UsageError

    plan = source.plan
    predictor = source.predictor()
    if predictor is None:
        raise UsageError(f"{source.label} has no accuracy predictor: fit one with `edgekit elastic predictor`")
    g = plan.geometry
    full = g.non_embedding_params(plan.full)
    x = x or (lambda s: float(g.non_embedding_params(s)))
    cache: dict[Shape, float] = {}

    def guess(s: Shape) -> float:
        if s not in cache:
            cache[s] = predictor.predict(plan, s)
        return cache[s]

    def point(lab: str, s: Shape) -> Point:
        params = g.non_embedding_params(s)
        p = Point(lab, s.name, s.depth, s.ffn, s.heads, plan.layer_sets[s.depth], params, params / full)
        p.x, p.predicted_ppl = x(s), guess(s)
        return p

    predicted_line = []
    for s in frontier_shapes(plan.space(), x, guess):
        p = point("space (predicted)", s)
        p.ppl = p.predicted_ppl
        predicted_line.append(p)
    todo = lines(plan, guess, x, points)
    distinct = list(dict.fromkeys(s for shapes in todo.values() for s in shapes))
    if on_total:
        on_total(len(distinct))
    data = EvalData.load(settings, plan)
    model, tokenizer = source.load(), source.tokenizer()
    rows: dict[Shape, dict[str, Any]] = {}
    for s in distinct:
        rows[s] = score(model.eval().at(s), tokenizer, data)
        if on_point:
            on_point(point("", s))
    measured = []
    for lab, shapes in todo.items():
        for s in shapes:
            p = point(lab, s)
            row = rows[s]
            p.ppl, p.acc, p.acc_norm, p.seconds = row.get("ppl"), row.get("acc"), row.get("acc_norm"), row["seconds"]
            measured.append(p)
    return SpaceStudy("ms/token" if x_note else "params", x_note, predicted_line, measured, predictor.describe(),
                      data.describe())  # fmt: skip


# ------------------------------------------------------------------------------------------- plots

STYLE = {"space": "o-", "coupled grid": "s--", "depth only": "^:", "width only": "v:"}


def _front(points: list[Point]) -> list[Point]:
    """A line's own measured frontier, smallest x first (a grid's dominated shapes are drawn, not joined)."""
    out: list[Point] = []
    for p in sorted(points, key=lambda p: (p.x or 0.0, p.ppl or 0.0)):
        if p.ppl is not None and (not out or p.ppl < (out[-1].ppl or 0.0)):
            out.append(p)
    return out


def _scale(study: SpaceStudy) -> tuple[float, str]:
    return (1e-6, "non-embedding parameters (M)") if study.x == "params" else (1.0, f"ms/token ({study.x_note})")


def plot_png(study: SpaceStudy, path: Any, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, xlabel = _scale(study)
    fig, ax = plt.subplots(figsize=(8, 5))
    pred = study.predicted
    ax.plot([p.x * k for p in pred], [p.ppl for p in pred], "-", color="0.6", lw=1, label="space, predicted frontier")
    for lab in LINES:
        pts = [p for p in study.measured if p.label == lab]
        if not pts:
            continue
        front = _front(pts)
        line = ax.plot([p.x * k for p in front], [p.ppl for p in front], STYLE[lab], label=f"{lab}, measured")[0]
        others = [p for p in pts if p not in front]
        ax.plot([p.x * k for p in others], [p.ppl for p in others], STYLE[lab][0], color=line.get_color(), alpha=0.4)
        for p in front:
            ax.annotate(p.shape, (p.x * k, p.ppl), fontsize=6, alpha=0.6, xytext=(2, 2), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("perplexity (log)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    save_png(fig, path)


def plot_terminal(study: SpaceStudy, width: int = 90, height: int = 24) -> str:
    import plotext as plt

    k, xlabel = _scale(study)
    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("clear")
    pred = study.predicted
    plt.plot([p.x * k for p in pred], [p.ppl for p in pred], label="space, predicted")
    for lab in LINES:
        front = _front([p for p in study.measured if p.label == lab])
        if front:
            plt.plot([p.x * k for p in front], [p.ppl for p in front], label=lab, marker="dot")
    plt.yscale("log")
    plt.xlabel(xlabel)
    plt.title("perplexity: the whole space against the coupled grid and one axis at a time")
    return plt.build()
