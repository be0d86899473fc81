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


def test_int4_mixed_is_a_builder_setting_that_keeps_the_head_in_int8(tiny_subnet: Path, tmp_path: Path) -> None:
    """A precision named by its build: k-quant int4 with the LM head and the sensitive matmuls in int8. (The
    build itself is bench/quantization.py's on the real model: k-quant needs wider matrices than the tiny
    model's, whose 288-element rows it cannot block.)"""
    from edgekit.engines.ort import build_settings

    built_as, extra = build_settings("int4-mixed", {"block_size": "64"})
    assert built_as == "int4" and extra["algo_config"] == "k_quant" and extra["block_size"] == "64"
    assert "last_matmul:int8" in extra["matmul_mixed_precision"] and extra["hf_token"] == "false"
    assert build_settings("int4", None) == ("int4", {"hf_token": "false"})
    engine = get_engine("ort")
    assert "int4-mixed" in engine.precisions("cpu") and engine.precisions("cpu")[0] == "int4"
    line = engine.describe(tiny_subnet, tmp_path / "x", "int4-mixed", "cpu")[0]
    assert "-p int4" in line and "algo_config=k_quant" in line and "mixed_layers:int8" in line
