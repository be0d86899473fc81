"""A subnet as GGUF, the file llama.cpp, ollama and LM Studio load: written with the `gguf` package's writer
in llama.cpp's Llama layout (its tensor names, q/k rows interleaved for its rotary kernel), quantized with the
`gguf` package's own block quantizers (F32, F16, Q8_0, Q4_0, Q4_1) or, for the K-quants, by llama.cpp's
quantizer through llama-cpp-python.

A narrowed subnet keeps its head size while its query heads drop, so `hidden / heads` is no longer the head
size: the attention key and value lengths and the rotary dimension are written out. The tokenizer comes from
the GGUF the model was pulled from when there is one (its vocabulary, merges, pre-tokenizer and special
tokens, verbatim: what llama.cpp already loads for the full model), else from the Hugging Face tokenizer.json
(byte-level BPE only).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import MissingDependencyError, UsageError

# our precision names -> the gguf package's quantization type (the ones it can write itself)
GGUF_WRITES = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1"}
# written as f16 first, then llama.cpp's quantizer (llama-cpp-python's binding of llama_model_quantize)
LLAMA_QUANTIZES = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}  # llama_ftype values
PRECISIONS = (*GGUF_WRITES, *LLAMA_QUANTIZES)
LAYER_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}  # fmt: skip
FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7}  # llama_ftype values
TOKENIZER_KEYS = "tokenizer."


def permute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face's q/k rows (each head's rotary halves apart) in llama.cpp's order (the pairs interleaved):
    what convert_hf_to_gguf.py does, and what transformers undoes when it loads a GGUF."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensor_type(name: str, precision: str) -> str:
    """Norms stay F32 (as llama.cpp writes them); the token embedding of a 4-bit file is Q8_0, as in the source."""
    if name.endswith("_norm.weight") or name == "output_norm.weight":
        return "F32"
    if name == "token_embd.weight" and precision in ("q4_0", "q4_1"):
        return "Q8_0"
    return GGUF_WRITES[precision]


def pack_q4_1(q: Any) -> np.ndarray:
    """Our block-quantized weight (edgekit.quantize: 4-bit levels, a scale and an integer zero point per block of
    32) as GGML Q4_1 blocks, exactly: each block is d (f16), m = -d x zero point (f16), then 16 bytes whose low
    nibbles are its first 16 levels and high nibbles the last 16; a weight is d x level + m."""
    if q.bits != 4 or q.block != 32:
        raise ValueError("Q4_1 holds 4-bit levels in blocks of 32")
    n, k = q.shape
    levels = q.levels.numpy().astype(np.uint8).reshape(n, k // 32, 32)
    d = q.scales.numpy().astype(np.float16)
    m = (-q.scales.numpy() * q.zero_points.numpy().astype(np.float32)).astype(np.float16)
    qs = (levels[..., :16] | (levels[..., 16:] << 4)).astype(np.uint8)
    blocks = np.concatenate([d[..., None].view(np.uint8), m[..., None].view(np.uint8), qs], axis=-1)
    return np.ascontiguousarray(blocks.reshape(n, -1))


def write_gguf(hf_dir: Path, out: Path, precision: str = "f16", source_gguf: Path | None = None,
               quantized: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """`out`, a GGUF of the Hugging Face Llama in `hf_dir`, written whole to a temporary name first. With
    `quantized` (Hugging Face module name -> edgekit.quantize.Quantized, e.g. GPTQ's) and q4_1, those matrices are
    written as their exact Q4_1 blocks instead of being rounded again by the gguf package."""
    import gguf
    from safetensors.numpy import load_file

    if precision not in GGUF_WRITES:
        raise UsageError(f"the gguf writer writes {', '.join(GGUF_WRITES)}, not {precision}")
    config = json.loads((hf_dir / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise UsageError(f"GGUF export writes Llama models; {hf_dir} is {config.get('model_type')}")
    weights = load_file(str(hf_dir / "model.safetensors"))
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        writer.add_name(config.get("_name_or_path") or hf_dir.name)
        writer.add_block_count(config["num_hidden_layers"])
        writer.add_context_length(config.get("max_position_embeddings", 2048))
        writer.add_embedding_length(config["hidden_size"])
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
        writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
        writer.add_vocab_size(config["vocab_size"])
        writer.add_file_type(FILE_TYPES[precision])
        tokenizer_fields(writer, hf_dir, source_gguf)
        tensors = llama_tensors(weights, config, heads, kv)
        ours = gguf_blocks(quantized, config, heads, kv) if quantized and precision == "q4_1" else {}
        for name, array in tensors.items():
            qtype = getattr(gguf.GGMLQuantizationType, tensor_type(name, precision))
            if name in ours:
                writer.add_tensor(name, ours[name], raw_dtype=gguf.GGMLQuantizationType.Q4_1)
                continue
            data = np.ascontiguousarray(array.astype(np.float32))
            if qtype == gguf.GGMLQuantizationType.F16:
                writer.add_tensor(name, data.astype(np.float16))
            elif qtype == gguf.GGMLQuantizationType.F32:
                writer.add_tensor(name, data)
            else:
                writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"tool": "gguf", "precision": precision, "tensors": len(tensors), "head_dim": head_dim,
            "exact_blocks": len(ours)}  # fmt: skip


def llama_tensors(weights: dict[str, np.ndarray], config: dict[str, Any], heads: int, kv: int) -> dict[str, Any]:
    out = {"token_embd.weight": weights["model.embed_tokens.weight"]}
    for i in range(config["num_hidden_layers"]):
        for hf, name in LAYER_NAMES.items():
            w = weights[f"model.layers.{i}.{hf}.weight"]
            if name == "attn_q":
                w = permute_rotary(w, heads)
            elif name == "attn_k":
                w = permute_rotary(w, kv)
            out[f"blk.{i}.{name}.weight"] = w
    out["output_norm.weight"] = weights["model.norm.weight"]
    if not config.get("tie_word_embeddings", False) and "lm_head.weight" in weights:
        out["output.weight"] = weights["lm_head.weight"]
    return out


def gguf_blocks(quantized: dict[str, Any], config: dict[str, Any], heads: int, kv: int) -> dict[str, np.ndarray]:
    """Our quantized matrices as Q4_1 tensors under llama.cpp's names (q/k rows interleaved as the weights are:
    a block lies within one row, so rows move whole)."""
    out = {}
    for i in range(config["num_hidden_layers"]):
        for hf, name in LAYER_NAMES.items():
            q = quantized.get(f"model.layers.{i}.{hf}")
            if q is None:
                continue
            blocks = pack_q4_1(q)
            if name == "attn_q":
                blocks = permute_rotary(blocks, heads)
            elif name == "attn_k":
                blocks = permute_rotary(blocks, kv)
            out[f"blk.{i}.{name}.weight"] = blocks
    return out


def tokenizer_fields(writer: Any, hf_dir: Path, source_gguf: Path | None) -> None:
    """The tokenizer: copied from the source GGUF when the model came from one, else built from tokenizer.json."""
    import gguf

    if source_gguf is not None and source_gguf.is_file():
        reader = gguf.GGUFReader(str(source_gguf))
        for key, field in reader.fields.items():
            if key.startswith(TOKENIZER_KEYS):
                copy_field(writer, key, field)
        return
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    spec = json.loads(tok.backend_tokenizer.to_str())
    if spec.get("model", {}).get("type") != "BPE":
        raise UsageError(f"GGUF export builds byte-level BPE vocabularies; {hf_dir}'s tokenizer is "
                         f"{spec.get('model', {}).get('type')}: export from a model pulled from a GGUF")  # fmt: skip
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = set(tok.all_special_tokens) | {t.content for t in tok.added_tokens_decoder.values()}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    for kind in ("bos", "eos", "pad", "unk"):
        token_id = getattr(tok, f"{kind}_token_id")
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(False)
    if tok.chat_template:
        writer.add_chat_template(tok.chat_template)


def copy_field(writer: Any, key: str, field: Any) -> None:
    import gguf

    kind = field.types[0]
    if kind == gguf.GGUFValueType.ARRAY:
        writer.add_array(key, field.contents())
    elif kind == gguf.GGUFValueType.STRING:
        writer.add_string(key, field.contents())
    else:
        writer.add_key_value(key, field.contents(), kind)


def quantize_with_llama_cpp(f16: Path, out: Path, precision: str, threads: int | None = None) -> None:
    """A K-quant file from an f16 one, by llama.cpp's own quantizer."""
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependencyError(
            f"{precision} needs llama.cpp's quantizer: pip install llama-cpp-python (builds from source)"
        ) from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_QUANTIZES[precision]
    params.nthread = threads or os.cpu_count() or 1
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        code = llama_cpp.llama_model_quantize(str(f16).encode(), str(tmp).encode(), params)
        if code != 0 or not tmp.is_file():
            raise UsageError(f"llama.cpp's quantizer failed on {f16.name} (code {code})")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
