"""tvm int4: 4-bit weights (GPTQ's levels, a scale and offset per group) dequantized inside the matrix products
of our Relax Llama, checked against the same weights dequantized in torch and against the fp32 build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")

from test_tvm_engine import PROMPTS, compiled, narrow_llama  # noqa: E402  (tests/engines is on the path)

from edgekit.engines import Sampling, get_engine  # noqa: E402
from edgekit.engines.tvm_int4 import pack, unpack  # noqa: E402
from edgekit.errors import UsageError  # noqa: E402

NEW = 12
# int4 against fp32 on the tiny random model: mean |logit difference| over mean |logit|. Its weights are
# uniform noise that fills every group's range and its logits are small, so 4 bits move them far more than a
# trained model's (measured 0.40 here; the default model's figure is in docs/benchmarks.md); a library that
# read its levels wrongly computes unrelated logits (error above 1)
FP32_RELATIVE_ERROR = 0.6


def int4(hf: Path, out: Path, **options: str) -> Path:
    out.mkdir()
    build = get_engine("tvm").compile(hf, out, "int4", "cpu", {"calib_tokens": "512", **options})
    assert build["precision"] == "int4" and build["quantization"]["method"] == "gptq"
    return out


@pytest.fixture(scope="module")
def subnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return narrow_llama(tmp_path_factory.mktemp("tvm4-subnet") / "hf", seed=3, tied=True, layers=3)


@pytest.fixture(scope="module")
def int4_dir(subnet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return int4(subnet, tmp_path_factory.mktemp("tvm4") / "model")


def dequantized_reference(hf: Path, **options: str):
    """The torch model carrying the weights the int4 build holds: the same GPTQ, dequantized."""
    import torch

    from edgekit.quantize import apply_to_model, quantize_folder, settings_from_options
    from edgekit.quantize.gptq import rtn

    settings = settings_from_options({"calib_tokens": "512"}, head_bits=4, block=int(options.get("block_size", 32)))
    model, weights, _ = quantize_folder(hf, settings)
    apply_to_model(model, weights)
    if not model.config.tie_word_embeddings:  # an untied embedding is rounded to nearest on the same grid
        embedding = model.get_input_embeddings().weight
        with torch.no_grad():
            embedding.copy_(rtn(embedding.detach().float(), 4, settings.block).dequantize())
    return model


def test_levels_pack_eight_to_a_word_lowest_nibble_first() -> None:
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 16, size=(8, 64), dtype=np.uint8)
    scales = rng.random((8, 2), dtype=np.float32) + 0.1
    zeros = rng.integers(0, 16, size=(8, 2), dtype=np.uint8)
    packed = pack(levels, scales, zeros, "float32")
    # rows interleaved in fours: [row / 4, word, row % 4]
    assert packed["qweight"].dtype == np.uint32 and packed["qweight"].shape == (2, 8, 4)
    assert packed["qweight"][1, 2, 3] == sum(int(levels[7, 16 + j]) << (4 * j) for j in range(8))
    assert packed["scales"].shape == (2, 2, 4) and packed["scales"][1, 1, 2] == scales[6, 1]
    np.testing.assert_array_equal(unpack(packed["qweight"]), levels)
    # level * scale + offset is (level - zero) * scale, the MatMulNBits dequantization
    flat = {k: v.transpose(0, 2, 1).reshape(8, -1) for k, v in packed.items() if k != "qweight"}
    w = unpack(packed["qweight"]) * np.repeat(flat["scales"], 32, 1) + np.repeat(flat["offsets"], 32, 1)
    want = (levels.astype(np.float32) - np.repeat(zeros, 32, 1)) * np.repeat(scales, 32, 1)
    np.testing.assert_allclose(w, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        pack(np.full((4, 12), 3), scales[:4, :1], zeros[:4, :1], "float32")  # not whole words
    with pytest.raises(ValueError):
        pack(levels[:6], scales[:6], zeros[:6], "float32")  # not whole groups of 4 rows


def test_build_holds_4_bit_weights_and_its_check(int4_dir: Path, tmp_path: Path) -> None:
    build = json.loads((int4_dir / "edgekit-tvm.json").read_text())
    assert build["precision"] == "int4" and build["dtype"] == "float32"
    quant = build["quantization"]
    assert quant["bits"] == 4 and quant["head_bits"] == 4 and quant["block"] == 32 and quant["head"] == "lm_head"
    assert quant["check"]["top1_agreement"] >= 0.9 and quant["check"]["tokens"] > 8
    assert "model.embed_tokens.qweight" in build["params"] and "model.embed_tokens.weight" not in build["params"]
    assert "model.layers.0.self_attn.qkv_proj.qweight" in build["params"]
    from safetensors import safe_open

    with safe_open(str(int4_dir / "params.safetensors"), "np") as f:
        qkv = f.get_tensor("model.layers.0.self_attn.qkv_proj.qweight")
        scales = f.get_tensor("model.layers.0.self_attn.qkv_proj.scales")
    assert qkv.dtype == np.uint32 and qkv.shape == (128 // 4, 96 // 8, 4) and scales.shape == (128 // 4, 96 // 32, 4)


def test_logits_equal_the_dequantized_weights_in_torch(int4_dir: Path, subnet: Path) -> None:
    """What the library computes is exactly the GPTQ weights' model: every position, and greedy decoding."""
    import torch

    reference = dequantized_reference(subnet)
    session = get_engine("tvm").open(int4_dir)
    ids = PROMPTS[0] + [33, 7, 250, 4, 4, 91, 12, 300]
    with torch.no_grad():
        want = reference(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(session.sequence_logits(ids).numpy(), want, atol=5e-4, rtol=0)
    got = [session.prefill(PROMPTS[0]).numpy()[0, -1]] + [session.decode(t).numpy()[0, -1] for t in ids[8:]]
    np.testing.assert_allclose(np.stack(got), want[7:], atol=5e-4, rtol=0)
    for prompt in PROMPTS:
        out = reference.generate(torch.tensor([prompt]), max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
        tokens = list(session.stream(prompt, Sampling(max_new_tokens=NEW, min_new_tokens=NEW)))
        assert tokens == out[0, len(prompt) :].tolist()


def test_int4_is_close_to_fp32_but_not_equal(int4_dir: Path, subnet: Path, tmp_path: Path) -> None:
    fp32 = get_engine("tvm").open(compiled(subnet, tmp_path / "fp32"))
    session = get_engine("tvm").open(int4_dir)
    ids = PROMPTS[2] + PROMPTS[0]
    a, b = fp32.sequence_logits(ids).numpy(), session.sequence_logits(ids).numpy()
    error = float(np.abs(a - b).mean() / np.abs(a).mean())
    assert 1e-4 < error < FP32_RELATIVE_ERROR  # it is 4-bit (not the fp32 weights), and close to them


def test_untied_head_and_groups_of_64(tmp_path: Path) -> None:
    """An untied LM head is a quantized projection of its own; the embedding is rounded on the same grid; groups
    of 64 need widths in whole groups."""
    import torch

    hf = narrow_llama(tmp_path / "hf", seed=4, tied=False, layers=1)
    config = json.loads((hf / "config.json").read_text())
    assert config["hidden_size"] % 64
    with pytest.raises(UsageError, match="whole groups of 64: hidden_size is 96"):
        get_engine("tvm").compile(hf, tmp_path / "x", "int4", "cpu", {"block_size": "64"})
    folder = int4(hf, tmp_path / "int4")
    params = json.loads((folder / "edgekit-tvm.json").read_text())["params"]
    assert "lm_head.qweight" in params and "model.embed_tokens.qweight" in params
    reference = dequantized_reference(hf)
    session = get_engine("tvm").open(folder)
    with torch.no_grad():
        want = reference(torch.tensor([PROMPTS[0]])).logits[0].numpy()
    np.testing.assert_allclose(session.sequence_logits(PROMPTS[0]).numpy(), want, atol=5e-4, rtol=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"block_size": "48"}, "groups are 32 or 64"), ({"block_size": "x"}, "whole number"),
     ({"quant": "awq"}, "choose one of gptq, rtn"), ({"calib": "/no/such.jsonl"}, "calibration file not found")],
)  # fmt: skip
def test_bad_int4_options_are_refused(subnet: Path, tmp_path: Path, options: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        get_engine("tvm").compile(subnet, tmp_path, "int4", "cpu", options)


def test_latency_trials_round_to_nearest_and_dry_run_says_what_runs(subnet: Path, tmp_path: Path) -> None:
    """deploy measures candidates on rtn builds (same kernels, no calibration); --dry-run lists both steps."""
    engine = get_engine("tvm")
    assert engine.trial_options("int4", {"block_size": "64"}) == {"block_size": "64", "quant": "rtn"}
    assert engine.trial_options("int4", {"quant": "rtn"}) is None and engine.trial_options("fp32", None) is None
    steps = engine.describe(subnet, tmp_path / "out", "int4", "cpu", {"block_size": "32"})
    assert "relax.build it for llvm" in steps[0] and steps[0].endswith("model.so")
    assert "blocks of 32" in steps[1] and "GPTQ" in steps[1] and "params.safetensors" in steps[1]
    assert len(engine.describe(subnet, tmp_path / "out", "fp32", "cpu")) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_default_model_int4_decodes_like_its_dequantized_weights(
    tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path
) -> None:
    """The real default model at full size: the int4 library's greedy reply is the GPTQ weights' own (torch, fp32
    arithmetic on the dequantized weights), token for token."""
    import torch
    from transformers import AutoTokenizer

    from edgekit.quantize import apply_to_model, quantize_folder, settings_from_options

    hf = smollm2_dir
    out = tmp_path_factory.mktemp("tvm4-default") / "model"
    out.mkdir()
    build = get_engine("tvm").compile(hf, out, "int4", "cpu")
    assert build["quantization"]["check"]["top1_agreement"] >= 0.95
    model, weights, _ = quantize_folder(hf, settings_from_options({}, head_bits=4, block=32))
    apply_to_model(model, weights)
    tokenizer = AutoTokenizer.from_pretrained(hf)
    chat = [{"role": "user", "content": "Name three uses of a Python dictionary."}]
    ids = list(tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])
    want = model.generate(torch.tensor([ids]), max_new_tokens=32, min_new_tokens=32, do_sample=False)
    session = get_engine("tvm").open(out)
    tokens = list(session.stream(ids, Sampling(max_new_tokens=32, min_new_tokens=32)))
    assert tokens == want[0, len(ids) :].tolist()


