"""The accuracy predictor, the latency predictor's twin: fitted on a few dozen shapes evaluated on a dev text
(chosen to cover the space: its corners, edges and centre), it predicts the perplexity of every shape of
the plan's space, so deploy can search thousands of shapes without evaluating them.

    log ppl = b0 + b1 D + b2 u + b3 u^2 + b4 v + b5 v^2 + b6 D u + b7 D v + b8 u v

where D is how much the depth's layer set raises calibration log-perplexity at full width (the DP's own
score, known for every depth), u the fraction of FFN channels removed and v the fraction of query heads
removed. Its error is reported on shapes left out of the fit, as the LUT reports its own (median and max
relative error of the perplexity, share within ±10 %), with the rank correlation that deploy relies on;
then it is refitted on every evaluated shape. A predictor belongs to one plan (and checkpoint) and is
refused for any other.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.artifacts import read_format_json, utc_now, write_json_atomic
from edgekit.errors import IntegrityError
from edgekit.formats import tag
from edgekit.shapes import Shape

if TYPE_CHECKING:
    from edgekit.elastic.plan import Plan

FORMAT = tag("edgekit-accuracy-predictor")
FILE = "accuracy-predictor.json"
TERMS = ["1", "D", "u", "u^2", "v", "v^2", "D*u", "D*v", "u*v"]
HELD_OUT = 10  # shapes evaluated only to measure the predictor's error
RIDGE = 1e-4  # keeps the fit defined when a design lacks a corner (a plan with one depth, one head per group)


def features(plan: Plan, shape: Shape) -> list[float]:
    g = plan.geometry
    scores = plan.depth.scores
    depth = math.log(scores[shape.depth]) - math.log(scores[g.num_layers])
    u = 1 - g.dims(shape).ffn / g.ffn
    v = 1 - shape.heads / g.heads_per_group
    return [1.0, depth, u, u * u, v, v * v, depth * u, depth * v, u * v]


def fit(plan: Plan, measured: dict[Shape, float]) -> list[float]:
    """Least squares on log perplexity (lightly ridged: the design has fewer distinct points than shapes)."""
    x = np.array([features(plan, s) for s in measured])
    y = np.log(np.array(list(measured.values())))
    reg = RIDGE * np.eye(x.shape[1])
    reg[0, 0] = 0.0
    coef = np.linalg.solve(x.T @ x + reg, x.T @ y)
    return [float(c) for c in coef]


def rank_correlation(a: list[float], b: list[float]) -> float:
    """Spearman's rho (ties get their mean rank)."""

    def ranks(values: list[float]) -> np.ndarray:
        order = np.argsort(values, kind="stable")
        r = np.empty(len(values))
        r[order] = np.arange(len(values))
        for v in set(values):  # mean rank for ties
            idx = [i for i, x in enumerate(values) if x == v]
            r[idx] = r[idx].mean()
        return r

    if len(a) < 2:
        return 1.0
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def error_stats(predicted: list[float], measured: list[float]) -> dict[str, Any]:
    """On perplexities: median and max relative error, share within ±10 %, log RMSE, rank correlation."""
    rel = [abs(p - m) / m * 100 for p, m in zip(predicted, measured, strict=True)]
    log_rmse = math.sqrt(sum((math.log(p) - math.log(m)) ** 2 for p, m in zip(predicted, measured, strict=True))
                         / len(rel))  # fmt: skip
    return {
        "n": len(rel),
        "median_pct": round(float(np.median(rel)), 2),
        "max_pct": round(max(rel), 2),
        "within_10_pct": round(100 * sum(r <= 10 for r in rel) / len(rel), 1),
        "log_rmse": round(log_rmse, 4),
        "spearman": round(rank_correlation(predicted, measured), 4),
    }


