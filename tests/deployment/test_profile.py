"""`edgekit profile` (edgekit.deployment.profile): a measured LUT with its validation, and unusable runtimes."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime_genai")


def test_unknown_and_missing_runtimes_are_one_line_errors(cli, tiny_plan: Path) -> None:
    r = cli("profile", "--target", "host", "--runtime", "mlc", "--plan", str(tiny_plan))
    assert r.code == 2 and "builds nothing for cpu" in r.err and "Traceback" not in r.err
    r = cli("profile", "--target", "host", "--runtime", "vllm", "--plan", str(tiny_plan))
    assert r.code == 2 and "unknown runtime" in r.err


def test_profile_writes_a_measured_lut_with_validation(tiny_lut: Path) -> None:
    from edgekit.deployment.lut import read_lut
    from edgekit.shapes import Shape

    lut = read_lut(tiny_lut)
    assert lut.status == "measured" and lut.target.startswith("host-") and lut.runtime == "ort"
    assert lut.precision == "int4" and [m.shape for m in lut.measured][-1] == "d4-f75-h2"
    assert all(m.decode_ms > 0 and m.model_bytes > 0 and m.peak_rss_mb > 0 for m in lut.measured)
    assert lut.validation["held_out"] == ["d4-f75-h2"] and lut.validation["decode"]["n"] == 1
    assert lut.provenance["bandwidth_gbs"] > 0 and "onnxruntime-genai" in lut.provenance["runtime_versions"]
    assert lut.predict(Shape(6, 100, 3)).decode_ms > 0
