"""Put our own quantized weights into an ONNX Runtime GenAI model: its MatMulNBits nodes (and the
GatherBlockQuantized embedding that shares the tied LM head's weights) take the levels, scales and zero
points we computed, in ONNX Runtime's layout.

The model builder makes the graph (fused attention, rotary caches, KV cache layout) and quantizes with
its own round-to-nearest; we keep the graph and replace only the weights, so the artifact is the builder's
standard model with better numbers in it. Every MatMulNBits node must map to weights we have, or nothing is
written: a half-rewritten model would run and be silently wrong.

Layout (onnxruntime contrib op MatMulNBits): B is [N, K / block, block * bits / 8] uint8 with two 4-bit levels
per byte, the even column in the low nibble; scales [N, K / block]; zero points uint8, for 4 bits two per byte
along each row ([N, ceil(blocks / 2)]), for 8 bits one per byte.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ExternalToolError
from edgekit.quantize.gptq import Quantized

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
# the builder's node names -> the Hugging Face modules whose weights they hold, rows stacked in this order
ATTENTION = {"q": ["q"], "k": ["k"], "v": ["v"], "o": ["o"], "qkv": ["q", "k", "v"]}
MLP = {"gate": ["gate"], "up": ["up"], "down": ["down"], "gate_up": ["gate", "up"]}
NODE = re.compile(r"^/model/layers\.(\d+)/(attn|mlp)/(\w+?)_proj/MatMul")
HEAD_NODE = re.compile(r"^/lm_head/MatMul")


def module_names(node_name: str, head: str = "lm_head") -> list[str] | None:
    """The Hugging Face Llama modules a builder MatMulNBits node computes, or None for one we do not know."""
    if HEAD_NODE.match(node_name):
        return [head]
    m = NODE.match(node_name)
    if m is None:
        return None
    layer, block, proj = int(m.group(1)), m.group(2), m.group(3)
    table = ATTENTION if block == "attn" else MLP
    if proj not in table:
        return None
    prefix = f"model.layers.{layer}.{'self_attn' if block == 'attn' else 'mlp'}"
    return [f"{prefix}.{p}_proj" for p in table[proj]]


def pack_levels(levels: np.ndarray, bits: int) -> np.ndarray:
    """[rows, n] levels -> [rows, n * bits / 8] bytes, low nibble first for 4 bits."""
    if bits == 8:
        return levels.astype(np.uint8)
    if bits != 4:
        raise ValueError(f"MatMulNBits levels are packed for 4 or 8 bits, not {bits}")
    if levels.shape[-1] % 2:
        levels = np.concatenate([levels, np.zeros((*levels.shape[:-1], 1), levels.dtype)], axis=-1)
    return (levels[..., 0::2] | (levels[..., 1::2] << 4)).astype(np.uint8)


def pack_zero_points(zeros: np.ndarray, bits: int) -> np.ndarray:
    """[N, blocks] zero points in MatMulNBits' layout: a padded odd count gets the middle level."""
    if bits == 4 and zeros.shape[-1] % 2:
        zeros = np.concatenate([zeros, np.full((zeros.shape[0], 1), 8, zeros.dtype)], axis=-1)
    return pack_levels(zeros, bits)


