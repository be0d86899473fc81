"""Cut one shape out of a plan as a *standard* Hugging Face checkpoint.

The subnet is an ordinary Llama (or Qwen2/Mistral) folder: fewer layers, a smaller
`intermediate_size`, fewer query heads with `head_dim` written out (hidden size no longer equals
heads x head_dim), tokenizer and generation config copied. Every runtime that loads the base
architecture loads it. Only the kept rows and columns are read from the base weights, so cutting
the default model takes well under a second.

Head order: the plan stores, per KV group, the group's query heads most important first; the
subnet keeps the first q of each group and writes them group-major (group 0's heads, then group
1's, ...), which is the layout transformers' grouped-query attention expects.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from edgekit import __version__
from edgekit.artifacts import atomic_dir, check_free_space, hash_tree, write_manifest
from edgekit.elastic.model import head_channels
from edgekit.elastic.plan import Permutations, Plan
from edgekit.elastic.skip import CONFIG_KEY, apply_skips, subnet_skips, zero_skipped
from edgekit.models.weights import TOKENIZER_FILES, Weights, read_config
from edgekit.shapes import Geometry, Shape

SUBNET_MANIFEST = "edgekit-subnet.json"


def read_subnet(folder: Path, verify: bool = True) -> dict[str, Any]:
    """An extracted checkpoint's manifest, checked (its seal, and with `verify` every file against its hash)."""
    from edgekit.artifacts import read_format_json, verify_files

    what = f"extracted checkpoint {folder}"
    manifest = read_format_json(folder / SUBNET_MANIFEST, "edgekit-subnet", what, "; extract it again")
    if verify:
        verify_files(folder, manifest["files"], what)
    return manifest


@dataclass
class SubnetInfo:
    shape: str
    layers: list[int]  # base-model layer indices, in order
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    parameters: int
    non_embedding_parameters: int


def subnet_config(
    config: dict[str, Any], geometry: Geometry, shape: Shape, layers: list[int], skip: list[str] | None = None
) -> dict[str, Any]:
    """The subnet's config.json; `skip` lists its dropped blocks in its own layer numbering (edgekit.elastic.skip)."""
    dims = geometry.dims(shape)
    out = dict(config)
    out.update(
        num_hidden_layers=len(layers),
        intermediate_size=dims.ffn,
        num_attention_heads=dims.num_heads,
        num_key_value_heads=dims.num_kv_heads,
        head_dim=dims.head_dim,
    )
    if isinstance(config.get("layer_types"), list):
        out["layer_types"] = [config["layer_types"][i] for i in layers]
    if "max_window_layers" in config:
        out["max_window_layers"] = min(config["max_window_layers"], len(layers))
    out.pop("_name_or_path", None)
    out.pop(CONFIG_KEY, None)
    if skip:
        out[CONFIG_KEY] = list(skip)
    return out


def head_rows(perm: torch.Tensor, geometry: Geometry, per_group: int) -> torch.Tensor:
    """Rows of q_proj (columns of o_proj) for the kept heads, group-major."""
    per = geometry.heads_per_group
    heads = torch.cat([perm[g * per : g * per + per_group] for g in range(geometry.num_kv_heads)])
    return head_channels(heads, geometry.head_dim)


def subnet_state(
    weights: Weights, geometry: Geometry, perms: Permutations, shape: Shape, layers: list[int]
) -> dict[str, torch.Tensor]:
    dims = geometry.dims(shape)
    state: dict[str, torch.Tensor] = {}
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        if name in weights:
            state[name] = weights.get(name)
    for new, old in enumerate(layers):
        src, dst = f"model.layers.{old}.", f"model.layers.{new}."
        rows = head_rows(perms.heads[old], geometry, dims.heads_per_group)
        ffn = perms.ffn[old][: dims.ffn]
        for key in weights.names():
            if not key.startswith(src):
                continue
            name = key[len(src) :]
            t = weights.get(key)
            if name in ("self_attn.q_proj.weight", "self_attn.q_proj.bias"):
                t = t[rows]
            elif name == "self_attn.o_proj.weight":
                t = t[:, rows]
            elif name in ("mlp.gate_proj.weight", "mlp.up_proj.weight"):
                t = t[ffn]
            elif name == "mlp.down_proj.weight":
                t = t[:, ffn]
            state[dst + name] = t.contiguous()
    return state


