"""The measurement worker (edgekit.deployment.measure) on the tiny subnet through ONNX Runtime GenAI."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime_genai")


def test_measurement_worker_reports_every_figure(tiny_ort_fp32: Path) -> None:
    from edgekit.deployment.measure import MeasureSettings, measure_folder

    fig = measure_folder(
        "ort", tiny_ort_fp32, "cpu", MeasureSettings(new_tokens=6, runs=2, warmup=1, prompt_lens=(8, 32))
    )
    assert fig.runs == 2 and fig.decode_ms > 0 and fig.decode_spread_pct >= 0
    assert set(fig.prefill_ms) == {8, 32} and all(v > 0 for v in fig.ttft_ms.values())
    assert fig.ttft_ms[8] >= fig.prefill_ms[8]
    # the worker's own peak, not its parent's (pytest holds torch and models: far more than this)
    assert fig.baseline_rss_mb < fig.peak_rss_mb < 1000
