"""Plans, extraction and their bad inputs, on tiny random models through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_PLAN_BUDGET
from transformers import AutoModelForCausalLM

from edgekit.elastic.base_model import load_elastic
from edgekit.elastic.plan import PERMS_FILE, PLAN_JSON, load_permutations, load_plan, shipped_plans
from edgekit.models.weights import weights_digest
from edgekit.shapes import Shape


def _ids(t: int = 20, n: int = 2, seed: int = 0, vocab: int = 300) -> torch.Tensor:
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


def test_plan_folder_holds_every_depth_and_a_valid_width_order(tiny_plan: Path, tiny_gqa3_dir: Path):
    plan = load_plan(tiny_plan)
    assert plan.depths == [3, 4, 5, 6]
    for d, layers in plan.layer_sets.items():
        assert len(layers) == d and 0 in layers and 5 in layers  # first and last are protected
    assert plan.model.digest == weights_digest(tiny_gqa3_dir)
    assert plan.depth.method == "amoeba" and plan.depth.scorer_calls > 0
    assert plan.width.min_width == 17  # round_half_up(3 * w / 100) >= 1
    assert plan.width.grid[0] == 100 and len(plan.width.grid) >= 3
    perms = load_permutations(plan)  # verifies hash, permutation and GQA validity
    assert len(perms.ffn) == 6 and all(p.numel() == 256 for p in perms.ffn)


def test_permuted_plan_full_shape_equals_the_original_model(tiny_plan: Path, tiny_gqa3_dir: Path):
    elastic = load_elastic(load_plan(tiny_plan))
    hf = AutoModelForCausalLM.from_pretrained(tiny_gqa3_dir).eval()
    ids = _ids()
    with torch.no_grad():
        diff = (elastic(ids).logits - hf(ids).logits).abs().max().item()
    assert diff < 1e-5


@pytest.mark.parametrize("shape", ["full", "d5-w67", "d4-w50", "d3-w17"])
def test_extracted_checkpoint_loads_in_transformers_and_equals_the_elastic_model(
    tiny_plan: Path, tmp_path: Path, cli, shape: str
):
    out = tmp_path / "subnet"
    result = cli("elastic", "extract", "--plan", str(tiny_plan), "--shape", shape, "--out", str(out), "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    plan = load_plan(tiny_plan)
    s = plan.shape(shape)
    dims = plan.geometry.dims(s.width)
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


def test_narrower_shapes_are_slices_of_the_same_weights(tiny_plan: Path):
    elastic = load_elastic(load_plan(tiny_plan))
    before = {n: p.data_ptr() for n, p in elastic.named_parameters()}
    ids = _ids()
    with torch.no_grad():
        wide = elastic(ids, Shape(6, 100)).logits
        narrow = elastic(ids, Shape(4, 50)).logits
    assert {n: p.data_ptr() for n, p in elastic.named_parameters()} == before
    assert not torch.allclose(wide, narrow, atol=1e-3)


def test_digest_follows_weights_not_file_layout(tiny_gqa3_dir: Path, tmp_path: Path, edgekit_home: Path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_gqa3_dir / "model.safetensors"))
    reordered = tmp_path / "reordered"
    reordered.mkdir()
    names = sorted(state, reverse=True)
    half = len(names) // 2  # two shards, reverse order, other metadata
    save_file({k: state[k] for k in names[:half]}, str(reordered / "a.safetensors"), metadata={"x": "1"})
    save_file({k: state[k] for k in names[half:]}, str(reordered / "b.safetensors"))
    assert weights_digest(reordered) == weights_digest(tiny_gqa3_dir)
    state["model.norm.weight"][0] += 1e-3
    changed = tmp_path / "changed"
    changed.mkdir()
    save_file(state, str(changed / "model.safetensors"))
    assert weights_digest(changed) != weights_digest(tiny_gqa3_dir)


def test_shipped_plan_loads_and_describes_the_default_model():
    assert "smollm2-135m" in shipped_plans()
    plan = load_plan("smollm2-135m")
    g = plan.geometry
    assert (g.num_layers, g.hidden, g.ffn, g.num_heads, g.num_kv_heads) == (30, 576, 1536, 9, 3)
    assert plan.depths == list(range(15, 31)) and plan.depth.method == "amoeba" and plan.depth.scorer == "ppl"
    assert plan.model.ref == "smollm2-135m"
    perms = load_permutations(plan)
    assert all(p.numel() == 1536 for p in perms.ffn)
    # calibration perplexity rises as layers go
    scores = [plan.depth.scores[d] for d in sorted(plan.depths, reverse=True)]
    assert scores == sorted(scores)


# ------------------------------------------------------------------ bad input


def _no_partials(parent: Path) -> bool:
    return not any(p.name.startswith(".partial-") for p in parent.iterdir())


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("d2-w100", "outside plan tiny-plan: it offers depths 3..6, widths w17..w100"),
        ("d7-w100", "depths 3..6"),
        ("d5-w10", "no valid GQA layout; the smallest valid width is w17"),
        ("d5-w120", "not a percentage"),
        ("d5", "cannot parse shape"),
    ],
)
def test_shape_outside_the_plan_is_one_line(tiny_plan: Path, tmp_path: Path, cli, shape: str, message: str):
    result = cli("elastic", "extract", "--plan", str(tiny_plan), "--shape", shape, "--out", str(tmp_path / "o"))
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and _no_partials(tmp_path)


def test_plan_for_another_model_is_refused(tiny_plan: Path, tiny_llama_dir: Path, tmp_path: Path, cli):
    result = cli(
        "elastic", "extract", "--plan", str(tiny_plan), "--shape", "d4-w50",
        "--base-model", str(tiny_llama_dir), "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert result.code == 3
    assert "was made for" in result.err and "other weights" in result.err
    assert not (tmp_path / "o").exists() and _no_partials(tmp_path)


def test_corrupt_plan_is_refused(tiny_plan: Path, tmp_path: Path, cli):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_plan, broken)
    perms = broken / PERMS_FILE
    perms.write_bytes(perms.read_bytes()[:-8] + b"\0" * 8)
    result = cli("elastic", "extract", "--plan", str(broken), "--shape", "d4-w50", "--out", str(tmp_path / "o"))
    assert result.code == 3 and "does not match the hash" in result.err
    (broken / PLAN_JSON).write_text("{")
    result = cli("elastic", "show", str(broken))
    assert result.code == 3 and "not valid JSON" in result.err


def test_calibration_text_too_short(tiny_gqa3_dir: Path, tmp_path: Path, cli):
    short = tmp_path / "short.txt"
    short.write_text("Paris is the capital of France.")
    out = tmp_path / "plan"
    result = cli("elastic", "plan", "--model", str(tiny_gqa3_dir), "--calib", str(short), "--out", str(out),
                 *TINY_PLAN_BUDGET)  # fmt: skip
    assert result.code == 2
    assert "has" in result.err and "tokens; the budget needs 256" in result.err
    assert not out.exists() and _no_partials(tmp_path)


def test_unsupported_architecture_names_the_supported_ones(tiny_gqa3_dir: Path, calib_text: Path, tmp_path: Path, cli):
    other = tmp_path / "gpt2ish"
    shutil.copytree(tiny_gqa3_dir, other)
    config = json.loads((other / "config.json").read_text())
    config.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (other / "config.json").write_text(json.dumps(config))
    result = cli("elastic", "plan", "--model", str(other), "--calib", str(calib_text), "--out", str(tmp_path / "p"))
    assert result.code == 2
    assert "unsupported architecture GPT2LMHeadModel" in result.err and "LlamaForCausalLM" in result.err


def test_existing_output_needs_force(tiny_plan: Path, tmp_path: Path, cli):
    out = tmp_path / "subnet"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("elastic", "extract", "--plan", str(tiny_plan), "--shape", "d4-w50", "--out", str(out))
    assert result.code == 2 and "--force" in result.err
    assert (out / "keep.txt").read_text() == "mine"


def test_eval_scores_a_plan_shape(tiny_plan: Path, calib_text: Path, cli):
    args = [
        "eval",
        "--plan",
        str(tiny_plan),
        "--text",
        str(calib_text),
        "--max-length",
        "64",
        "--stride",
        "32",
        "--json",
    ]
    full = cli(*args, "--shape", "full")
    narrow = cli(*args, "--shape", "d3-w34")
    assert full.code == 0 and narrow.code == 0, full.err + narrow.err
    f, n = json.loads(full.out), json.loads(narrow.out)
    assert f["model"] == "tiny-plan:d6-w100" and n["model"] == "tiny-plan:d3-w34"
    assert f["perplexity"]["ppl"] != n["perplexity"]["ppl"]


def test_eval_shape_needs_a_plan_and_lm_eval_needs_its_package(cli, monkeypatch):
    result = cli("eval", "--shape", "d20-w75", "--text", "x.txt")
    assert result.code == 2 and "--shape needs --plan or --elastic" in result.err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    result = cli("eval", "--lm-eval", "piqa")
    assert result.code == 4 and "pip install lm-eval" in result.err


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
