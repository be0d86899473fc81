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

A deployment ships such a draft as a folder (`SLICE_FILE`: which of the verifier's layers, how wide; with
`CORRECTION_FILE` where the mixes differ) that is cut from the verifier when the pair is opened.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.elastic.model import head_channels

SLICE_FILE = "edgekit-slice.json"
CORRECTION_FILE = "correction.safetensors"
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
class SliceSpec:
    """A draft as a part of its verifier: the verifier's layers it keeps (positions in the verifier, in order), its
    MLP channels and query heads per KV group (prefixes of the verifier's), its dropped blocks (own numbering)."""

    layers: list[int]
    ffn: int
    heads_per_group: int
    skip: list[str]

    @classmethod
    def between(cls, plan: Any, verifier: Any, draft: Any) -> SliceSpec | None:
        """The draft shape as a slice of the verifier shape of one plan; None where its layers are not all the
        verifier's or it is wider."""
        from edgekit.elastic.skip import subnet_skips

        mine, theirs = plan.layer_sets[draft.depth], plan.layer_sets[verifier.depth]
        dv, dd = plan.geometry.dims(verifier), plan.geometry.dims(draft)
        if not set(mine) <= set(theirs) or dd.ffn > dv.ffn or dd.heads_per_group > dv.heads_per_group:
            return None
        position = {layer: k for k, layer in enumerate(theirs)}
        return cls(
            [position[x] for x in mine], dd.ffn, dd.heads_per_group, subnet_skips(mine, plan.skips_at(draft.depth))
        )

    def write(self, folder: Path) -> None:
        (folder / SLICE_FILE).write_text(json.dumps({"format": "edgekit-slice/1", **asdict(self)}, indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> SliceSpec:
        data = json.loads((folder / SLICE_FILE).read_text())
        return cls(data["layers"], data["ffn"], data["heads_per_group"], data.get("skip", []))


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


def cut(verifier: Any, spec: SliceSpec) -> Any | None:
    """The draft as a transformers model over the verifier model's own tensors (views where the layout allows);
    None where a block the draft computes is one the verifier skips (its weights are not in memory)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgekit.elastic.skip import CONFIG_KEY, apply_skips

    config = verifier.config.to_dict()
    kv = int(config.get("num_key_value_heads") or config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    theirs = config["num_attention_heads"] // kv
    source = verifier.state_dict(keep_vars=True)
    heads = None if spec.heads_per_group == theirs else _gathered_heads(theirs, spec.heads_per_group, kv, head_dim)
    state = {k: v.detach() for k, v in source.items() if not k.startswith("model.layers.")}
    for new, position in enumerate(spec.layers):
        src, dst = f"model.layers.{position}.", f"model.layers.{new}."
        for part, key in (("attn", "self_attn.o_proj.weight"), ("mlp", "mlp.down_proj.weight")):
            if f"{new}.{part}" not in spec.skip and src + key not in source:
                return None
        for key, t in source.items():
            if not key.startswith(src):
                continue
            name = key[len(src) :]
            if heads is not None and name.startswith("self_attn.q_proj."):
                t = t[heads]
            elif heads is not None and name == "self_attn.o_proj.weight":
                t = t[:, heads]
            elif name in ("mlp.gate_proj.weight", "mlp.up_proj.weight"):
                t = t[: spec.ffn]
            elif name == "mlp.down_proj.weight":
                t = t[:, : spec.ffn]
            state[dst + name] = t.detach()
    config.update(num_hidden_layers=len(spec.layers), intermediate_size=spec.ffn, head_dim=head_dim,
                  num_attention_heads=spec.heads_per_group * kv)  # fmt: skip
    if isinstance(config.get("layer_types"), list):
        config["layer_types"] = [config["layer_types"][i] for i in spec.layers]
    if "max_window_layers" in config:
        config["max_window_layers"] = min(config["max_window_layers"], len(spec.layers))
    config.pop(CONFIG_KEY, None)
    if spec.skip:
        config[CONFIG_KEY] = list(spec.skip)
    config = AutoConfig.for_model(**{k: v for k, v in config.items() if k not in ("transformers_version",)})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=verifier.dtype)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config).to(verifier.device)
    model.generation_config = verifier.generation_config
    return apply_skips(model).eval()


def corrections(elastic: Any, plan: Any, verifier: Any, draft: Any) -> dict[str, torch.Tensor]:
    """The draft's SMOL mix minus the verifier's, per adapted projection of the draft's layers, as LoRA factors
    `{new}.{target}.a` and `{new}.{target}.b` (scaling folded into b) in the draft's own coordinates; empty
    without SMOL or where both shapes get one mix."""
    smol = getattr(elastic, "smol", None)
    if smol is None:
        return {}
    mine, theirs = plan.layer_sets[draft.depth], plan.layer_sets[verifier.depth]
    skip = set(SliceSpec.between(plan, verifier, draft).skip)  # type: ignore[union-attr]
    dd = plan.geometry.dims(draft)
    rows = dd.num_heads * plan.geometry.head_dim
    order = elastic.group_major_columns(dd.num_heads)
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        mix, other = smol.mix(draft, mine), smol.mix(verifier, theirs)
        for new, layer in enumerate(mine):
            for target in smol.config.targets:
                if f"{new}.{'attn' if target in ('q', 'k', 'v', 'o') else 'mlp'}" in skip:
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
                out[f"{new}.{target}.a"] = a.detach().contiguous()
                out[f"{new}.{target}.b"] = (b * smol.config.scaling).detach().contiguous()
    return out


def apply_corrections(model: Any, factors: dict[str, torch.Tensor]) -> int:
    """Wrap each corrected projection of `model` in a CorrectedLinear; the largest rank."""
    largest = 0
    for key in factors:
        if not key.endswith(".a"):
            continue
        new, target, _ = key.split(".")
        owner, attr = MODULES[target].split(".")
        block = getattr(model.model.layers[int(new)], owner)
        linear = getattr(block, attr)
        dtype, device = linear.weight.dtype, linear.weight.device
        a, b = factors[key].to(device, dtype), factors[f"{new}.{target}.b"].to(device, dtype)
        setattr(block, attr, CorrectedLinear(linear.weight, linear.bias, a, b))
        largest = max(largest, a.shape[0])
    return largest


def slice_draft(session: Any, draft: Any) -> tuple[Any, SliceInfo] | None:
    """The draft shape cut from an ElasticTorchSession's current model with its SMOL correction; None where it
    cannot be a slice (a layer or block the verifier lacks, or wider)."""
    session.plan.check_shape(draft)
    spec = SliceSpec.between(session.plan, session.shape, draft)
    model = cut(session.model, spec) if spec is not None else None
    if model is None:
        return None
    rank = apply_corrections(model, corrections(session.elastic, session.plan, session.shape, draft))
    theirs = {t.untyped_storage().data_ptr() for t in session.model.state_dict(keep_vars=True).values()}
    shared = sum(t.numel() * t.element_size() for t in model.state_dict(keep_vars=True).values()
                 if t.untyped_storage().data_ptr() in theirs)  # fmt: skip
    return model, SliceInfo(shared, own_bytes(model, session.model), rank)


def write_slice(folder: Path, spec: SliceSpec, factors: dict[str, torch.Tensor]) -> None:
    """A shipped draft: its spec, and its correction where there is one."""
    from safetensors.torch import save_file

    spec.write(folder)
    if factors:
        save_file(factors, str(folder / CORRECTION_FILE), metadata={"format": "pt"})


def is_slice(folder: Path) -> bool:
    return (Path(folder) / SLICE_FILE).is_file()


def open_slice(folder: Path, verifier: Any) -> Any:
    """A shipped draft on its verifier session's weights: a TVM draft's library on a TvmSession's arrays, else a
    transformers model cut from a torch session's model."""
    from safetensors.torch import load_file

    from edgekit.engines.tvm_engine import BUILD, TvmSession
    from edgekit.errors import UsageError

    folder = Path(folder)
    if (folder / BUILD).is_file():
        return TvmSession.slice_of(folder, verifier)
    model = cut(verifier.model, SliceSpec.read(folder))
    if model is None:
        raise UsageError(f"the draft in {folder} computes a block its verifier does not hold; deploy it again")
    if (folder / CORRECTION_FILE).is_file():
        apply_corrections(model, load_file(str(folder / CORRECTION_FILE)))
    return model
