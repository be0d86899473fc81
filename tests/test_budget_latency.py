"""The pure maths of deploy: the budget grammar, the latency predictor, LUT files and estimates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.deployment.budget import Budget, parse_budget
from edgekit.deployment.latency import (
    Features,
    Predictor,
    ShapeMeasurement,
    error_stats,
    fit_predictor,
    fit_subset,
    validate,
)
from edgekit.deployment.lut import ESTIMATED, MEASURED, Lut, estimate, find_lut, read_lut, save_lut
from edgekit.errors import IntegrityError, UsageError
from edgekit.shapes import Geometry, Shape

SMOL = Geometry(num_layers=30, hidden=576, ffn=1536, num_heads=9, num_kv_heads=3, head_dim=64, vocab=49152)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("40ms", Budget(ms_per_token=40.0, text="40ms")),
        ("40 ms/token", Budget(ms_per_token=40.0, text="40 ms/token")),
        ("25tok/s", Budget(ms_per_token=40.0, text="25tok/s")),
        ("ttft<300ms", Budget(ttft_ms=300.0, text="ttft<300ms")),
        ("ttft<1.5s", Budget(ttft_ms=1500.0, text="ttft<1.5s")),
        ("mem<2GB", Budget(mem_bytes=2e9, text="mem<2GB")),
        ("mem<512MiB", Budget(mem_bytes=512 * 2**20, text="mem<512MiB")),
        ("60%", Budget(relative=0.6, text="60%")),
        ("40ms, 20tok/s,mem<1G", Budget(ms_per_token=40.0, mem_bytes=1e9, text="40ms, 20tok/s,mem<1G")),
        ("50ms,30ms", Budget(ms_per_token=30.0, text="50ms,30ms")),
    ],
)
def test_budget_grammar(text: str, expected: Budget) -> None:
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "40", "40parsecs", "mem<2", "ttft>3ms", "0ms", "150%", "40ms,,"])
def test_budget_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(UsageError):
        parse_budget(text)


def test_relative_budget_resolves_against_the_full_model() -> None:
    b = parse_budget("50%,mem<1GB").resolve(full_ms_per_token=8.0)
    assert b.ms_per_token == pytest.approx(4.0) and b.relative is None and b.mem_bytes == 1e9
    assert parse_budget("50%,3ms").resolve(8.0).ms_per_token == pytest.approx(3.0)


def test_budget_violations_name_each_broken_term() -> None:
    b = parse_budget("40ms,ttft<300ms,mem<1GB")
    assert b.violations(39.0, 900.0, 200.0) == []
    assert b.violations(41.0, 1100.0, 400.0) == ["41.00 ms/token > 40", "first token 400 > 300 ms", "1100 MB > 1000 MB"]
    assert b.violations(41.0, 900.0) == ["41.00 ms/token > 40"]  # no first-token figure: that term is not judged


def _synthetic(geometry: Geometry, shapes: list[Shape], decode: list[float], noise: float = 0.0) -> list:
    """Measurements generated from known coefficients (optionally with a deterministic wobble)."""
    out = []
    for i, s in enumerate(shapes):
        f = Features.of(geometry, s)
        ms = decode[0] + decode[1] * f.depth + decode[2] * f.streamed_mparams
        ms *= 1 + noise * (1 if i % 2 else -1)
        ttft = {n: 5 + n * (0.1 + 0.01 * f.depth + 0.02 * f.streamed_mparams) for n in (16, 64)}
        out.append(ShapeMeasurement(s.name, ms, 1.0, 5, 64, ttft, ttft, 100 + 4 * f.held_mparams, 1000))
    return out


def test_predictor_recovers_known_coefficients_and_scores_held_out_shapes() -> None:
    grid = [Shape(d, w) for d in (30, 24, 20, 15) for w in (100, 82, 61, 48)]
    measured = _synthetic(SMOL, grid, [0.5, 0.05, 0.06])
    p = fit_predictor(SMOL, measured)
    assert p.decode == pytest.approx([0.5, 0.05, 0.06], rel=1e-6)
    assert p.predict(SMOL, Shape(17, 70), 64).decode_ms > p.predict(SMOL, Shape(15, 48), 64).decode_ms
    fit_on = [s.name for s in fit_subset(grid)]
    assert fit_on[:4] == ["d30-w100", "d15-w100", "d30-w48", "d15-w48"] and len(fit_on) == 5
    report = validate(SMOL, measured, fit_on)
    assert report["decode"]["n"] == 11 and report["decode"]["max_pct"] < 1e-6
    assert report["ttft"]["median_pct"] < 1e-6 and report["memory"]["max_pct"] < 1e-6
    noisy = validate(SMOL, _synthetic(SMOL, grid, [0.5, 0.05, 0.06], noise=0.08), fit_on)
    assert 2 < noisy["decode"]["median_pct"] < 25


def test_predictor_never_goes_negative_on_noisy_points() -> None:
    """Two noisy shapes that a free fit would explain with a negative per-layer cost."""
    grid = [Shape(6, 100), Shape(3, 100), Shape(6, 50), Shape(3, 50)]
    tiny = Geometry(num_layers=6, hidden=96, ffn=256, num_heads=6, num_kv_heads=2, head_dim=16, vocab=320)
    measured = _synthetic(tiny, grid, [0.5, 0.01, 0.01])
    measured[0].decode_ms, measured[1].decode_ms = 0.3, 0.9  # the deeper one measured faster
    p = fit_predictor(tiny, measured)
    assert all(c >= 0 for c in p.decode + p.ttft + p.memory)
    for d in range(1, 7):
        for w in (17, 50, 100):
            assert p.predict(tiny, Shape(d, w)).decode_ms > 0


def test_error_stats_follow_nn_meter() -> None:
    s = error_stats([10.0, 11.0, 8.0, 10.5], [10.0, 10.0, 10.0, 10.0])
    assert s.n == 4 and s.median_pct == pytest.approx(7.5) and s.max_pct == pytest.approx(20.0)
    assert s.within_10_pct == pytest.approx(75.0)
    assert s.rmse == pytest.approx(((0 + 1 + 4 + 0.25) / 4) ** 0.5, rel=1e-3)


def _lut(target: str, status: str = MEASURED, bandwidth: float | None = 20.0) -> Lut:
    grid = [Shape(d, w) for d in (30, 15) for w in (100, 48)]
    measured = _synthetic(SMOL, grid, [0.5, 0.05, 0.06])
    return Lut(
        target=target, runtime="ort", precision="int4", device="cpu", status=status,
        model={"name": "smollm2-135m", "digest": "abc", "geometry": SMOL.__dict__},
        provenance={"bandwidth_gbs": bandwidth, "compute_gflops": 100.0, "machine": {"cpu": "test"}},
        settings={}, predictor=fit_predictor(SMOL, measured), measured=measured, created="now",
    )  # fmt: skip


def test_lut_round_trip_and_lookup_prefer_measured_user_files(edgekit_home: Path) -> None:
    path = save_lut(_lut("host-x"))
    back = read_lut(path)
    assert back.predictor.decode == pytest.approx(_lut("host-x").predictor.decode)
    assert back.measured_for(Shape(30, 100)).decode_ms == pytest.approx(back.measured[0].decode_ms)
    save_lut(_lut("host-x", status=ESTIMATED))  # same key: replaces the measured one on disk
    assert find_lut("host-x", "ort", "smollm2-135m").status == ESTIMATED
    assert find_lut("host-y", "ort", "smollm2-135m") is None
    path.write_text("{not json")
    with pytest.raises(IntegrityError):
        read_lut(path)
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(IntegrityError):
        read_lut(path)


def test_estimate_scales_by_bandwidth_with_a_launch_floor() -> None:
    src = _lut("host-x", bandwidth=20.0)
    est = estimate(src, "orin-nx-16gb", "jetson", 102.4, 1880.0, "ort", "int4", "cuda", "test")
    ratio = 20.0 / (102.4 * 0.7)
    assert est.status == ESTIMATED and est.provenance["estimated_from"] == src.key
    assert est.predictor.decode[2] == pytest.approx(src.predictor.decode[2] * ratio)
    assert est.predictor.decode[1] >= 0.15  # per-layer launch floor on a Jetson
    full = Shape(30, 100)
    assert est.predict(full).decode_ms < src.predict(full).decode_ms
    fp16 = estimate(src, "rtx-4090", "gpu", 1008, 165000.0, "ort", "fp16", "cuda", "test")
    r4090 = 20.0 / (1008 * 0.7)
    assert fp16.predictor.decode[2] == pytest.approx(src.predictor.decode[2] * r4090 * 2.0 / 0.5625)
    assert fp16.predictor.memory[1] == pytest.approx(src.predictor.memory[1] * 2.0 / 0.5625)
    with pytest.raises(IntegrityError):
        estimate(_lut("host-z", bandwidth=None), "h100", "gpu", 3350, None, "ort", "fp16", "cuda", "x")


def test_predictor_dict_round_trip() -> None:
    p = Predictor([1.0, 2.0, 3.0], [1.0, 0.1, 0.2, 0.3], [10.0, 2.0], ["d30-w100"])
    assert Predictor.from_dict(p.to_dict()) == p
