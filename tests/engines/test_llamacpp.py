"""llama.cpp as a runtime (edgekit.engines.llamacpp) and GGUF export (edgekit.export): a tiny subnet written as
GGUF decodes the same greedy tokens in llama.cpp as in transformers; what export writes, and refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.engines import Sampling, get_engine
from edgekit.export.gguf import write_gguf
from edgekit.export.modelfile import modelfile

IDS = [5, 17, 42, 99, 7, 3, 250, 11]


def torch_tokens(subnet: Path, n: int) -> list[int]:
    from transformers import AutoModelForCausalLM

    from edgekit.engines.torch_engine import TorchSession

    session = TorchSession(AutoModelForCausalLM.from_pretrained(subnet).eval())
    return list(session.stream(IDS, Sampling(max_new_tokens=n, min_new_tokens=n)))


def test_a_gguf_loads_back_into_transformers_with_the_same_logits(tiny_subnet: Path, tmp_path: Path) -> None:
    """The writer's layout (tensor names, q/k interleaving, head size) checked by transformers' own GGUF reader,
    with no llama.cpp needed."""
    import torch
    from transformers import AutoModelForCausalLM

    write_gguf(tiny_subnet, tmp_path / "m.gguf", "f32")
    ref = AutoModelForCausalLM.from_pretrained(tiny_subnet).eval()
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf").eval()
    with torch.no_grad():
        a, b = ref(torch.tensor([IDS])).logits, back(torch.tensor([IDS])).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_the_modelfile_carries_the_chat_template_system_prompt_and_stops() -> None:
    template = (
        "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are "
        "Tiny.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']}}"
    )
    text = modelfile("m.gguf", template)
    assert text.startswith("FROM ./m.gguf\n") and 'SYSTEM """You are Tiny."""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "{{ range .Messages }}<|im_start|>{{ .Role }}" in text
    from edgekit.errors import UsageError

    with pytest.raises(UsageError, match="ChatML"):
        modelfile("m.gguf", "{{ bos_token }}[INST] {{ message['content'] }} [/INST]")


def test_export_gguf_writes_the_file_and_its_modelfile(cli, tiny_plan: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny-d4.gguf"
    r = cli("export", "gguf", "--plan", str(tiny_plan), "--shape", "d4-f75-h2", "--precision", "q8_0",
            "--out", str(out), "--json")  # fmt: skip
    assert r.code == 0, r.err
    got = json.loads(r.out)
    assert out.is_file() and got["shape"] == "d4-f75-h2" and got["precision"] == "q8_0" and got["head_dim"] == 16
    assert (tmp_path / "Modelfile").read_text().startswith("FROM ./tiny-d4.gguf")
    r = cli("export", "gguf", "--plan", str(tiny_plan), "--shape", "d4-f75-h2", "--out", str(out))
    assert r.code == 2 and "exists" in r.err
    r = cli("export", "gguf", "--plan", str(tiny_plan), "--shape", "d1-f75-h2", "--out", str(tmp_path / "x.gguf"))
    assert r.code == 2 and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("export", "gguf", "--plan", str(tiny_plan), "--precision", "int4", "--out", str(tmp_path / "y.gguf"))
    assert r.code == 2 and "q4_k_m" in r.err


def test_without_llama_cpp_python_the_runtime_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from edgekit.errors import MissingDependencyError

    real = builtins.__import__

    def no_llama(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    with pytest.raises(MissingDependencyError, match="pip install llama-cpp-python") as info:
        get_engine("llamacpp").check()
    assert info.value.exit_code == 4


@pytest.mark.parametrize("precision", ["f32", "f16"])
def test_llama_cpp_decodes_the_greedy_tokens_transformers_does(tiny_subnet: Path, tmp_path: Path, precision: str):
    pytest.importorskip("llama_cpp")
    engine = get_engine("llamacpp")
    record = engine.compile(tiny_subnet, tmp_path, precision, "cpu")
    assert record["precision"] == precision and (tmp_path / "model.gguf").is_file()
    session = engine.open(tmp_path)
    got = list(session.stream(IDS, Sampling(max_new_tokens=16, min_new_tokens=16)))
    assert got == torch_tokens(tiny_subnet, 16)
    if precision == "f32":
        import torch
        from transformers import AutoModelForCausalLM

        with torch.no_grad():
            ref = AutoModelForCausalLM.from_pretrained(tiny_subnet).eval()(torch.tensor([IDS])).logits[0]
        # llama.cpp's f32 kernels accumulate in another order: the same logits to a few thousandths
        assert torch.allclose(session.sequence_logits(IDS), ref, atol=5e-3)


def test_q4_1_carries_our_gptq_weights_exactly(tiny_subnet: Path, tmp_path: Path) -> None:
    """llama.cpp's default build: the GPTQ levels, scales and zero points deploy computes, written as Q4_1 blocks
    (d, m = -d x zero point, the levels): what llama.cpp dequantizes is what GPTQ chose, to fp16 rounding."""
    import gguf
    import numpy as np

    from edgekit.export.gguf import permute_rotary
    from edgekit.quantize import QuantSettings, quantize_folder

    engine = get_engine("llamacpp")
    record = engine.compile(tiny_subnet, tmp_path, "q4_1", "cpu")
    assert record["quantization"]["method"] == "gptq" and record["exact_blocks"] > 0
    _, weights, _ = quantize_folder(tiny_subnet, QuantSettings(head_bits=8))
    tensors = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "model.gguf")).tensors}
    heads = json.loads((tiny_subnet / "config.json").read_text())["num_attention_heads"]
    for hf, name, rows in [("model.layers.1.mlp.down_proj", "blk.1.ffn_down.weight", None),
                           ("model.layers.0.self_attn.q_proj", "blk.0.attn_q.weight", heads)]:  # fmt: skip
        t = tensors[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.Q4_1
        expected = weights[hf].dequantize().numpy()
        expected = permute_rotary(expected, rows) if rows else expected
        got = gguf.quants.dequantize(t.data, t.tensor_type)
        assert np.abs(got - expected).max() <= 2e-3 * np.abs(expected).max()
    assert engine.trial_options("q4_1", None) == {"quant": "rtn"} and engine.trial_options("q8_0", None) is None
    from edgekit.errors import UsageError

    with pytest.raises(UsageError, match="take quant, calib, calib_tokens"):
        engine.compile(tiny_subnet, tmp_path, "q8_0", "cpu", {"block_size": "64"})
