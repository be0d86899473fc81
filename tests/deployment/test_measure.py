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


def test_two_builds_timed_in_turn_in_one_worker(tiny_ort_fp32: Path, tmp_path: Path) -> None:
    """A relative budget's check: the candidate and the full model timed alternately in one process. The same
    build twice gives the same speed within the runs' noise; a folder that is not a build fails in one line."""
    from edgekit.deployment.measure import MeasureSettings, measure_pair
    from edgekit.errors import ExternalToolError

    settings = MeasureSettings(new_tokens=24, runs=7, warmup=1, prompt_lens=())
    mine, beside = measure_pair("ort", tiny_ort_fp32, tiny_ort_fp32, "cpu", settings)
    assert mine > 0 and beside > 0 and 1 / 3 < mine / beside < 3  # sub-millisecond tokens: loose bounds
    with pytest.raises(ExternalToolError, match="beside") as info:
        measure_pair("ort", tiny_ort_fp32, tmp_path, "cpu", settings)
    assert "\n" not in str(info.value)
