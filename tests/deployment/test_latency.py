"""The latency predictor (edgekit.deployment.latency): fitting, held-out validation and error statistics."""

from __future__ import annotations

import pytest
from deployment_helpers import SMOL, _synthetic

from edgekit.deployment.latency import Predictor, error_stats, fit_predictor, fit_subset, validate
from edgekit.shapes import Geometry, Shape


def test_predictor_recovers_known_coefficients_and_scores_held_out_shapes() -> None:
    grid = [SMOL.coupled(d, w) for d in (30, 24, 20, 15) for w in (100, 82, 61, 48)]
    measured = _synthetic(SMOL, grid, [0.5, 0.05, 0.06])
    p = fit_predictor(SMOL, measured)
    assert p.decode == pytest.approx([0.5, 0.05, 0.06], rel=1e-6)
    assert p.predict(SMOL, Shape(17, 71, 2), 64).decode_ms > p.predict(SMOL, SMOL.coupled(15, 48), 64).decode_ms
    # FFN and heads apart: more heads at the same FFN read more weights, so they cost more
    assert p.predict(SMOL, Shape(30, 50, 3)).decode_ms > p.predict(SMOL, Shape(30, 50, 1)).decode_ms
    fit_on = [s.name for s in fit_subset(grid)]
    assert fit_on[:4] == ["d30-f100-h3", "d15-f100-h3", "d30-f50-h1", "d15-f50-h1"] and len(fit_on) == 5
    report = validate(SMOL, measured, fit_on)
    assert report["decode"]["n"] == 11 and report["decode"]["max_pct"] < 1e-6
    assert report["ttft"]["median_pct"] < 1e-6 and report["memory"]["max_pct"] < 1e-6
    noisy = validate(SMOL, _synthetic(SMOL, grid, [0.5, 0.05, 0.06], noise=0.08), fit_on)
    assert 2 < noisy["decode"]["median_pct"] < 25


def test_predictor_never_goes_negative_on_noisy_points() -> None:
    """Two noisy shapes that a free fit would explain with a negative per-layer cost."""
    tiny = Geometry(num_layers=6, hidden=96, ffn=256, num_heads=6, num_kv_heads=2, head_dim=16, vocab=320)
    grid = [tiny.coupled(6, 100), tiny.coupled(3, 100), tiny.coupled(6, 50), tiny.coupled(3, 50)]
    measured = _synthetic(tiny, grid, [0.5, 0.01, 0.01])
    measured[0].decode_ms, measured[1].decode_ms = 0.3, 0.9  # the deeper one measured faster
    p = fit_predictor(tiny, measured)
    assert all(c >= 0 for c in p.decode + p.ttft + p.memory)
    for d in range(1, 7):
        for f, h in ((25, 1), (50, 2), (100, 3)):
            assert p.predict(tiny, Shape(d, f, h)).decode_ms > 0


def test_error_stats_follow_nn_meter() -> None:
    s = error_stats([10.0, 11.0, 8.0, 10.5], [10.0, 10.0, 10.0, 10.0])
    assert s.n == 4 and s.median_pct == pytest.approx(7.5) and s.max_pct == pytest.approx(20.0)
    assert s.within_10_pct == pytest.approx(75.0)
    assert s.rmse == pytest.approx(((0 + 1 + 4 + 0.25) / 4) ** 0.5, rel=1e-3)


def test_predictor_dict_round_trip() -> None:
    p = Predictor([1.0, 2.0, 3.0], [1.0, 0.1, 0.2, 0.3], [10.0, 2.0], ["d30-w100"])
    assert Predictor.from_dict(p.to_dict()) == p
