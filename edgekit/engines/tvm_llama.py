"""Llama in TVM Relax (`relax.frontend.nn`), after MLC-LLM's model: the graph the tvm runtime compiles.

Attention goes through TVM's paged KV cache (TIRPagedKVCache), which owns the cache pages, applies
RoPE to q and k ("normal" mode: k is rotated before it is stored) and maps query heads onto their KV
group. The exported functions and what the session passes them:

    embed(input_ids [1, n] int32, params)                 -> embeddings [1, n, hidden]
    prefill(embeddings [1, n, hidden], cache, params)    -> (logits [1, 1, vocab] fp32, cache)
    decode(embeddings [1, 1, hidden], cache, params)     -> (logits [1, 1, vocab] fp32, cache)
    score(embeddings [1, n, hidden], cache, params)      -> (logits [1, n, vocab] fp32, cache)
    create_paged_kv_cache(max_batch, max_tokens, prefill_chunk, page_size, sliding_window) -> cache

`params` is one tuple of every weight, in the order export_tvm names them ("packed"): the runtime
passes the weights it loaded once, not hundreds of arguments per call. q/k/v and gate/up are fused into one
matrix each (see `runtime_weights`): one matrix-vector product instead of three or two per layer.
int4 builds hold every matrix in 4 bits (tvm_int4; `runtime_weights_int4` packs them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tvm import relax as rx
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache
from tvm.target import Target

from edgekit.engines.tvm_int4 import QuantEmbedding, QuantLinear, matmul
from edgekit.errors import UsageError


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    max_position_embeddings: int
    # a draft's MLP reads its verifier's wider arrays (int4): they are stored this wide (0: as wide as it computes)
    stored_intermediate_size: int = 0

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> LlamaConfig:
        if config.get("model_type") != "llama":
            raise UsageError(f"the tvm runtime compiles Llama models, not {config.get('model_type')}")
        if config.get("attention_bias") or config.get("mlp_bias"):
            raise UsageError("the tvm runtime compiles Llama without biases (attention_bias/mlp_bias set)")
        if config.get("hidden_act", "silu") != "silu":
            raise UsageError(f"the tvm runtime compiles Llama's SiLU MLP, not {config['hidden_act']}")
        # transformers 5 moved rope settings into rope_parameters; 4.x kept rope_theta/rope_scaling on top
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise UsageError(f"the tvm runtime supports plain RoPE, not {rope.get('rope_type') or rope.get('type')}")
        heads = int(config["num_attention_heads"])
        # narrowed subnets write head_dim: they keep fewer heads than hidden_size / head_dim implies
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
        )


def linear(in_features: int, out_features: int, group: int | None, out_dtype: str | None = None) -> nn.Module:
    """A bias-free projection: float weights, or 4-bit weights in groups of `group` columns (int4)."""
    if group:
        return QuantLinear(in_features, out_features, group, out_dtype)
    return nn.Linear(in_features, out_features, bias=False, out_dtype=out_dtype)


class MLP(nn.Module):
    def __init__(self, c: LlamaConfig, group: int | None) -> None:
        self.ffn, self.stored = c.intermediate_size, c.stored_intermediate_size or c.intermediate_size
        if self.stored != self.ffn and not group:
            raise UsageError("a TVM draft reads its verifier's arrays in int4 builds only")
        self.gate_up_proj = linear(c.hidden_size, 2 * self.stored, group)
        self.down_proj = linear(self.stored, c.hidden_size, group)

    def forward(self, x: Tensor) -> Tensor:
        if self.stored == self.ffn:
            gate, up = op.split(self.gate_up_proj(x), 2, axis=-1)
        else:  # a draft on its verifier's arrays: the first rows of gate and of up (nested width keeps them first),
            # in one product like the verifier's own (two products were slower: bench/results/speculative_tvm.json)
            both = matmul(x, self.gate_up_proj, x.dtype, rows=((0, self.ffn), (self.stored, self.ffn)))
            gate, up = op.split(both, 2, axis=-1)
        # down's product reduces over the draft's channels only: the first columns of the verifier's matrix
        return self.down_proj(op.silu(gate) * up)


class Attention(nn.Module):
    def __init__(self, c: LlamaConfig, group: int | None) -> None:
        self.d, self.h_q, self.h_kv = c.head_dim, c.num_attention_heads, c.num_key_value_heads
        self.qkv_proj = linear(c.hidden_size, (self.h_q + 2 * self.h_kv) * self.d, group)
        self.o_proj = linear(self.h_q * self.d, c.hidden_size, group)

    def forward(self, x: Tensor, cache: PagedKVCache, layer: int) -> Tensor:
        b, s, _ = x.shape
        qkv = op.reshape(self.qkv_proj(x), (b, s, self.h_q + 2 * self.h_kv, self.d))
        out = cache.attention_with_fused_qkv(layer, qkv, self.h_q, sm_scale=self.d**-0.5)
        return self.o_proj(op.reshape(out, (b, s, self.h_q * self.d)))


class Block(nn.Module):
    def __init__(self, c: LlamaConfig, group: int | None) -> None:
        self.self_attn = Attention(c, group)
        self.mlp = MLP(c, group)
        self.input_layernorm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False)
        self.post_attention_layernorm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False)

    def forward(self, x: Tensor, cache: PagedKVCache, layer: int) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, c: LlamaConfig, group: int | None) -> None:
        if group:
            self.embed_tokens = QuantEmbedding(c.vocab_size, c.hidden_size, group)
        else:
            self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([Block(c, group) for _ in range(c.num_hidden_layers)])
        self.norm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False)

    def forward(self, x: Tensor, cache: PagedKVCache) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, cache, i)
        return self.norm(x)


def _last_token(x: Tensor) -> Tensor:
    """x[:, -1:, :] for a symbolic sequence length (a TE op: relax has no negative-index slice here)."""

    def index(t: te.Tensor) -> te.Tensor:
        b, s, d = t.shape
        return te.compute((b, 1, d), lambda i, _, k: t[i, s - 1, k], name="last_token")

    return op.tensor_expr_op(index, name_hint="last_token", args=[x])


class LlamaForCausalLM(nn.Module):
    """`group`: None for float weights, else 4-bit weights with a scale per `group` columns (int4), the
    embedding included (tied, it is the LM head's matrix)."""

    def __init__(self, c: LlamaConfig, target: Target, dtype: str = "float32", group: int | None = None) -> None:
        self.config, self.target, self.dtype = c, target, dtype
        self.model = LlamaModel(c, group)
        if not c.tie_word_embeddings:
            self.lm_head = linear(c.hidden_size, c.vocab_size, group, out_dtype="float32")

    def logits(self, x: Tensor) -> Tensor:
        # float32 out whatever the weights' dtype: sampling reads the logits on the host as float32
        if not self.config.tie_word_embeddings:
            return self.lm_head(x)
        if isinstance(self.model.embed_tokens, QuantEmbedding):
            return matmul(x, self.model.embed_tokens, "float32")
        return op.matmul(x, op.permute_dims(self.model.embed_tokens.weight), out_dtype="float32")

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.model.embed_tokens(input_ids)

    def prefill(self, embeddings: Tensor, cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        return self.logits(_last_token(self.model(embeddings, cache))), cache

    def decode(self, embeddings: Tensor, cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        return self.logits(self.model(embeddings, cache)), cache

    def score(self, embeddings: Tensor, cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        """prefill with the logits at every position: what perplexity and the build check read."""
        return self.logits(self.model(embeddings, cache)), cache

    def create_paged_kv_cache(
        self,
        max_batch_size: tirx.Var,
        max_total_seq_len: tirx.Var,
        prefill_chunk_size: tirx.Var,
        page_size: tirx.Var,
        support_sliding_window: tirx.Var,
    ) -> PagedKVCache:
        c = self.config
        return TIRPagedKVCache(
            attn_kind="mha",
            max_batch_size=max_batch_size,
            max_total_seq_len=max_total_seq_len,
            prefill_chunk_size=prefill_chunk_size,
            page_size=page_size,
            support_sliding_window=support_sliding_window,
            layer_partition=rx.ShapeExpr([0, c.num_hidden_layers]),
            num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.num_key_value_heads,
            qk_head_dim=c.head_dim,
            v_head_dim=c.head_dim,
            mla_original_qk_head_dim=0,
            mla_original_v_head_dim=0,
            rope_mode=RopeMode.NORMAL,
            rope_scale=1,
            rope_theta=c.rope_theta,
            rope_scaling={},
            rope_ext_factors=rx.prim_value(0),  # no longrope factors; 0 stands for "none" in relax
            rotary_dim=c.head_dim,
            enable_disaggregation=False,
            dtype=self.dtype,
            target=self.target,
        )

    def spec(self) -> nn.spec.ModuleSpec:
        hidden, packed = self.config.hidden_size, {"param_mode": "packed", "effect_mode": "none"}
        cache = nn.spec.Object(object_type=PagedKVCache)
        raw = {
            "embed": {"input_ids": nn.spec.Tensor([1, "seq_len"], "int32"), "$": packed},
            "prefill": {"embeddings": nn.spec.Tensor([1, "seq_len", hidden], self.dtype), "cache": cache, "$": packed},
            "decode": {"embeddings": nn.spec.Tensor([1, 1, hidden], self.dtype), "cache": cache, "$": packed},
            "score": {"embeddings": nn.spec.Tensor([1, "seq_len", hidden], self.dtype), "cache": cache, "$": packed},
            "create_paged_kv_cache": {
                "max_batch_size": int,
                "max_total_seq_len": int,
                "prefill_chunk_size": int,
                "page_size": int,
                "support_sliding_window": int,
                "$": {"param_mode": "none", "effect_mode": "none"},
            },
        }
        return nn.spec.ModuleSpec.from_raw(raw, self)


def runtime_weights(c: LlamaConfig, get: Any) -> Iterator[tuple[str, Any]]:
    """(runtime name, tensor) from a Hugging Face state read through `get(name)`, fusing q/k/v and gate/up
    in the order the graph splits them (q heads group-major as transformers stores them, then k, then v)."""
    yield "model.embed_tokens.weight", get("model.embed_tokens.weight")
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        yield p + "self_attn.qkv_proj.weight", [get(p + f"self_attn.{x}_proj.weight") for x in "qkv"]
        yield p + "self_attn.o_proj.weight", get(p + "self_attn.o_proj.weight")
        yield p + "mlp.gate_up_proj.weight", [get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight")]
        yield p + "mlp.down_proj.weight", get(p + "mlp.down_proj.weight")
        yield p + "input_layernorm.weight", get(p + "input_layernorm.weight")
        yield p + "post_attention_layernorm.weight", get(p + "post_attention_layernorm.weight")
    yield "model.norm.weight", get("model.norm.weight")
    if not c.tie_word_embeddings:
        yield "lm_head.weight", get("lm_head.weight")


def embedding_int4(c: LlamaConfig, quantized: dict[str, Any], get: Any, head: str) -> Any:
    """The int4 embedding: a tied one is the head's matrix; an untied one is rounded to nearest on the same
    grid (only looked up, it has no input to calibrate on)."""
    from edgekit.quantize.gptq import rtn

    if c.tie_word_embeddings:
        return quantized[head]
    return rtn(get("model.embed_tokens.weight"), 4, quantized[head].block)


def runtime_weights_int4(
    c: LlamaConfig, quantized: dict[str, Any], embed: Any, get: Any, head: str, dtype: str
) -> Iterator[tuple[str, Any]]:
    """(runtime name, array) for an int4 build: every projection's GPTQ levels (module name -> Quantized from
    edgekit.quantize, q/k/v and gate/up stacked by rows) and the embedding's (`embedding_int4`) packed as
    tvm_int4 stores them, the norms as they are."""
    from edgekit.engines.tvm_int4 import pack
    from edgekit.quantize.gptq import Quantized

    def packed(name: str, q: Quantized) -> Iterator[tuple[str, Any]]:
        arrays = pack(q.levels.numpy(), q.scales.numpy(), q.zero_points.numpy(), dtype)
        for part in ("qweight", "scales", "offsets"):
            yield f"{name}.{part}", arrays[part]

    yield from packed("model.embed_tokens", embed)
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        qkv = Quantized.rows([quantized[p + f"self_attn.{x}_proj"] for x in "qkv"])
        yield from packed(p + "self_attn.qkv_proj", qkv)
        yield from packed(p + "self_attn.o_proj", quantized[p + "self_attn.o_proj"])
        gate_up = Quantized.rows([quantized[p + f"mlp.{x}_proj"] for x in ("gate", "up")])
        yield from packed(p + "mlp.gate_up_proj", gate_up)
        yield from packed(p + "mlp.down_proj", quantized[p + "mlp.down_proj"])
        yield p + "input_layernorm.weight", get(p + "input_layernorm.weight").numpy().astype(dtype)
        yield p + "post_attention_layernorm.weight", get(p + "post_attention_layernorm.weight").numpy().astype(dtype)
    yield "model.norm.weight", get("model.norm.weight").numpy().astype(dtype)
    if not c.tie_word_embeddings:
        yield from packed("lm_head", quantized[head])