def layout(q: Quantized) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, scales, zero points) as MatMulNBits stores them."""
    n, k = q.shape
    blocks = k // q.block
    levels = q.levels.numpy().astype(np.uint8).reshape(n, blocks, q.block)
    b = pack_levels(levels, q.bits)
    return b, q.scales.numpy().astype(np.float32), pack_zero_points(q.zero_points.numpy().astype(np.uint8), q.bits)


def rewrite(folder: Path, weights: dict[str, Quantized], head: str = "lm_head") -> dict[str, Any]:
    """Replace the quantized weights of the ONNX model in `folder` (model.onnx + model.onnx.data) with
    `weights` (Hugging Face module name -> Quantized). Returns what was done: nodes, bits per node kind."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / MODEL_FILE))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    done: dict[str, int] = {}
    head_rewrite: tuple[str, str, Quantized, str] | None = None  # (B name, scales name, weights, zero points name)
    for node in graph.node:
        if node.op_type != "MatMulNBits":
            continue
        names = module_names(node.name, head)
        if names is None or any(n not in weights for n in names):
            raise ExternalToolError(f"cannot place our int4 weights: the builder's node {node.name} is not one we map")
        q = weights[names[0]] if len(names) == 1 else Quantized.rows([weights[n] for n in names])
        attrs = {a.name: a for a in node.attribute}
        n_out, k_in = attrs["N"].i, attrs["K"].i
        if q.shape != (n_out, k_in):
            raise ExternalToolError(f"node {node.name} is [{n_out}, {k_in}] but our weights are {list(q.shape)}")
        b, scales, zeros = layout(q)
        scale_dtype = numpy_helper.to_array(inits[node.input[2]]).dtype
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(b, node.input[1]))
        inits[node.input[2]].CopyFrom(numpy_helper.from_array(scales.astype(scale_dtype), node.input[2]))
        zp_name = f"{node.input[1]}_zero_points"
        graph.initializer.append(numpy_helper.from_array(zeros, zp_name))
        inputs = list(node.input)
        if len(inputs) > 3:
            inputs[3] = zp_name
        else:
            inputs.append(zp_name)
        del node.input[:]
        node.input.extend(inputs)
        attrs["bits"].i = q.bits
        attrs["block_size"].i = q.block
        done[node.name] = q.bits
        if names == [head]:
            head_rewrite = (node.input[1], node.input[2], q, zp_name)
    if head_rewrite is not None:
        share_with_embedding(graph, producers, constants, inits, head_rewrite)
    if not done:
        raise ExternalToolError("the built model has no MatMulNBits nodes to put int4 weights into")
    save(model, folder)
    return {"nodes": len(done), "bits": sorted(set(done.values())),
            "head_bits": head_rewrite[2].bits if head_rewrite else None}  # fmt: skip


def share_with_embedding(graph: Any, producers: dict[str, Any], constants: dict[str, Any], inits: dict[str, Any],
                         head: tuple[str, str, Quantized, str]) -> None:  # fmt: skip
    """A tied embedding reads the LM head's quantized weights (GatherBlockQuantized, through a Reshape to
    [vocab, K * bits / 8]): give it the new bit width, row length and zero points."""
    from onnx import numpy_helper

    b_name, scales_name, q, zp_name = head
    n, k = q.shape
    for node in graph.node:
        if node.op_type != "GatherBlockQuantized" or node.input[2] != scales_name:
            continue
        source = producers.get(node.input[0])
        if source is not None and source.op_type == "Reshape" and source.input[0] == b_name:
            target = np.array([n, k * q.bits // 8], dtype=np.int64)
            shape_name = source.input[1]
            if shape_name in constants:
                tensor = constants[shape_name].attribute[0].t
                tensor.CopyFrom(numpy_helper.from_array(target, tensor.name))
            elif shape_name in inits:
                inits[shape_name].CopyFrom(numpy_helper.from_array(target, shape_name))
            else:
                raise ExternalToolError(f"cannot resize the shared embedding's Reshape ({shape_name})")
        elif node.input[0] != b_name:
            raise ExternalToolError(f"the embedding {node.name} reads the LM head's weights in a way we do not know")
        inputs = list(node.input)
        inputs[3:] = [zp_name]
        del node.input[:]
        node.input.extend(inputs)
        for a in node.attribute:
            if a.name == "bits":
                a.i = q.bits
            if a.name == "block_size":
                a.i = q.block


def save(model: Any, folder: Path) -> None:
    """model.onnx and its data file, both replaced only once the new pair is written."""
    import onnx

    staging = folder / ".rewrite"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    onnx.save(model, str(staging / MODEL_FILE), save_as_external_data=True, location=DATA_FILE)
    for name in (DATA_FILE, MODEL_FILE):
        (staging / name).replace(folder / name)
    staging.rmdir()