@dataclass
class AccuracyPredictor:
    coefficients: list[float]
    identity: dict[str, str | None]  # the model digest, plan permutations and SMOL weights it was fitted for
    data: dict[str, Any]  # the dev text (name, sha256), tokens scored, window, tokens skipped
    measured: dict[str, float]  # every evaluated shape's perplexity
    fitted_on: list[str]
    validation: dict[str, Any] | None = None
    metric: str = "ppl"
    terms: list[str] = field(default_factory=lambda: list(TERMS))
    created: str = field(default_factory=utc_now)
    format: str = FORMAT

    def predict(self, plan: Plan, shape: Shape) -> float:
        return math.exp(float(np.dot(self.coefficients, features(plan, shape))))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"format": data.pop("format"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str) -> AccuracyPredictor:
        try:
            found = {k: v for k, v in data.items() if k != "format"}
            predictor = cls(**found)
        except TypeError as exc:
            raise IntegrityError(f"{what} does not describe an accuracy predictor ({exc})") from None
        if predictor.terms != TERMS or len(predictor.coefficients) != len(TERMS):
            raise IntegrityError(f"{what} has terms {predictor.terms}; this edgekit predicts with {TERMS}")
        return predictor


def identity(plan: Plan, smol_sha256: str | None = None) -> dict[str, str | None]:
    return {"model": plan.model.digest, "plan": plan.permutations_sha256, "smol": smol_sha256}


def design(plan: Plan, held_out: int = HELD_OUT, seed: int = 0) -> tuple[list[Shape], list[Shape]]:
    """The shapes to evaluate: the space's corners, edge midpoints and centre (depth x FFN x heads, each at
    its widest, middle and narrowest), then `held_out` others drawn at random to measure the error on."""
    g = plan.geometry
    depths = sorted(plan.depths)
    ffn = g.ffn_grid(plan.width.ffn_floor)
    heads = list(range(g.heads_per_group, 0, -1))

    def three(values: list[int]) -> list[int]:
        return list(dict.fromkeys([values[0], values[len(values) // 2], values[-1]]))

    fit_on = [Shape(d, f, h) for d in three(depths[::-1]) for f in three(ffn) for h in three(heads)]
    rest = [s for s in plan.space() if s not in fit_on]
    extra = random.Random(seed).sample(rest, min(held_out, len(rest)))
    return fit_on, extra


def build(
    plan: Plan,
    evaluate: Callable[[Shape], float],
    data: dict[str, Any],
    smol_sha256: str | None = None,
    held_out: int = HELD_OUT,
    on_shape: Callable[[str], None] | None = None,
) -> AccuracyPredictor:
    """Evaluate the design (`evaluate(shape)` gives its perplexity), fit, score the fit on the held-out shapes,
    refit on all."""
    fit_on, extra = design(plan, held_out)
    measured: dict[Shape, float] = {}
    for shape in fit_on + extra:
        if on_shape:
            on_shape(shape.name)
        measured[shape] = evaluate(shape)
    validation = None
    if extra:
        coef = fit(plan, {s: measured[s] for s in fit_on})
        probe = AccuracyPredictor(coef, {}, data, {}, [])
        predicted = [probe.predict(plan, s) for s in extra]
        validation = {
            "fitted_on": len(fit_on),
            "held_out": [s.name for s in extra],
            **error_stats(predicted, [measured[s] for s in extra]),
            "per_shape": {
                s.name: {"ppl": round(measured[s], 3), "predicted": round(p, 3)}
                for s, p in zip(extra, predicted, strict=True)
            },  # fmt: skip
        }
    return AccuracyPredictor(
        coefficients=fit(plan, measured),
        identity=identity(plan, smol_sha256),
        data=data,
        measured={s.name: round(v, 4) for s, v in measured.items()},
        fitted_on=[s.name for s in measured],
        validation=validation,
    )


def save(predictor: AccuracyPredictor, folder: Path) -> Path:
    path = folder / FILE
    write_json_atomic(path, predictor.to_dict())
    return path


def load(folder: Path, plan: Plan, smol_sha256: str | None = None) -> AccuracyPredictor | None:
    """The predictor stored in `folder`, checked to belong to this plan (and SMOL weights); None if there is none."""
    path = folder / FILE
    if not path.is_file():
        return None
    what = f"accuracy predictor {path}"
    predictor = AccuracyPredictor.from_dict(read_format_json(path, "edgekit-accuracy-predictor", what), what)
    if predictor.identity != identity(plan, smol_sha256):
        raise IntegrityError(
            f"{what} was fitted for another plan or model: refit it with `edgekit elastic predictor` "
            f"(it names model {str(predictor.identity.get('model'))[:12]}, this plan's is {plan.model.digest[:12]})"
        )
    return predictor
