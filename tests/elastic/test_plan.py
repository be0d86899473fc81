"""Plan folders (edgekit.elastic.plan): layer sets, width order, permutations, the shipped plan, corrupt plans."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
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
    assert plan.width.ffn_floor == 25 and plan.width.ffn_multiple == 64
    assert plan.width.grid[0] == 100 and len(plan.width.grid) >= 3
    # 4 depths x FFN f25..f100 in 64-channel tiles x 1..3 query heads per KV group
    space = plan.space()
    assert len(space) == 4 * 4 * 3 == len(set(space)) and plan.geometry.full in space
    assert {s.ffn for s in space} == {25, 50, 75, 100} and {s.heads for s in space} == {1, 2, 3}
    assert all(plan.check_shape(s) == s for s in space)
    assert set(plan.grid()) <= set(space)
    perms = load_permutations(plan)  # verifies hash, permutation and GQA validity
    assert len(perms.ffn) == 6 and all(p.numel() == 256 for p in perms.ffn)


def test_permuted_plan_full_shape_equals_the_original_model(tiny_plan: Path, tiny_gqa3_dir: Path):
    elastic = load_elastic(load_plan(tiny_plan))
    hf = AutoModelForCausalLM.from_pretrained(tiny_gqa3_dir).eval()
    ids = _ids()
    with torch.no_grad():
        diff = (elastic(ids).logits - hf(ids).logits).abs().max().item()
    assert diff < 1e-5


def test_narrower_shapes_are_slices_of_the_same_weights(tiny_plan: Path):
    elastic = load_elastic(load_plan(tiny_plan))
    before = {n: p.data_ptr() for n, p in elastic.named_parameters()}
    ids = _ids()
    with torch.no_grad():
        wide = elastic(ids, Shape(6, 100, 3)).logits
        narrow = elastic(ids, Shape(4, 50, 2)).logits
    assert {n: p.data_ptr() for n, p in elastic.named_parameters()} == before
    assert not torch.allclose(wide, narrow, atol=1e-3)


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
