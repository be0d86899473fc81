"""The ort runtime (edgekit.engines.ort): the same greedy tokens as torch, and when it offers CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime_genai")

from edgekit.engines import Sampling, get_engine  # noqa: E402
from edgekit.engines.base import timed_stream  # noqa: E402


def test_ort_fp32_decodes_the_same_tokens_as_torch(tiny_subnet: Path, tiny_ort_fp32: Path, tmp_path: Path) -> None:
    torch_dir = tmp_path / "torch"
    torch_dir.mkdir()
    get_engine("torch").compile(tiny_subnet, torch_dir, "fp32", "cpu")
    ids = [5, 17, 42, 99, 7, 3, 250, 11]
    greedy = Sampling(max_new_tokens=12, min_new_tokens=12)
    ort_tokens, stamps, _ = timed_stream(get_engine("ort").open(tiny_ort_fp32), ids, greedy)
    torch_tokens, _, _ = timed_stream(get_engine("torch").open(torch_dir), ids, greedy)
    assert len(ort_tokens) == 12 and ort_tokens == torch_tokens
    assert stamps == sorted(stamps)


def test_ort_cuda_needs_both_the_provider_and_a_cuda_genai(monkeypatch: pytest.MonkeyPatch) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    og = pytest.importorskip("onnxruntime_genai")
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(og, "is_cuda_available", lambda: False, raising=False)
    ort = get_engine("ort").probe()
    assert ort.gpu is False and "built without CUDA" in ort.gpu_detail
    monkeypatch.setattr(og, "is_cuda_available", lambda: True, raising=False)
    ort = get_engine("ort").probe()
    assert ort.gpu and "CUDAExecutionProvider" in ort.gpu_detail
