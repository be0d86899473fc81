"""Width importance from calibration activations, and the one-time permutation that nests widths.

Ours (AmoebaLLM, after FLAP): the fluctuation of each input channel of o_proj and down_proj,
Var_t[x_j] * ||W[:, j]||^2, i.e. how much the layer's output would move if the channel were
replaced by its mean. Query heads are scored by the mean over their channels and ranked inside
their KV group, so every narrower width keeps a valid GQA layout. Baselines behind the same
interface: `magnitude` (||W[:, j]||^2 alone) and `activation` (Minitron: mean |x_j|).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgekit.elastic.model import head_channels
from edgekit.shapes import Geometry

WIDTH_METHODS = ("flap", "magnitude", "activation")


@dataclass
class ChannelStats:
    """Running first and second moments and mean |x| of one projection's input channels."""

    count: int
    total: torch.Tensor
    total_sq: torch.Tensor
    total_abs: torch.Tensor

    @classmethod
    def empty(cls, channels: int) -> ChannelStats:
        z = torch.zeros(channels, dtype=torch.float64)
        return cls(0, z.clone(), z.clone(), z.clone())

    def add(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1, x.shape[-1]).double()
        self.count += flat.shape[0]
        self.total += flat.sum(0)
        self.total_sq += flat.pow(2).sum(0)
        self.total_abs += flat.abs().sum(0)

    def variance(self) -> torch.Tensor:
        mean = self.total / self.count
        return (self.total_sq / self.count - mean.pow(2)).clamp_min(0)

    def mean_abs(self) -> torch.Tensor:
        return self.total_abs / self.count


def channel_scores(stats: ChannelStats, weight: torch.Tensor, method: str) -> torch.Tensor:
    col_norm = weight.detach().double().pow(2).sum(0)  # weight is (out, in): one norm per input channel
    if method == "flap":
        return stats.variance() * col_norm
    if method == "magnitude":
        return col_norm
    if method == "activation":
        return stats.mean_abs()
    raise ValueError(f"unknown width method {method}; choose from {', '.join(WIDTH_METHODS)}")


def ffn_permutation(scores: torch.Tensor) -> torch.Tensor:
    return torch.argsort(scores, descending=True, stable=True)


def head_permutation(channel_score: torch.Tensor, geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-major order of query heads with each KV group's heads sorted by importance, and head scores.

    `channel_score` is indexed like o_proj's input channels in Hugging Face (group-major) order.
    """
    head_scores = channel_score.view(geometry.num_heads, geometry.head_dim).mean(-1)
    per_group = geometry.heads_per_group
    order = []
    for g in range(geometry.num_kv_heads):
        members = torch.arange(g * per_group, (g + 1) * per_group)
        ranked = members[torch.argsort(head_scores[members], descending=True, stable=True)]
        order.extend(ranked.tolist())
    return torch.tensor(order), head_scores


def permute_state(
    state: dict[str, torch.Tensor], geometry: Geometry, ffn_perms: list[torch.Tensor], head_perms: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Apply the permutations to a Hugging Face Llama state dict; the network's function is unchanged."""
    out = dict(state)
    hd = geometry.head_dim
    for i in range(geometry.num_layers):
        p = f"model.layers.{i}."
        rows = head_channels(head_perms[i], hd)
        out[p + "self_attn.q_proj.weight"] = state[p + "self_attn.q_proj.weight"][rows]
        if p + "self_attn.q_proj.bias" in state:
            out[p + "self_attn.q_proj.bias"] = state[p + "self_attn.q_proj.bias"][rows]
        out[p + "self_attn.o_proj.weight"] = state[p + "self_attn.o_proj.weight"][:, rows]
        f = ffn_perms[i]
        out[p + "mlp.gate_proj.weight"] = state[p + "mlp.gate_proj.weight"][f]
        out[p + "mlp.up_proj.weight"] = state[p + "mlp.up_proj.weight"][f]
        out[p + "mlp.down_proj.weight"] = state[p + "mlp.down_proj.weight"][:, f]
    return out


def width_importance(
    model, ids: torch.Tensor, method: str = "flap", batch: int = 4
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """FFN and head permutations (and scores) per layer from the full model's calibration activations.

    `model` is an ElasticModel built from the *unpermuted* weights.
    """
    g = model.geometry
    blocks = list(model.blocks)
    index = {id(b): i for i, b in enumerate(blocks)}
    o_stats = [ChannelStats.empty(g.num_heads * g.head_dim) for _ in blocks]
    down_stats = [ChannelStats.empty(g.ffn) for _ in blocks]

    def observe(block, kind: str, x: torch.Tensor) -> None:
        (o_stats if kind == "o" else down_stats)[index[id(block)]].add(x)

    model.observer = observe
    try:
        with torch.inference_mode():
            for start in range(0, ids.shape[0], batch):
                # the statistics come from inside the blocks: the LM head is not needed
                chunk = ids[start : start + batch]
                model.run_layers(
                    torch.nn.functional.embedding(chunk, model.embed), model.layers_for(g.num_layers), g.full
                )
    finally:
        model.observer = None
    # The observer sees o_proj's input in Hugging Face's group-major head order already; o's columns are
    # stored rank-major, so gather them into the same order.
    cols = model.group_major_columns(g.num_heads)
    ffn_perms, head_perms, ffn_scores, head_scores = [], [], [], []
    for i, blk in enumerate(blocks):
        gm = o_stats[i]
        o_weight = blk.o if cols is None else blk.o.index_select(1, cols)
        perm, hs = head_permutation(channel_scores(gm, o_weight, method), g)
        fs = channel_scores(down_stats[i], blk.down, method)
        ffn_perms.append(ffn_permutation(fs))
        head_perms.append(perm)
        ffn_scores.append(fs)
        head_scores.append(hs)
    return ffn_perms, head_perms, ffn_scores, head_scores
