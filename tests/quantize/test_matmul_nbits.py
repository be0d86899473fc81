"""Our int4 weights in ONNX Runtime GenAI models (edgekit.quantize.matmul_nbits and the ort engine's int4
builds): the artifact computes exactly the weights we quantized, and is closer to fp32 than the builder's own."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime_genai")

from edgekit.engines import get_engine  # noqa: E402
from edgekit.errors import ExternalToolError  # noqa: E402
from edgekit.quantize import QuantSettings, apply_to_model, quantize_model  # noqa: E402
from edgekit.quantize.calibration import load  # noqa: E402
from edgekit.quantize.matmul_nbits import module_names, pack_levels, pack_zero_points, rewrite  # noqa: E402

HELD_OUT = [7, 44, 3, 250, 19, 5, 88, 120, 64, 31, 9, 200, 150, 12, 77, 4]  # not calibration text


def held_out_text(subnet: Path) -> list[int]:
    """Text the tiny models are built around but never calibrated on (the shipped calibration file is)."""
    import tiny
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(subnet)(tiny.CORPUS[:400])["input_ids"][:64]


@pytest.fixture(scope="module")
def builds(tiny_subnet: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """The tiny subnet built three ways: int4 (GPTQ), int4-mixed (GPTQ, int8 head), the builder's own int4."""
    out = {}
    for name, precision, options in [("gptq", "int4", {}), ("mixed", "int4-mixed", {}),
                                     ("builder", "int4", {"quant": "builder"})]:  # fmt: skip
        folder = tmp_path_factory.mktemp("int4") / name
        folder.mkdir()
        out[name] = (folder, get_engine("ort").compile(tiny_subnet, folder, precision, "cpu", options))
    return out


def torch_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def quantized_torch_model(subnet: Path, head_bits: int):
    """The subnet in torch with the weights an int4 build of it holds (quantized again here: it is deterministic)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(subnet).eval()
    weights, _ = quantize_model(model, QuantSettings(head_bits=head_bits), load(AutoTokenizer.from_pretrained(subnet)))
    apply_to_model(model, weights)
    return model


def graph(folder: Path):
    import onnx

    return onnx.load(str(folder / "model.onnx"), load_external_data=False).graph


def attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize(("name", "head_bits"), [("gptq", 4), ("mixed", 8)])
def test_the_artifact_computes_the_weights_we_quantized(tiny_subnet: Path, builds, name: str, head_bits: int) -> None:
    folder, record = builds[name]
    quant = record["quantization"]
    assert quant["method"] == "gptq" and quant["head_bits"] == head_bits and quant["calibration"]["tokens"] > 0
    assert quant["check"]["top1_agreement"] >= 0.9
    nodes = [n for n in graph(folder).node if n.op_type == "MatMulNBits"]
    assert quant["rewrite"]["nodes"] == len(nodes) and all(len(n.input) >= 4 and n.input[3] for n in nodes)
    head = next(n for n in nodes if n.name.startswith("/lm_head"))
    embed = next(n for n in graph(folder).node if n.op_type == "GatherBlockQuantized")
    assert attrs(head)["bits"] == head_bits == attrs(embed)["bits"] and embed.input[3] == head.input[3]
    expected = torch_logits(quantized_torch_model(tiny_subnet, head_bits), HELD_OUT)
    got = get_engine("ort").open(folder).sequence_logits(HELD_OUT)
    assert float((expected.argmax(-1) == got.argmax(-1)).float().mean()) >= 0.9
    assert float((expected - got).abs().mean() / expected.abs().mean()) < 0.05


def test_gptq_is_closer_to_the_fp32_weights_than_the_builders_own_int4(tiny_subnet: Path, builds) -> None:
    from transformers import AutoModelForCausalLM

    ids = held_out_text(tiny_subnet)
    fp32 = torch_logits(AutoModelForCausalLM.from_pretrained(tiny_subnet).eval(), ids)

    def error(name: str) -> float:
        got = get_engine("ort").open(builds[name][0]).sequence_logits(ids)
        return float((got - fp32).pow(2).mean())

    assert "quantization" not in builds["builder"][1]
    assert error("gptq") < 0.85 * error("builder") and error("mixed") < error("builder")


def test_a_node_we_cannot_map_stops_the_rewrite_before_anything_is_written(builds, tmp_path: Path) -> None:
    import onnx

    folder = tmp_path / "model"
    shutil.copytree(builds["builder"][0], folder)
    model = onnx.load(str(folder / "model.onnx"))
    next(n for n in model.graph.node if n.op_type == "MatMulNBits").name = "/model/layers.0/attn/mystery/MatMul"
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    with pytest.raises(ExternalToolError, match="mystery"):
        rewrite(folder, {})
    assert before == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_builder_node_names_map_to_llama_modules() -> None:
    attn = "model.layers.3.self_attn"
    assert module_names("/model/layers.3/attn/qkv_proj/MatMul_Q4") == [f"{attn}.q_proj", f"{attn}.k_proj",
                                                                       f"{attn}.v_proj"]  # fmt: skip
    assert module_names("/model/layers.12/mlp/down_proj/MatMul_Q4") == ["model.layers.12.mlp.down_proj"]
    assert module_names("/model/layers.0/mlp/gate_up_proj/MatMul") == ["model.layers.0.mlp.gate_proj",
                                                                       "model.layers.0.mlp.up_proj"]  # fmt: skip
    assert module_names("/lm_head/MatMul_Q4") == ["lm_head"]
    assert module_names("/model/layers.0/attn/rotary/MatMul") is None


def test_levels_pack_two_per_byte_low_nibble_first() -> None:
    levels = np.array([[1, 2, 15, 0, 7]], dtype=np.uint8)
    assert pack_levels(levels, 4).tolist() == [[0x21, 0x0F, 0x07]]
    assert pack_levels(levels, 8).tolist() == levels.tolist()
    # an odd number of blocks: the padding zero point is the middle level
    assert pack_zero_points(np.array([[3, 4, 5]], dtype=np.uint8), 4).tolist() == [[0x43, 0x85]]
