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


def test_int4_builds_take_our_weights_and_the_builder_keeps_its_own_when_asked(
    tiny_subnet: Path, tmp_path: Path
) -> None:
    """int4 and int4-mixed are the builder's graph with our GPTQ weights (int4-mixed: the LM head in int8);
    quant=builder keeps the builder's own quantization (int4-mixed then is its k-quant with int8 layers). The
    builds themselves are tests/quantize/test_matmul_nbits.py's."""
    from edgekit.engines.ort import build_settings
    from edgekit.errors import UsageError

    built_as, extra, quant = build_settings("int4-mixed", {"block_size": "64", "calib_tokens": "2048"})
    assert built_as == "int4" and extra == {"hf_token": "false", "block_size": "64"}
    assert quant.method == "gptq" and quant.head_bits == 8 and quant.block == 64 and quant.calib_tokens == 2048
    assert not quant.symmetric and build_settings("int4", {"is_symmetric": "true"})[2].symmetric
    assert build_settings("int4", {"quant": "rtn"})[2].method == "rtn"
    built_as, extra, quant = build_settings("int4-mixed", {"quant": "builder"})
    assert quant is None and extra["algo_config"] == "k_quant" and "last_matmul:int8" in extra["matmul_mixed_precision"]
    assert build_settings("fp32", None) == ("fp32", {"hf_token": "false"}, None)
    missing = str(tmp_path / "no.jsonl")
    for bad, message in [({"quant": "awq"}, "quant=awq"), ({"calib_tokens": "lots"}, "calib_tokens=lots"),
                         ({"block_size": "48"}, "block_size=48"), ({"calib": missing}, "not found")]:  # fmt: skip
        with pytest.raises(UsageError, match=message):
            build_settings("int4", bad)
    with pytest.raises(UsageError, match="applies to int4 builds, not fp32"):
        build_settings("fp32", {"quant": "gptq"})
    engine = get_engine("ort")
    assert "int4-mixed" in engine.precisions("cpu") and engine.precisions("cpu")[0] == "int4"
    lines = engine.describe(tiny_subnet, tmp_path / "x", "int4-mixed", "cpu")
    assert "-p int4" in lines[0] and "algo_config" not in lines[0]
    assert "LM head int8" in lines[1] and "GPTQ" in lines[1]
    assert engine.trial_options("int4", {"calib_tokens": "2048"}) == {"calib_tokens": "2048", "quant": "rtn"}
    assert engine.trial_options("int4", {"quant": "builder"}) is None and engine.trial_options("fp32", None) is None


def test_the_builders_cache_sits_beside_the_output_and_is_gone_after(
    tiny_subnet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGKILLed deploy must leave nothing in /tmp: the builder's cache goes beside `out` (a deploy's scratch
    folder, swept by the next writer) under a name that carries our pid."""
    import os

    from edgekit import shell
    from edgekit.artifacts import PARTIAL_PREFIX

    seen: list[Path] = []
    real = shell.capture

    def spy(cmd, **kw):
        argv = list(cmd.argv)
        seen.append(Path(argv[argv.index("-c") + 1]))
        assert seen[-1].is_dir()
        return real(cmd, **kw)

    monkeypatch.setattr(shell, "capture", spy)
    out = tmp_path / "scratch" / "model"
    out.mkdir(parents=True)
    get_engine("ort").compile(tiny_subnet, out, "fp32", "cpu")
    assert (out / "genai_config.json").is_file()
    (cache,) = seen
    assert cache.parent == out.parent and cache.name.startswith(PARTIAL_PREFIX) and str(os.getpid()) in cache.name
    assert not cache.exists()


def test_threads_per_operator_is_a_session_option_written_into_genai_config(tiny_subnet: Path, tmp_path: Path) -> None:
    """intra_op_num_threads never reaches the builder: it is set in genai_config.json, which onnxruntime-genai
    reads when the model loads (and refuses keys it does not know, so a wrong key would fail the load)."""
    import json

    from edgekit.engines.ort import split_session_options
    from edgekit.errors import UsageError

    assert split_session_options({"block_size": "64", "intra_op_num_threads": "1"}) == (
        {"block_size": "64"}, {"intra_op_num_threads": 1})  # fmt: skip
    for bad in ("0", "two"):
        with pytest.raises(UsageError, match="intra_op_num_threads"):
            split_session_options({"intra_op_num_threads": bad})
    engine = get_engine("ort")
    out = tmp_path / "model"
    out.mkdir()
    build = engine.compile(tiny_subnet, out, "fp32", "cpu", {"intra_op_num_threads": "1"})
    assert build["session_options"] == {"intra_op_num_threads": 1} and "intra_op_num_threads" not in build["options"]
    config = json.loads((out / "genai_config.json").read_text())
    assert config["model"]["decoder"]["session_options"]["intra_op_num_threads"] == 1
    session = engine.open(out)
    assert len(list(session.stream([5, 6, 7], Sampling(max_new_tokens=4, min_new_tokens=4)))) == 4
    steps = engine.describe(tiny_subnet, out, "fp32", "cpu", {"intra_op_num_threads": "1"})
    assert "intra_op_num_threads" not in steps[0] and "intra_op_num_threads=1" in steps[1]
