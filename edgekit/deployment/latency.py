"""Latency and memory of any shape from a few measured ones: the maths behind a LUT (pure functions).

Decode at batch 1 streams every kept weight once per token, so its cost is close to linear in the
parameters it reads (the kept layers and the LM head) plus a per-layer overhead (kernel launches,
norms, the KV cache) and a fixed per-token cost (sampling, the runtime's own loop):

    decode_ms = fixed + per_layer * depth + per_mparam * streamed_mparams

Time to first token grows with the prompt the same way, per prompt token; peak memory with the
parameters held. Each model is fitted by least squares; errors are reported as nn-Meter does
(median and max relative error, RMSE, share within ±10 %).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgekit.deployment.measure import RuntimeFigures
from edgekit.shapes import Geometry, Shape, parse_shape

DECODE_TERMS = ["fixed", "per_layer", "per_mparam"]
TTFT_TERMS = ["fixed", "per_token", "per_token_layer", "per_token_mparam"]
MEMORY_TERMS = ["fixed_mb", "per_mparam_mb"]


@dataclass(frozen=True)
class Features:
    depth: int
    streamed_mparams: float  # weights read per decoded token: kept layers + LM head, in millions
    held_mparams: float  # weights held in memory: the above + the embedding table

    @classmethod
    def of(cls, geometry: Geometry, shape: Shape) -> Features:
        head = geometry.vocab * geometry.hidden
        layers = geometry.non_embedding_params(shape)
        return cls(shape.depth, (layers + head) / 1e6, (layers + 2 * head) / 1e6)


def decode_row(f: Features) -> list[float]:
    return [1.0, float(f.depth), f.streamed_mparams]


def ttft_row(f: Features, prompt_len: int) -> list[float]:
    n = float(prompt_len)
    return [1.0, n, n * f.depth, n * f.streamed_mparams]


def memory_row(f: Features) -> list[float]:
    return [1.0, f.held_mparams]


@dataclass
class ShapeMeasurement(RuntimeFigures):
    """What `profile` measured for one shape in one runtime: the runtime's figures, and the compiled model."""

    shape: str = ""
    model_bytes: int = 0  # compiled model files on disk
    compile_s: float = 0.0


@dataclass(frozen=True)
class Prediction:
    shape: str
    decode_ms: float
    ttft_ms: float
    memory_mb: float
    prompt_len: int


@dataclass
class Predictor:
    decode: list[float]
    ttft: list[float]
    memory: list[float]
    fitted_on: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decode_ms": dict(zip(DECODE_TERMS, self.decode, strict=True)),
            "ttft_ms": dict(zip(TTFT_TERMS, self.ttft, strict=True)),
            "memory_mb": dict(zip(MEMORY_TERMS, self.memory, strict=True)),
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Predictor:
        return cls(
            [float(data["decode_ms"][k]) for k in DECODE_TERMS],
            [float(data["ttft_ms"][k]) for k in TTFT_TERMS],
            [float(data["memory_mb"][k]) for k in MEMORY_TERMS],
            list(data.get("fitted_on", [])),
        )

    def predict(self, geometry: Geometry, shape: Shape, prompt_len: int = 128) -> Prediction:
        f = Features.of(geometry, shape)
        return Prediction(
            shape.name,
            float(np.dot(self.decode, decode_row(f))),
            float(np.dot(self.ttft, ttft_row(f, prompt_len))),
            float(np.dot(self.memory, memory_row(f))),
            prompt_len,
        )

    def scaled(self, decode: float, compute: float, memory: float = 1.0) -> Predictor:
        """Another device's estimate: decode scales with memory bandwidth, prompt processing with compute."""
        return Predictor(
            [c * decode for c in self.decode],
            [c * compute for c in self.ttft],
            [c * memory for c in self.memory],
            self.fitted_on,
        )


def _lstsq(rows: list[list[float]], y: list[float]) -> list[float]:
    """Least squares with every coefficient >= 0: each term is a cost, and a negative one (noise on a
    few points) would predict negative latency for shapes outside the fitted range. Active set:
    refit without the terms that came out negative until none does."""
    x, target = np.asarray(rows, dtype=float), np.asarray(y, dtype=float)
    active = list(range(x.shape[1]))
    coef = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active], target, rcond=None)
        if (sol >= 0).all():
            coef[active] = sol
            break
        active = [a for a, c in zip(active, sol, strict=True) if c > 0]
    return [float(c) for c in coef]


