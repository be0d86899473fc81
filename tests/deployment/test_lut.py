"""Latency LUTs (edgekit.deployment.lut): the file round trip, lookup order, and estimates for other targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deployment_helpers import SMOL, _synthetic

from edgekit.deployment.latency import fit_predictor
from edgekit.deployment.lut import ESTIMATED, MEASURED, Lut, estimate, find_lut, read_lut, save_lut
from edgekit.errors import IntegrityError


def _lut(target: str, status: str = MEASURED, bandwidth: float | None = 20.0) -> Lut:
    grid = [SMOL.coupled(d, w) for d in (30, 15) for w in (100, 48)]
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
    assert back.measured_for(SMOL.full).decode_ms == pytest.approx(back.measured[0].decode_ms)
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
    full = SMOL.full
    assert est.predict(full).decode_ms < src.predict(full).decode_ms
    fp16 = estimate(src, "rtx-4090", "gpu", 1008, 165000.0, "ort", "fp16", "cuda", "test")
    r4090 = 20.0 / (1008 * 0.7)
    assert fp16.predictor.decode[2] == pytest.approx(src.predictor.decode[2] * r4090 * 2.0 / 0.5625)
    assert fp16.predictor.memory[1] == pytest.approx(src.predictor.memory[1] * 2.0 / 0.5625)
    with pytest.raises(IntegrityError):
        estimate(_lut("host-z", bandwidth=None), "h100", "gpu", 3350, None, "ort", "fp16", "cuda", "x")


def test_a_corrupt_lut_is_an_error_naming_it_not_skipped(edgekit_home: Path, cli) -> None:
    """Skipping it would quietly predict from another LUT: an estimate where the user had measured."""
    luts = edgekit_home / "luts"
    luts.mkdir(parents=True)
    (luts / "host-deadbeef.ort-int4-cpu.smollm2-135m.json").write_text('{"format": "edgekit-lut/1", "target"')
    with pytest.raises(IntegrityError, match="host-deadbeef.ort-int4-cpu.smollm2-135m.json is corrupt"):
        find_lut("orin-nx-16gb", "ort", "smollm2-135m")
    r = cli("targets")
    assert r.code == 3 and "delete it, or measure it again" in r.err and len(r.err.strip().splitlines()) == 1


def test_a_lut_with_a_flipped_figure_is_corrupt_not_a_wrong_choice(tiny_lut: Path, tmp_path: Path) -> None:
    from edgekit.deployment.lut import read_lut
    from edgekit.errors import IntegrityError

    path = tmp_path / tiny_lut.name
    text = tiny_lut.read_text()
    assert '"sealed_sha256"' in text
    import re

    at = re.search(r'"decode_ms": (\d)', text).start(1)
    path.write_text(text[:at] + ("1" if text[at] != "1" else "2") + text[at + 1 :])  # still valid JSON
    with pytest.raises(IntegrityError, match=r"LUT .* was altered after it was written: delete it, or measure"):
        read_lut(path)
