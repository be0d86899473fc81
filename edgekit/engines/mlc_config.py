"""Will MLC-LLM's Llama loader accept this subnet? Checked before any MLC tool runs, with the reason.

MLC-LLM reads a Hugging Face config.json into its `LlamaConfig` dataclass
(python/mlc_llm/model/llama/llama_model.py, mlc-ai/mlc-llm at 79d603f, July 2026) and builds one
paged KV cache for all layers. What that means for a cut subnet:
- one `intermediate_size` and one head count for every layer (our subnets keep one width: DESIGN.md);
- `head_dim` must be written out: MLC falls back to hidden_size // num_attention_heads, which is wrong
  for a narrowed subnet (9 -> 6 heads of 64 on a 576-wide model would be read as heads of 96);
- query heads a whole multiple of KV heads (grouped-query attention), and both of the tensor-parallel
  shard count;
- a context window from `context_window_size`, `max_position_embeddings` or `max_sequence_length`;
- RoPE scaling, if any, of the `llama3` kind (the only one its Llama accepts);
- FlashInfer's CUDA kernels (on by default) exist for head dims 64, 128 and 256 only; other sizes need
  `--opt flashinfer=0` and fall back to TIR kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REQUIRED = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "rms_norm_eps",
            "vocab_size")  # fmt: skip
CONTEXT_KEYS = ("context_window_size", "max_position_embeddings", "max_sequence_length")
ARCHITECTURES = ("LlamaForCausalLM",)
FLASHINFER_HEAD_DIMS = (64, 128, 256)


@dataclass
class MlcCompat:
    ok: bool
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flashinfer: bool = True

    def reason(self) -> str:
        return "; ".join(self.problems)


def check_llama_config(config: dict[str, Any], tensor_parallel_shards: int = 1, q_rows: int | None = None) -> MlcCompat:
    """The reasons MLC's Llama would reject (or misread) this config.json; none when it loads as is.

    `q_rows`, the output rows of layer 0's q_proj in the weights, catches a head_dim MLC would infer
    wrongly because the config leaves it out.
    """
    problems: list[str] = []
    notes: list[str] = []
    arch = (config.get("architectures") or ["?"])[0]
    if arch not in ARCHITECTURES and config.get("model_type") != "llama":
        problems.append(f"architecture {arch} is not MLC's Llama")
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        problems.append(f"config.json lacks {', '.join(missing)}")
        return MlcCompat(False, problems, notes)
    for key in ("intermediate_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers", "head_dim"):
        if isinstance(config.get(key), list):
            problems.append(f"{key} differs between layers; MLC's Llama takes one value for all layers")
    if problems:
        return MlcCompat(False, problems, notes)
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    hidden = int(config["hidden_size"])
    head_dim = config.get("head_dim")
    head_dim = int(head_dim) if head_dim is not None else hidden // max(heads, 1)
    if q_rows is not None and heads * head_dim != q_rows:
        written = "" if "head_dim" in config else " (head_dim not written, so MLC takes hidden_size // heads)"
        problems.append(f"q_proj has {q_rows} rows but MLC would read {heads} heads x {head_dim}{written}")
    if heads < 1 or kv_heads < 1:
        problems.append(f"{heads} query and {kv_heads} KV heads: a shape needs at least one of each")
    elif heads % kv_heads:
        problems.append(f"{heads} query heads are not a whole multiple of {kv_heads} KV heads")
    if tensor_parallel_shards > 1:
        for name, value in (("query heads", heads), ("KV heads", kv_heads),
                            ("intermediate_size", int(config["intermediate_size"]))):  # fmt: skip
            if value % tensor_parallel_shards:
                problems.append(f"{name} ({value}) cannot be split over {tensor_parallel_shards} shards")
    if not any(k in config for k in CONTEXT_KEYS):
        problems.append("no context window (context_window_size / max_position_embeddings)")
    scaling = config.get("rope_scaling")
    if scaling and "rope_type" in scaling and scaling["rope_type"] not in ("llama3", "default"):
        problems.append(f"RoPE scaling {scaling['rope_type']} is not supported by MLC's Llama (llama3 only)")
    flashinfer = head_dim in FLASHINFER_HEAD_DIMS
    if not flashinfer:
        notes.append(f"head_dim {head_dim} has no FlashInfer kernels; compiling with --opt flashinfer=0")
    return MlcCompat(not problems, problems, notes, flashinfer)
