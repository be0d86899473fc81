"""Accuracy against size for shapes of several plans (ours and the baselines), on one evaluator.

Each distinct network is evaluated once: two plans that keep the same layers and the same channels
at a shape (a depth baseline at full depth, a width baseline at full width) share the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.elastic.plan import Plan
from edgekit.errors import UsageError
from edgekit.evaluation.settings import EvalData, EvalSettings, score
from edgekit.shapes import Shape


@dataclass
class Point:
    label: str  # e.g. "amoeba/flap", "shortgpt/flap", "amoeba/magnitude"
    shape: str
    depth: int
    ffn: int  # percent of the FFN channels
    heads: int  # query heads per KV group
    layers: list[int]
    params: int  # non-embedding parameters
    param_fraction: float
    ppl: float | None = None
    acc: float | None = None
    acc_norm: float | None = None
    seconds: float = 0.0
    shared_with: str | None = None  # label of the plan whose identical network was evaluated
    x: float | None = None  # where a space study plots it: parameters, or predicted ms/token on a target
    predicted_ppl: float | None = None  # what the accuracy predictor expected

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label(plan: Plan) -> str:
    return f"{plan.depth.method}/{plan.width.method}"


def network_key(plan: Plan, shape: Shape) -> tuple:
    narrowed = shape.ffn < 100 or shape.heads < plan.geometry.heads_per_group
    width_key = plan.width.method if narrowed else "-"
    # a plan with other calibration has other permutations even with the same method
    perms_key = plan.permutations_sha256 if narrowed else "-"
    return tuple(plan.layer_sets[shape.depth]), shape.ffn, shape.heads, width_key, perms_key


def frontier(
    plans: list[tuple[Plan, list[Shape]]],
    settings: EvalSettings,
    loader: Callable[[Plan], tuple[Any, Any]],
    on_point: Callable[[Point], None] | None = None,
) -> list[Point]:
    """Evaluate every (plan, shape); `loader(plan)` gives (ElasticModel, tokenizer). Held-out tokens are those
    after the first plan's calibration (the baselines are derived from it, on the same tokens)."""
    data = EvalData.load(settings, plans[0][0] if plans else None)
    points: list[Point] = []
    done: dict[tuple, Point] = {}
    for plan, shapes in plans:
        g = plan.geometry
        full = g.non_embedding_params(plan.full)
        model = tokenizer = None
        for shape in shapes:
            shape = plan.check_shape(shape)
            params = g.non_embedding_params(shape)
            point = Point(label(plan), shape.name, shape.depth, shape.ffn, shape.heads, plan.layer_sets[shape.depth],
                          params, params / full)  # fmt: skip
            key = network_key(plan, shape)
            if key in done:
                twin = done[key]
                point.ppl, point.acc, point.acc_norm, point.shared_with = twin.ppl, twin.acc, twin.acc_norm, twin.label
            else:
                if model is None:
                    model, tokenizer = loader(plan)
                row = score(model.at(shape), tokenizer, data)
                point.ppl, point.acc, point.acc_norm = row.get("ppl"), row.get("acc"), row.get("acc_norm")
                point.seconds = row["seconds"]
                done[key] = point
            points.append(point)
            if on_point is not None:
                on_point(point)
        del model
    return points


def relevant(plan: Plan, shape: Shape, kind: str | None) -> bool:
    """A derived baseline is evaluated where it differs from the plan it came from: a depth baseline below
    full depth, a width baseline below full width (elsewhere it is the same network)."""
    from edgekit.elastic.selection import DEPTH_BASELINES

    if kind is None:
        return True
    if kind in DEPTH_BASELINES:
        return shape.depth < plan.geometry.num_layers
    return shape.ffn < 100 or shape.heads < plan.geometry.heads_per_group


def compare(
    plans: list[Plan],
    grid: list[Shape],
    settings: EvalSettings,
    kinds: list[str],
    calib: Path | None,
    model: str | None = None,
    on_stage: Callable[[str], Any] | None = None,
    on_total: Callable[[int], None] | None = None,
    on_point: Callable[[Point], None] | None = None,
) -> list[Point]:
    """The plans, plus baselines of `kinds` derived from the first, evaluated on the grid."""
    from transformers import AutoTokenizer

    from edgekit.elastic.base_model import base_folder, load_elastic
    from edgekit.elastic.plan import load_permutations
    from edgekit.elastic.selection import baselines

    entries: list[tuple[Plan, Any, str | None]] = [(p, None, None) for p in plans]
    if kinds:
        if calib is None:
            raise UsageError("baselines are built from the plan's calibration text: give it")
        derived = baselines(plans[0], load_permutations(plans[0]), calib, kinds, model, on_stage=on_stage)
        entries += [(p, q, k) for (p, q), k in zip(derived, kinds, strict=True)]
    jobs = [(p, [s for s in grid if relevant(p, s, k)]) for p, _, k in entries]
    perms_of = {id(p): q for p, q, _ in entries}
    if on_total is not None:
        on_total(sum(len(s) for _, s in jobs))

    def loader(plan: Plan) -> tuple[Any, Any]:
        elastic = load_elastic(plan, model, perms=perms_of.get(id(plan)))
        return elastic, AutoTokenizer.from_pretrained(base_folder(plan, model))

    return frontier(jobs, settings, loader, on_point=on_point)


# ------------------------------------------------------------------------------------------- plots


def _series(points: list[Point]) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {}
    for p in points:
        out.setdefault(p.label, []).append(p)
    return {k: sorted(v, key=lambda p: p.params) for k, v in out.items()}


def plot_png(points: list[Point], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [(m, name) for m, name in (("ppl", "perplexity (log)"), ("acc_norm", "acc_norm")) if _has(points, m)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, (metric, name) in zip(axes[0], metrics, strict=True):
        for lab, series in _series(points).items():
            pts = [p for p in series if getattr(p, metric) is not None]
            xs = [p.params / 1e6 for p in pts]
            ys = [getattr(p, metric) for p in pts]
            ax.plot(xs, ys, "o-" if lab.startswith("amoeba/flap") else "o--", label=lab, alpha=0.85)
            for p, x, y in zip(pts, xs, ys, strict=True):
                ax.annotate(p.shape, (x, y), fontsize=6, alpha=0.6, xytext=(2, 2), textcoords="offset points")
        if metric == "ppl":
            ax.set_yscale("log")
        ax.set_xlabel("non-embedding parameters (M)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save_png(fig, path)


def save_png(fig: Any, path: Path) -> None:
    """Write a matplotlib figure to `path` whole or not at all, and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    tmp.replace(path)


def plot_terminal(points: list[Point], metric: str = "ppl", width: int = 90, height: int = 22) -> str:
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("clear")
    for lab, series in _series(points).items():
        pts = [p for p in series if getattr(p, metric) is not None]
        if pts:
            plt.plot([p.params / 1e6 for p in pts], [getattr(p, metric) for p in pts], label=lab, marker="dot")
    if metric == "ppl":
        plt.yscale("log")
    plt.xlabel("non-embedding parameters (M)")
    plt.title(metric)
    return plt.build()


def _has(points: list[Point], metric: str) -> bool:
    return any(getattr(p, metric) is not None for p in points)