def fit_predictor(geometry: Geometry, measured: list[ShapeMeasurement]) -> Predictor:
    if len(measured) < 2:
        raise ValueError("a predictor needs at least two measured shapes")
    feats = [(m, Features.of(geometry, parse_shape(m.shape, geometry))) for m in measured]
    decode = _lstsq([decode_row(f) for _, f in feats], [m.decode_ms for m, _ in feats])
    ttft_rows, ttft_y = [], []
    for m, f in feats:
        for n, ms in m.ttft_ms.items():
            ttft_rows.append(ttft_row(f, n))
            ttft_y.append(ms)
    ttft = _lstsq(ttft_rows, ttft_y) if ttft_rows else [0.0] * len(TTFT_TERMS)
    memory = _lstsq([memory_row(f) for _, f in feats], [m.peak_rss_mb for m, _ in feats])
    return Predictor(decode, ttft, memory, [m.shape for m, _ in feats])


@dataclass(frozen=True)
class ErrorStats:
    """nn-Meter's way of reporting a latency predictor: on shapes it was not fitted on."""

    n: int
    median_pct: float
    max_pct: float
    rmse: float
    within_10_pct: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def error_stats(predicted: list[float], measured: list[float]) -> ErrorStats:
    if not measured:
        return ErrorStats(0, 0.0, 0.0, 0.0, 0.0)
    rel = [abs(p - m) / m * 100 for p, m in zip(predicted, measured, strict=True)]
    rmse = float(np.sqrt(np.mean([(p - m) ** 2 for p, m in zip(predicted, measured, strict=True)])))
    return ErrorStats(
        len(rel),
        round(statistics.median(rel), 2),
        round(max(rel), 2),
        round(rmse, 3),
        round(100 * sum(r <= 10 for r in rel) / len(rel), 1),
    )


def fit_subset(shapes: list[Shape], k: int = 5) -> list[Shape]:
    """The shapes to fit on: the four corners of the depth x width box (widths ordered by FFN, then heads),
    then the middle, then spread out."""
    depths = sorted({s.depth for s in shapes})
    widths = sorted({(s.ffn, s.heads) for s in shapes})
    wanted = [
        (depths[-1], widths[-1]),
        (depths[0], widths[-1]),
        (depths[-1], widths[0]),
        (depths[0], widths[0]),
        (depths[len(depths) // 2], widths[len(widths) // 2]),
    ]
    chosen: list[Shape] = []
    for d, (f, h) in wanted:
        s = Shape(d, f, h)
        if s in shapes and s not in chosen:
            chosen.append(s)
    for s in shapes:  # grids without all corners: fill up in grid order
        if len(chosen) >= min(k, len(shapes)):
            break
        if s not in chosen:
            chosen.append(s)
    return chosen[: max(k, 2)]


def validate(geometry: Geometry, measured: list[ShapeMeasurement], fit_on: list[str]) -> dict[str, Any]:
    """Fit on `fit_on`, score on every other measured shape: the error a user should expect."""
    train = [m for m in measured if m.shape in fit_on]
    held = [m for m in measured if m.shape not in fit_on]
    predictor = fit_predictor(geometry, train)
    preds = [predictor.predict(geometry, parse_shape(m.shape, geometry)) for m in held]
    decode = error_stats([p.decode_ms for p in preds], [m.decode_ms for m in held])
    memory = error_stats([p.memory_mb for p in preds], [m.peak_rss_mb for m in held])
    ttft_p, ttft_m = [], []
    for m in held:
        for n, ms in m.ttft_ms.items():
            ttft_p.append(predictor.predict(geometry, parse_shape(m.shape, geometry), n).ttft_ms)
            ttft_m.append(ms)
    return {
        "fitted_on": fit_on,
        "held_out": [m.shape for m in held],
        "decode": decode.to_dict(),
        "ttft": error_stats(ttft_p, ttft_m).to_dict(),
        "memory": memory.to_dict(),
        "per_shape": {
            m.shape: {"decode_ms": m.decode_ms, "predicted_ms": round(p.decode_ms, 3)}
            for m, p in zip(held, preds, strict=True)
        },
    }
