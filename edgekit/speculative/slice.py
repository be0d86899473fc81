"""A draft cut from the verifier's own tensors: nested shapes share their weights, so a smaller shape drafting
for a larger one needs no second copy of them.

Nested width keeps every shape's most important MLP channels first, so the draft's gate and up rows are the
verifier's first rows and its down columns the verifier's first columns: views, not copies. Its layers are the
verifier's where the draft's depth keeps only layers the verifier has (DP's layer sets are mostly, not always,
nested: a draft whose set is not inside the verifier's is built from its own weights instead). With the
verifier's heads per group the draft shares q and o as they are; with fewer, its rows of q and columns of o are
gathered (a copy, counted in `own_bytes`).

Each shape has its own SMOL mix merged into its weights. The verifier's tensors hold the verifier's mix, and the
draft's own merged model differs from their slice by the difference of two low-rank products, itself low rank.
It is carried as a LoRA beside the shared weight (`CorrectedLinear`), so the draft computes what its own merged
model computes, for a few MB instead of the draft's whole layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.elastic.model import head_channels

MODULES = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}


class CorrectedLinear(nn.Module):
    """A linear layer over a shared (possibly strided) weight plus a low-rank correction: x W^T + b + (x A^T) B^T."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.a = nn.Parameter(a.contiguous(), requires_grad=False)
        self.b = nn.Parameter(b.contiguous(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.a), self.b)


@dataclass
class SliceInfo:
    shared_bytes: int  # what the draft reads from the verifier's tensors
    own_bytes: int  # what only the draft holds: gathered head rows and its SMOL correction
    correction_rank: int  # the largest rank of a correction (0: the two shapes share one mix, or no SMOL)


def own_bytes(draft: nn.Module, verifier: nn.Module) -> int:
    """Bytes of the draft's tensors that share no storage with the verifier's: what drafting adds to memory."""
    theirs = {t.untyped_storage().data_ptr() for t in verifier.state_dict(keep_vars=True).values()}
    seen: set[int] = set()
    total = 0
    for t in draft.state_dict(keep_vars=True).values():
        ptr = t.untyped_storage().data_ptr()
        if ptr not in theirs and ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total


def _gathered_heads(verifier_heads: int, draft_heads: int, kv: int, head_dim: int) -> torch.Tensor:
    """The verifier's group-major q rows (o columns) of the draft's heads: each group's first `draft_heads`."""
    heads = torch.tensor([g * verifier_heads + r for g in range(kv) for r in range(draft_heads)])
    return head_channels(heads, head_dim)


def slice_draft(session: Any, draft: Any) -> tuple[Any, SliceInfo] | None:
    """The draft shape as a transformers model over the verifier's tensors (an ElasticTorchSession's current
    model), with its SMOL correction; None where it cannot be a slice (a layer or block the verifier lacks)."""
    from edgekit.elastic.extract import hf_model
    from edgekit.elastic.skip import subnet_skips

    plan, verifier, elastic = session.plan, session.shape, session.elastic
    plan.check_shape(draft)
    mine, theirs = plan.layer_sets[draft.depth], plan.layer_sets[verifier.depth]
    if not set(mine) <= set(theirs):
        return None
    position = {layer: k for k, layer in enumerate(theirs)}
    g = plan.geometry
    dv, dd = g.dims(verifier), g.dims(draft)
    if dd.ffn > dv.ffn or dd.heads_per_group > dv.heads_per_group:
        return None
    source = session.model.state_dict(keep_vars=True)
    heads = None
    if dd.heads_per_group != dv.heads_per_group:
        heads = _gathered_heads(dv.heads_per_group, dd.heads_per_group, dd.num_kv_heads, dd.head_dim)
    state = {k: v for k, v in source.items() if not k.startswith("model.layers.")}
    for new, layer in enumerate(mine):
        src, dst = f"model.layers.{position[layer]}.", f"model.layers.{new}."
        for key, t in source.items():
            if not key.startswith(src):
                continue
            name = key[len(src) :]
            if heads is not None and name.startswith("self_attn.q_proj."):
                t = t[heads]
            elif heads is not None and name == "self_attn.o_proj.weight":
                t = t[:, heads]
            elif name in ("mlp.gate_proj.weight", "mlp.up_proj.weight"):
                t = t[: dd.ffn]
            elif name == "mlp.down_proj.weight":
                t = t[:, : dd.ffn]
            state[dst + name] = t.detach()
    skip = subnet_skips(mine, plan.skips_at(draft.depth))
    for new, layer in enumerate(mine):
        for part, key in (("attn", "self_attn.o_proj.weight"), ("mlp", "mlp.down_proj.weight")):
            if f"{new}.{part}" not in skip and f"model.layers.{position[layer]}.{key}" not in source:
                return None  # a block the verifier skips is one the draft computes: its weights are not in memory
    model = hf_model(session.base_config, g, draft, mine, state, skip).to(session.device)
    rank = _correct(model, elastic, plan, verifier, draft, mine, theirs, set(skip))
    shared = sum(t.numel() * t.element_size() for t in state.values())
    return model, SliceInfo(shared, own_bytes(model, session.model), rank)


def _correct(model: Any, elastic: Any, plan: Any, verifier: Any, draft: Any, mine: list[int], theirs: list[int],
             skip: set[str]) -> int:  # fmt: skip
    """Give each adapted projection of the draft the difference of its mix and the verifier's; the largest rank."""
    smol = getattr(elastic, "smol", None)
    if smol is None:
        return 0
    g = plan.geometry
    dd = g.dims(draft)
    rows = dd.num_heads * g.head_dim
    order = elastic.group_major_columns(dd.num_heads)
    largest = 0
    with torch.no_grad():
        mix, other = smol.mix(draft, mine), smol.mix(verifier, theirs)
        for new, layer in enumerate(mine):
            block = model.model.layers[new]
            for target in smol.config.targets:
                part = "attn" if target in ("q", "k", "v", "o") else "mlp"
                if f"{new}.{part}" in skip:
                    continue
                cut = {"q": {"rows": rows}, "o": {"cols": rows}, "gate": {"rows": dd.ffn}, "up": {"rows": dd.ffn},
                       "down": {"cols": dd.ffn}}.get(target, {})  # fmt: skip
                ab = smol.difference(layer, target, mix, other, **cut)
                if ab is None:
                    continue
                a, b = ab
                if order is not None and target == "q":
                    b = b[order]
                elif order is not None and target == "o":
                    a = a[:, order]
                owner, attr = MODULES[target].split(".")
                linear = getattr(getattr(block, owner), attr)
                scaled = (b * smol.config.scaling).to(linear.weight.dtype)
                setattr(getattr(block, owner), attr,
                        CorrectedLinear(linear.weight, linear.bias, a.to(linear.weight.dtype), scaled))  # fmt: skip
                largest = max(largest, a.shape[0])
    return largest
