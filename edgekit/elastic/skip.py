"""Sub-modules dropped inside kept layers: a layer that keeps only its attention, or only its MLP.

A module-granular domain checkpoint (`trim.granularity=module`) removes attention blocks and MLP blocks one at
a time. No standard Llama config can say "layer 7 has no attention", so its subnets are written the one way
every loader reads them right: the dropped block's output projection (o_proj or down_proj) is zero, which adds
nothing to the residual stream, and the config lists the dropped blocks under `edgekit_skip`. Any runtime then
computes the same logits, but only one that skips the listed blocks is faster for it: our torch runtime does
(`apply_skips`); the compiled runtimes (ONNX Runtime GenAI, TVM, MLC-LLM, llama.cpp) would spend the full
layer's time on zeros, so deploy refuses them for such a checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

PARTS = ("attn", "mlp")
CONFIG_KEY = "edgekit_skip"
RUNTIMES = ("torch",)  # the runtimes that skip a dropped block rather than compute its zeros

Unit = tuple[int, str]  # (layer, "attn" | "mlp")


def unit_name(unit: Unit) -> str:
    return f"{unit[0]}.{unit[1]}"


def parse_unit(text: str) -> Unit:
    layer, _, part = str(text).partition(".")
    if part not in PARTS or not layer.isdigit():
        raise ValueError(f"'{text}' is not a sub-module (write LAYER.attn or LAYER.mlp)")
    return int(layer), part


def units_of(names: list[str] | None) -> frozenset[Unit]:
    return frozenset(parse_unit(n) for n in names or [])


def names_of(units: frozenset[Unit] | set[Unit]) -> list[str]:
    return [unit_name(u) for u in sorted(units)]


def subnet_skips(layers: list[int], units: frozenset[Unit]) -> list[str]:
    """The dropped blocks renumbered as the subnet's layers (its layer k is the base model's layers[k])."""
    position = {layer: k for k, layer in enumerate(layers)}
    return [unit_name((position[i], part)) for i, part in sorted(units) if i in position]


def zero_skipped(state: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """A subnet state whose dropped blocks add nothing: their output projection is zero."""
    for layer, part in map(parse_unit, names):
        key = f"model.layers.{layer}." + ("self_attn.o_proj.weight" if part == "attn" else "mlp.down_proj.weight")
        state[key] = torch.zeros_like(state[key])
    return state


class SkippedAttention(nn.Module):
    """A dropped attention block in a transformers Llama: adds zero and does no work. It still records one
    position per token in its layer's KV cache (one channel of zeros), because transformers reads the number
    of tokens seen so far from the cache (layer 0's by default)."""

    def __init__(self, layer_idx: int, num_kv_heads: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_kv_heads = num_kv_heads

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None:
            b, t, _ = hidden_states.shape
            mark = hidden_states.new_zeros(b, self.num_kv_heads, t, 1)
            cache.update(mark, mark, self.layer_idx)
        return torch.zeros_like(hidden_states), None


class SkippedMLP(nn.Module):
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


def apply_skips(model: Any) -> Any:
    """Replace the blocks the config lists under `edgekit_skip` so that they are not computed (their weights are
    zero in the checkpoint: the logits are the same either way)."""
    names = getattr(model.config, CONFIG_KEY, None) or []
    layers = model.model.layers
    kv = int(getattr(model.config, "num_key_value_heads", None) or model.config.num_attention_heads)
    for layer, part in map(parse_unit, names):
        if part == "attn":
            layers[layer].self_attn = SkippedAttention(layer, kv)
        else:
            layers[layer].mlp = SkippedMLP()
    return model
