"""ElasticModel: one set of Llama weights that runs any shape by slicing.

Width is nested: FFN channels and query heads are stored most-important first, so a narrower
width is a prefix view of the wider one (Flextron). Query heads are stored *rank-major*
(rank 0 of every KV group, then rank 1 of every group, ...) rather than Hugging Face's
group-major order, so keeping q heads per group is a contiguous prefix of q_proj's rows and
o_proj's columns. Depth picks a layer subset per depth from the plan. Nothing is copied to
change shape; evaluation, fine-tuning and live reshaping share these tensors.

The arithmetic follows transformers' Llama exactly (RMSNorm in fp32, rotary embedding from
transformers itself), so the full shape reproduces the Hugging Face model's logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.shapes import Geometry, Shape


def rank_major_index(num_heads: int, num_kv: int) -> torch.Tensor:
    """For each rank-major head slot, the Hugging Face (group-major) head it holds."""
    per_group = num_heads // num_kv
    return torch.tensor([(i % num_kv) * per_group + i // num_kv for i in range(num_heads)])


def head_channels(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """The channel indices (rows of q_proj, columns of o_proj) of the given heads, in their order."""
    return (heads[:, None] * head_dim + torch.arange(head_dim, device=heads.device)).reshape(-1)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Block(nn.Module):
    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name, tensor in weights.items():
            self.register_parameter(name, nn.Parameter(tensor, requires_grad=False))

    def bias(self, name: str, rows: int) -> torch.Tensor | None:
        b = getattr(self, name, None)
        return None if b is None else b[:rows]


@dataclass
class Output:
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


class ElasticModel(nn.Module):
    def __init__(
        self,
        config: Any,
        layers: list[dict[str, torch.Tensor]],
        embed: torch.Tensor,
        norm: torch.Tensor,
        lm_head: torch.Tensor | None,
        layer_sets: dict[int, list[int]] | None = None,
    ) -> None:
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        self.config = config
        self.geometry = Geometry.from_config(config)
        self.eps = config.rms_norm_eps
        self.embed = nn.Parameter(embed, requires_grad=False)
        self.norm = nn.Parameter(norm, requires_grad=False)
        self.lm_head = None if lm_head is None else nn.Parameter(lm_head, requires_grad=False)
        self.blocks = nn.ModuleList(Block(w) for w in layers)
        self.rotary = LlamaRotaryEmbedding(config)
        n = self.geometry.num_layers
        self.layer_sets = dict(layer_sets or {})  # our own copy: the caller's plan is not mutated
        self.layer_sets.setdefault(n, list(range(n)))
        # per depth, the (layer, "attn" | "mlp") blocks dropped inside its layers (module-granular trimming)
        self.skips: dict[int, frozenset[tuple[int, str]]] = {}
        # Called as observer(block, "o" | "down", input) during forward: calibration reads the
        # inputs of o_proj (rank-major heads) and down_proj here without a second model.
        self.observer: Any = None
        # SMOL adapters (stage 2), when attached; `_mix` is the gate's expert weights for the shape being run.
        self._columns: dict[int, torch.Tensor] = {}
        self.grad_checkpointing = False
        self._merged: dict[tuple[int, str], torch.Tensor] = {}
        self._merged_for: Any = None
        self.smol: Any = None
        self._mix: torch.Tensor | None = None

    # ------------------------------------------------------------ construction

    @classmethod
    def from_hf_state(
        cls, config: Any, state: dict[str, torch.Tensor], layer_sets: dict[int, list[int]] | None = None
    ) -> ElasticModel:
        """Build from a Hugging Face Llama state dict (already permuted if it comes from a plan)."""
        g = Geometry.from_config(config)
        order = rank_major_index(g.num_heads, g.num_kv_heads)
        hd = g.head_dim
        rows = head_channels(order, hd)
        layers = []
        for i in range(g.num_layers):
            p = f"model.layers.{i}."
            w = {
                "ln1": state[p + "input_layernorm.weight"],
                "q": state[p + "self_attn.q_proj.weight"][rows],
                "k": state[p + "self_attn.k_proj.weight"],
                "v": state[p + "self_attn.v_proj.weight"],
                "o": state[p + "self_attn.o_proj.weight"][:, rows],
                "ln2": state[p + "post_attention_layernorm.weight"],
                "gate": state[p + "mlp.gate_proj.weight"],
                "up": state[p + "mlp.up_proj.weight"],
                "down": state[p + "mlp.down_proj.weight"],
            }
            for name in ("q", "k", "v"):  # Qwen2-style attention biases
                key = p + f"self_attn.{name}_proj.bias"
                if key in state:
                    w[name + "_b"] = state[key][rows] if name == "q" else state[key]
            if p + "self_attn.o_proj.bias" in state or p + "mlp.down_proj.bias" in state:
                raise ValueError("output-projection biases are not supported")
            layers.append({k: v.contiguous() for k, v in w.items()})
        tied = getattr(config, "tie_word_embeddings", False) or "lm_head.weight" not in state
        return cls(
            config,
            layers,
            state["model.embed_tokens.weight"],
            state["model.norm.weight"],
            None if tied else state["lm_head.weight"],
            layer_sets,
        )

    # ------------------------------------------------------------ shapes

    def layers_for(self, depth: int) -> list[int]:
        if depth not in self.layer_sets:
            raise KeyError(f"no layer set for depth {depth}; plan has {min(self.layer_sets)}..{max(self.layer_sets)}")
        return self.layer_sets[depth]

    @property
    def full_shape(self) -> Shape:
        return self.geometry.full

    # ------------------------------------------------------------ forward

    def proj(
        self, index: int, target: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
        rows: int | None = None, cols: int | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """One projection on its kept rows/columns, plus the shape's SMOL LoRA when one is attached."""
        if self.smol is not None and self._mix is not None:
            if not torch.is_grad_enabled() and not self.smol.training:
                # Inference: the shape's LoRA merged into the weights exactly as `extract` merges it, so a
                # cut checkpoint reproduces these logits bit for bit. Kept for the current shape only.
                key = (index, target)
                if key not in self._merged:
                    self._merged[key] = self.smol.merged(index, target, weight, self._mix, rows, cols)
                return F.linear(x, self._merged[key], bias)
            delta = self.smol.delta(index, target, x, self._mix, rows, cols)
            if delta is not None:
                return F.linear(x, weight, bias) + delta
        return F.linear(x, weight, bias)

    def attention(
        self, index: int, blk: Block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, q_heads: int
    ) -> torch.Tensor:
        g = self.geometry
        bsz, t, _ = x.shape
        hd, kv = g.head_dim, g.num_kv_heads
        rows = q_heads * hd
        q = self.proj(index, "q", x, blk.q[:rows], blk.bias("q_b", rows), rows=rows)
        k = self.proj(index, "k", x, blk.k, blk.bias("k_b", kv * hd))
        v = self.proj(index, "v", x, blk.v, blk.bias("v_b", kv * hd))
        per_group = q_heads // kv
        # rank-major (B, T, rank, group, hd) -> group-major heads for SDPA's GQA broadcasting
        q = q.view(bsz, t, per_group, kv, hd).permute(0, 3, 2, 1, 4).reshape(bsz, q_heads, t, hd)
        k = k.view(bsz, t, kv, hd).transpose(1, 2)
        v = v.view(bsz, t, kv, hd).transpose(1, 2)
        c, s = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * c + rotate_half(q) * s
        k = k * c + rotate_half(k) * s
        if per_group > 1:
            k = k.repeat_interleave(per_group, dim=1)
            v = v.repeat_interleave(per_group, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)
        # o_proj sums over heads in Hugging Face's group-major order, so a cut checkpoint reproduces these
        # logits bit for bit rather than within rounding: the kept columns are gathered (a transient index,
        # the stored weights are untouched) when rank-major and group-major orders differ.
        out = out.transpose(1, 2).reshape(bsz, t, rows)
        if self.observer is not None:
            self.observer(blk, "o", out)
        cols = self.group_major_columns(q_heads)
        weight = blk.o[:, :rows] if cols is None else blk.o.index_select(1, cols)
        return self.proj(index, "o", out, weight, cols=rows if cols is None else cols)

    def group_major_columns(self, q_heads: int) -> torch.Tensor | None:
        """o_proj columns, in group-major head order, of the first q_heads rank-major heads (None: a prefix)."""
        g = self.geometry
        per, kv = q_heads // g.num_kv_heads, g.num_kv_heads
        if per == 1 or kv == 1:
            return None
        cached = self._columns.get(q_heads)
        if cached is None:
            with torch.inference_mode(False):  # cached across calls: must not be an inference-mode tensor
                slots = torch.tensor([(h % per) * kv + h // per for h in range(q_heads)])
                cached = head_channels(slots, g.head_dim).to(self.embed.device)
            self._columns[q_heads] = cached
        return cached

    def mlp(self, index: int, blk: Block, x: torch.Tensor, ffn: int) -> torch.Tensor:
        gate = self.proj(index, "gate", x, blk.gate[:ffn], rows=ffn)
        inner = F.silu(gate) * self.proj(index, "up", x, blk.up[:ffn], rows=ffn)
        if self.observer is not None:
            self.observer(blk, "down", inner)
        return self.proj(index, "down", inner, blk.down[:, :ffn], cols=ffn)

    def block(
        self, index: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, shape: Shape,
        skip: frozenset[tuple[int, str]] = frozenset(),
    ) -> torch.Tensor:  # fmt: skip
        """Layer `index` at the FFN width and head count of `shape` (its depth does not matter here), without
        its attention or MLP where `skip` names them."""
        dims = self.geometry.dims(shape)
        blk = self.blocks[index]
        if (index, "attn") not in skip:
            x = x + self.attention(index, blk, rms_norm(x, blk.ln1, self.eps), cos, sin, dims.num_heads)
        if (index, "mlp") not in skip:
            x = x + self.mlp(index, blk, rms_norm(x, blk.ln2, self.eps), dims.ffn)
        return x

    def _block_with_mix(
        self, index: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, shape: Shape, mix: Any,
        skip: frozenset[tuple[int, str]],
    ) -> torch.Tensor:  # fmt: skip
        # backward recomputes after run_layers has returned, so the mix travels as an argument
        saved, self._mix = self._mix, mix
        try:
            return self.block(index, x, cos, sin, shape, skip)
        finally:
            self._mix = saved

    def rope(self, x: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(start, start + x.shape[1], device=x.device).unsqueeze(0)
        return self.rotary(x, pos)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(rms_norm(x, self.norm, self.eps), self.embed if self.lm_head is None else self.lm_head)

    def run_layers(
        self, x: torch.Tensor, layers: list[int], shape: Shape, skip: frozenset[tuple[int, str]] = frozenset()
    ) -> torch.Tensor:
        """`layers` in order at the widths of `shape` (the layer set may differ from the shape's own depth's),
        without the blocks `skip` names."""
        cos, sin = self.rope(x)
        shape = Shape(len(layers) - len(skip) // 2, shape.ffn, shape.heads)
        self._mix = self.smol.mix(shape, layers) if self.smol is not None else None
        if self.smol is not None:
            key = (tuple(layers), shape, skip, id(self.smol), self.smol.training or torch.is_grad_enabled())
            if key != self._merged_for:  # another shape (or adapters that may have changed): merge afresh
                self._merged, self._merged_for = {}, key
        try:
            for i in layers:
                if self.grad_checkpointing and torch.is_grad_enabled():
                    # recompute the block in backward instead of keeping its activations; the gate's mix
                    # (and its noise) was drawn above, so the recomputation sees the same adapters
                    from torch.utils.checkpoint import checkpoint

                    x = checkpoint(self._block_with_mix, i, x, cos, sin, shape, self._mix, skip, use_reentrant=False)
                else:
                    x = self.block(i, x, cos, sin, shape, skip)
        finally:
            self._mix = None
        return x

    def forward(
        self,
        input_ids: torch.Tensor,
        shape: Shape | None = None,
        labels: torch.Tensor | None = None,
        layers: list[int] | None = None,
        logits_to_keep: int | None = None,
    ) -> Output:
        shape = shape or self.full_shape
        skip = frozenset() if layers is not None else self.skips.get(shape.depth, frozenset())
        layers = layers if layers is not None else self.layers_for(shape.depth)
        x = self.run_layers(F.embedding(input_ids, self.embed), layers, shape, skip)
        # Like transformers' logits_to_keep: the 49k-vocabulary head only where logits are read.
        logits = self.head(x if not logits_to_keep else x[:, -logits_to_keep:])
        loss = None
        if labels is not None and logits_to_keep:
            raise ValueError("labels need every position's logits; do not combine them with logits_to_keep")
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return Output(logits, loss, x)

    def at(self, shape: Shape) -> ShapedModel:
        return ShapedModel(self, shape)


class ShapedModel(nn.Module):
    """One shape of an ElasticModel behind the calling convention of a transformers causal LM,
    so the evaluation harness and generation code take it like any Hugging Face model."""

    def __init__(self, elastic: ElasticModel, shape: Shape) -> None:
        super().__init__()
        self.elastic = elastic
        self.shape = shape
        self.config = elastic.config

    @property
    def device(self) -> torch.device:
        return self.elastic.embed.device

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int | None = None,
        **_: Any,
    ) -> Output:
        # Right padding needs no mask under causal attention: padded positions come after every
        # real token, so they never influence the logits that are read.
        if attention_mask is not None and bool((attention_mask[:, :-1] < attention_mask[:, 1:]).any()):
            raise ValueError("ElasticModel supports right padding only")
        return self.elastic(input_ids, self.shape, labels=labels, logits_to_keep=logits_to_keep)