def test_int4_cross_builds_for_a_jetson_gpu(subnet: Path, tmp_path: Path) -> None:
    """The same graph compiles for CUDA sm_87 (an Orin) without a GPU here: float16 activations, dlight's GPU
    schedules with tensorization off (TVM 0.27's tensorizer segfaulted on these products)."""
    out = tmp_path / "cuda"
    out.mkdir()
    build = get_engine("tvm").compile(subnet, out, "int4", "cuda", {"arch": "sm_87", "calib_tokens": "512"})
    assert build["target"] == "cuda (sm_87)" and build["quantization"]["bits"] == 4
    record = json.loads((out / "edgekit-tvm.json").read_text())
    assert record["dtype"] == "float16" and record["device"] == "cuda" and (out / "model.so").stat().st_size > 0
    from safetensors import safe_open

    with safe_open(str(out / "params.safetensors"), "np") as f:
        assert f.get_tensor("model.layers.0.mlp.down_proj.scales").dtype == np.float16


def test_a_draft_on_the_verifiers_int4_arrays_computes_the_cut_of_its_weights(
    int4_dir: Path, subnet: Path, tmp_path: Path
) -> None:
    """A sliced draft (edgekit.speculative.slice) is a library without weights: it runs layers 0 and 2 and the first
    64 MLP channels of the verifier's own arrays, and computes what the same cut of the verifier's int4 weights
    computes in torch; drafting with it keeps the verifier's greedy reply."""
    import torch

    from edgekit.engines.tvm_engine import compile_slice
    from edgekit.speculative import SpeculativeSession
    from edgekit.speculative.slice import SliceSpec, cut, is_slice, open_slice

    spec = SliceSpec([0, 2], 64, 2, [])
    out = tmp_path / "draft"
    out.mkdir()
    assert compile_slice(int4_dir, spec.layers, spec.ffn, out) is not None
    spec.write(out)
    assert is_slice(out) and not (out / "params.safetensors").exists()
    verifier = get_engine("tvm").open(int4_dir)
    draft = open_slice(out, verifier)
    assert all(any(p is v for v in verifier._params) for p in draft._params)  # the verifier's arrays, not copies
    reference = cut(dequantized_reference(subnet), spec)
    ids = PROMPTS[0] + [33, 7, 250, 4, 4, 91, 12, 300]
    with torch.no_grad():
        want = reference(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(draft.sequence_logits(ids).numpy(), want, atol=5e-4, rtol=0)
    got = [draft.prefill(PROMPTS[0]).numpy()[0, -1]] + [draft.decode(t).numpy()[0, -1] for t in ids[8:]]
    np.testing.assert_allclose(np.stack(got), want[7:], atol=5e-4, rtol=0)
    spec_session = SpeculativeSession(verifier, draft, 3)
    greedy = Sampling(max_new_tokens=NEW, min_new_tokens=NEW)
    for prompt in PROMPTS:
        assert list(spec_session.stream(prompt, greedy)) == list(verifier.stream(prompt, greedy))
    assert spec_session.stats.drafted > 0
    with pytest.raises(UsageError, match="open it with its verifier"):
        get_engine("tvm").open(out)
