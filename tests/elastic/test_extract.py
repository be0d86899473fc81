"""Extraction (edgekit.elastic.extract): cut shapes load in transformers and equal the elastic model; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from elastic_helpers import _no_partials
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from edgekit.elastic.base_model import base_folder, load_elastic
from edgekit.elastic.extract import extract, extract_elastic
from edgekit.elastic.plan import load_permutations, load_plan
from edgekit.errors import UsageError


def _ids(t: int = 20, n: int = 2, seed: int = 0, vocab: int = 300) -> torch.Tensor:
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", ["full", "d5-w67", "d4-w50", "d3-w17", "d4-f25-h3", "d5-f100-h1"])
def test_extracted_checkpoint_loads_in_transformers_and_equals_the_elastic_model(
    tiny_plan: Path, tmp_path: Path, cli, shape: str
):
    out = tmp_path / "subnet"
    result = cli("elastic", "extract", "--plan", str(tiny_plan), "--shape", shape, "--out", str(out), "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    plan = load_plan(tiny_plan)
    s = plan.shape(shape)
    dims = plan.geometry.dims(s)
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    assert hf.config.num_hidden_layers == s.depth == len(info["layers"])
    assert hf.config.intermediate_size == dims.ffn
    assert hf.config.num_attention_heads == dims.num_heads and hf.config.num_key_value_heads == 2
    assert info["layers"] == plan.layer_sets[s.depth]
    assert (out / "tokenizer.json").is_file() and (out / "generation_config.json").is_file()
    elastic = load_elastic(plan)
    ids = _ids(seed=3)
    with torch.no_grad():
        diff = (elastic(ids, s).logits - hf(ids).logits).abs().max().item()
    assert diff < 1e-5
    manifest = json.loads((out / "edgekit-subnet.json").read_text())
    assert manifest["base_model"]["digest"] == plan.model.digest
    assert set(manifest["files"]) >= {"model.safetensors", "config.json"}


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("d2-w100", "outside plan tiny-plan: it offers depths 3..6, FFN f25..f100"),
        ("d7-w100", "depths 3..6, FFN f25..f100 (in steps of 64 channels), h1..h3; nearest valid shape: d6-f100-h3"),
        (
            "d5-f50-h4",
            "a group has 1 to 3 (every KV head stays, so grouped-query attention stays valid); nearest valid "
            "shape: d5-f50-h3",
        ),
        ("d5-f50-h0", "nearest valid shape: d5-f50-h1"),
        ("d5-w120", "w120 is not a percentage"),
        ("d5-f0-h2", "f0 is not a percentage"),
        ("d5-x2", "cannot parse shape"),
    ],
)
def test_shape_outside_the_plan_is_one_line(tiny_plan: Path, tmp_path: Path, cli, shape: str, message: str):
    result = cli("elastic", "extract", "--plan", str(tiny_plan), "--shape", shape, "--out", str(tmp_path / "o"))
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and _no_partials(tmp_path)


def test_a_shape_under_the_ffn_floor_names_the_nearest_valid_one(tiny_plan: Path):
    from dataclasses import replace

    plan = load_plan(tiny_plan)
    assert plan.shape("d5-f10-h2").name == "d5-f25-h2"  # one 64-channel tile is the least a layer keeps
    high = replace(plan, width=replace(plan.width, ffn_floor=50))
    with pytest.raises(UsageError, match="f25 is below the plan's FFN floor f50; nearest valid shape: d5-f50-h2"):
        high.shape("d5-f25-h2")
    assert {s.ffn for s in high.space()} == {50, 75, 100}


def test_plan_for_another_model_is_refused(tiny_plan: Path, tiny_llama_dir: Path, tmp_path: Path, cli):
    result = cli(
        "elastic", "extract", "--plan", str(tiny_plan), "--shape", "d4-w50",
        "--base-model", str(tiny_llama_dir), "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert result.code == 3
    assert "was made for" in result.err and "other weights" in result.err
    assert not (tmp_path / "o").exists() and _no_partials(tmp_path)


def test_existing_output_needs_force(tiny_plan: Path, tmp_path: Path, cli):
    out = tmp_path / "subnet"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("elastic", "extract", "--plan", str(tiny_plan), "--shape", "d4-w50", "--out", str(out))
    assert result.code == 2 and "--force" in result.err
    assert (out / "keep.txt").read_text() == "mine"


def test_qwen2_with_attention_biases_plans_and_extracts_exactly(calib_text: Path, tmp_path: Path, cli):
    from tiny import build_tiny_qwen2

    model_dir = build_tiny_qwen2(tmp_path / "qwen2")
    plan_dir = tmp_path / "plan"
    result = cli("elastic", "plan", "--model", str(model_dir), "--calib", str(calib_text), "--out", str(plan_dir),
                 "--calib-tokens", "64", "--width-tokens", "128", "--seq-len", "16")  # fmt: skip
    assert result.code == 0, result.err
    plan = load_plan(plan_dir)
    elastic = load_elastic(plan)
    hf_full = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = _ids()
    with torch.no_grad():
        assert (elastic(ids).logits - hf_full(ids).logits).abs().max().item() < 1e-5
    out = tmp_path / "sub"
    assert cli("elastic", "extract", "--plan", str(plan_dir), "--shape", "d3-w50", "--out", str(out)).code == 0
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    assert hf.config.model_type == "qwen2" and hf.config.num_attention_heads == 2
    assert hf.model.layers[0].self_attn.q_proj.bias.shape == (2 * 16,)
    with torch.no_grad():
        assert (elastic(ids, plan.shape("d3-w50")).logits - hf(ids).logits).abs().max().item() < 1e-5


def test_extraction_from_the_elastic_model_equals_the_fast_path(tiny_plan: Path, tmp_path: Path):
    plan = load_plan(tiny_plan)
    s = plan.shape("d4-w50")
    extract(plan, load_permutations(plan), base_folder(plan), s, tmp_path / "fast")
    extract_elastic(load_elastic(plan), plan, base_folder(plan), s, tmp_path / "slow")
    fast, slow = (
        load_file(str(tmp_path / "fast/model.safetensors")),
        load_file(str(tmp_path / "slow/model.safetensors")),
    )
    assert fast.keys() == slow.keys()
    assert all(torch.equal(fast[k], slow[k]) for k in fast)


@pytest.mark.parametrize(("narrow", "wide"), [("d6-f50-h3", "d6-f100-h3"), ("d6-f100-h1", "d6-f100-h3"),
                                              ("d6-f25-h2", "d6-f75-h3"), ("d4-f50-h1", "d4-f75-h2")])  # fmt: skip
def test_both_widths_are_nested(tiny_plan: Path, tmp_path: Path, narrow: str, wide: str):
    """Every narrower FFN is a prefix of the wider one's channels, and every smaller head count a prefix of each
    KV group's heads: the narrow subnet's tensors are slices of the wide one's, in both axes at once."""
    plan = load_plan(tiny_plan)
    perms, base = load_permutations(plan), base_folder(plan)
    cut = {}
    for name in (narrow, wide):
        extract(plan, perms, base, plan.shape(name), tmp_path / name)
        cut[name] = load_file(str(tmp_path / name / "model.safetensors"))
    n, w = plan.geometry.dims(plan.shape(narrow)), plan.geometry.dims(plan.shape(wide))
    hd, groups = n.head_dim, n.num_kv_heads
    small, big = cut[narrow], cut[wide]
    assert small.keys() == big.keys()
    for key, t in small.items():
        ref = big[key]
        if key.endswith(("gate_proj.weight", "up_proj.weight")):
            assert torch.equal(t, ref[: n.ffn])
        elif key.endswith("down_proj.weight"):
            assert torch.equal(t, ref[:, : n.ffn])
        elif key.endswith("q_proj.weight"):
            per = ref.view(groups, w.heads_per_group, hd, -1)[:, : n.heads_per_group]
            assert torch.equal(t, per.reshape(-1, ref.shape[-1]))
        elif key.endswith("o_proj.weight"):
            per = ref.view(ref.shape[0], groups, w.heads_per_group, hd)[:, :, : n.heads_per_group]
            assert torch.equal(t, per.reshape(ref.shape[0], -1))
        else:  # embeddings, norms, k/v projections: every KV head stays
            assert torch.equal(t, ref), key
