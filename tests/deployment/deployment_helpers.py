"""Helpers shared by the latency and LUT tests: the default model's geometry and synthetic measurements."""

from __future__ import annotations

from edgekit.deployment.latency import Features, ShapeMeasurement
from edgekit.shapes import Geometry, Shape

SMOL = Geometry(num_layers=30, hidden=576, ffn=1536, num_heads=9, num_kv_heads=3, head_dim=64, vocab=49152)


def _synthetic(geometry: Geometry, shapes: list[Shape], decode: list[float], noise: float = 0.0) -> list:
    """Measurements generated from known coefficients (optionally with a deterministic wobble)."""
    out = []
    for i, s in enumerate(shapes):
        f = Features.of(geometry, s)
        ms = decode[0] + decode[1] * f.depth + decode[2] * f.streamed_mparams
        ms *= 1 + noise * (1 if i % 2 else -1)
        ttft = {n: 5 + n * (0.1 + 0.01 * f.depth + 0.02 * f.streamed_mparams) for n in (16, 64)}
        peak = 100 + 4 * f.held_mparams
        out.append(ShapeMeasurement(ms, 1.0, 5, 64, ttft, ttft, peak, shape=s.name, model_bytes=1000))
    return out