def elastic_state(elastic: Any, shape: Shape, layers: list[int] | None = None) -> dict[str, torch.Tensor]:
    """The subnet's Hugging Face state from a loaded ElasticModel, with its SMOL mix merged when attached:
    the layers of the shape's depth, or `layers` (at the shape's widths) when given."""
    g = elastic.geometry
    dims = g.dims(shape)
    layers = elastic.layers_for(shape.depth) if layers is None else layers
    rows = dims.num_heads * g.head_dim
    # the ElasticModel's rank-major q rows / o columns, put in the group-major order transformers expects
    order = elastic.group_major_columns(dims.num_heads)
    if order is None:
        order = torch.arange(rows)
    smol = elastic.smol
    mix = smol.mix(shape, layers) if smol is not None else None

    def merged(i: int, target: str, w: torch.Tensor, rows: int | None = None, cols: int | None = None):
        return w if smol is None else smol.merged(i, target, w, mix, rows, cols)

    state: dict[str, torch.Tensor] = {"model.embed_tokens.weight": elastic.embed, "model.norm.weight": elastic.norm}
    if elastic.lm_head is not None:
        state["lm_head.weight"] = elastic.lm_head
    for new, i in enumerate(layers):
        b, p = elastic.blocks[i], f"model.layers.{new}."
        state[p + "input_layernorm.weight"] = b.ln1
        state[p + "post_attention_layernorm.weight"] = b.ln2
        state[p + "self_attn.q_proj.weight"] = merged(i, "q", b.q[:rows], rows=rows)[order]
        state[p + "self_attn.k_proj.weight"] = merged(i, "k", b.k)
        state[p + "self_attn.v_proj.weight"] = merged(i, "v", b.v)
        state[p + "self_attn.o_proj.weight"] = merged(i, "o", b.o[:, :rows], cols=rows)[:, order]
        for name, key in (("q_b", "q_proj"), ("k_b", "k_proj"), ("v_b", "v_proj")):
            bias = getattr(b, name, None)
            if bias is not None:
                state[p + f"self_attn.{key}.bias"] = bias[:rows][order] if name == "q_b" else bias
        state[p + "mlp.gate_proj.weight"] = merged(i, "gate", b.gate[: dims.ffn], rows=dims.ffn)
        state[p + "mlp.up_proj.weight"] = merged(i, "up", b.up[: dims.ffn], rows=dims.ffn)
        state[p + "mlp.down_proj.weight"] = merged(i, "down", b.down[:, : dims.ffn], cols=dims.ffn)
    return {k: v.detach().contiguous() for k, v in state.items()}


def hf_model(base_config: dict[str, Any], geometry: Geometry, shape: Shape, layers: list[int],
             state: dict[str, torch.Tensor], skip: list[str] | None = None) -> Any:  # fmt: skip
    """A transformers Llama of `layers` at `shape`'s widths holding `state` (no copy: the tensors are assigned),
    the blocks `skip` names not computed."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**subnet_config(base_config, geometry, shape, layers, skip))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # buffers are not in the state
    return apply_skips(model).eval()


def extract(plan: Plan, perms: Permutations, base: Path, shape: Shape, out: Path, force: bool = False) -> SubnetInfo:
    """Write the subnet for `shape` to `out` atomically (plan and base already verified by the caller).

    Reads only the kept rows and columns from the base weights: the fast path for plans without SMOL."""
    plan.check_shape(shape)
    layers = plan.layer_sets[shape.depth]
    state = subnet_state(Weights(base), plan.geometry, perms, shape, layers)
    return write_subnet(state, plan, base, shape, layers, out, force)


def extract_elastic(
    elastic: Any, plan: Plan, base: Path, shape: Shape, out: Path, force: bool = False, extra: dict | None = None
) -> SubnetInfo:
    """Write the subnet from a loaded ElasticModel (SMOL merged when attached)."""
    plan.check_shape(shape)
    with torch.no_grad():
        state = elastic_state(elastic.eval(), shape)
    return write_subnet(state, plan, base, shape, plan.layer_sets[shape.depth], out, force, extra)


def write_subnet(
    state: dict[str, torch.Tensor],
    plan: Plan,
    base: Path,
    shape: Shape,
    layers: list[int],
    out: Path,
    force: bool = False,
    extra: dict | None = None,
) -> SubnetInfo:
    from safetensors.torch import save_file

    start = time.perf_counter()
    config = read_config(base)
    tied = config.get("tie_word_embeddings", False)
    if tied:
        state.pop("lm_head.weight", None)
    skip = subnet_skips(layers, plan.skips_at(shape.depth))
    state = zero_skipped(state, skip)
    dims = plan.geometry.dims(shape)
    params = sum(t.numel() for t in state.values())
    embedding = state["model.embed_tokens.weight"].numel() + (0 if tied else state["lm_head.weight"].numel())
    info = SubnetInfo(shape.name, layers, dims.num_heads, dims.num_kv_heads, dims.ffn, params, params - embedding)
    size = sum(t.numel() * t.element_size() for t in state.values())
    check_free_space(Path(out).parent, size + (1 << 20), f"the {shape.name} checkpoint")
    with atomic_dir(out, replace=force) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        subnet = subnet_config(config, plan.geometry, shape, layers, skip)
        (tmp / "config.json").write_text(json.dumps(subnet, indent=2))
        for name in TOKENIZER_FILES:
            if (base / name).is_file():
                shutil.copy2(base / name, tmp / name)
        manifest = {
            "format": "edgekit-subnet/1",
            "subnet": asdict(info),
            "plan": {
                "name": plan.name,
                "depth_method": plan.depth.method,
                "width_method": plan.width.method,
                "permutations_sha256": plan.permutations_sha256,
            },
            "base_model": asdict(plan.model),
            **({"skipped_blocks": skip} if skip else {}),
            **(extra or {}),
            "edgekit_version": __version__,
            "files": hash_tree(tmp),
            "seconds": round(time.perf_counter() - start, 3),
        }
        write_manifest(tmp / SUBNET_MANIFEST, manifest)
    return info
