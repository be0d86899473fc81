from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from edgekit.elastic.depth import dp_calls, select_depth
from edgekit.elastic.model import ElasticModel
from edgekit.elastic.width import permute_state, width_importance
from edgekit.errors import UsageError
from edgekit.shapes import Geometry, Shape, parse_grid, parse_shape


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    config = AutoConfig.from_pretrained(tiny_llama_dir)
    state = load_file(str(tiny_llama_dir / "model.safetensors"))
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    return config, state, hf


def _ids(n: int = 2, t: int = 24, vocab: int = 300, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


def test_full_shape_matches_transformers(tiny):
    config, state, hf = tiny
    model = ElasticModel.from_hf_state(config, state).eval()
    ids = _ids()
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, hf(ids).logits, atol=1e-5)


def test_permutation_does_not_change_the_full_model(tiny):
    config, state, hf = tiny
    geometry = Geometry.from_config(config)
    model = ElasticModel.from_hf_state(config, state).eval()
    ffn, heads, ffn_scores, head_scores = width_importance(model, _ids(4, 32, seed=1))
    assert all(sorted(p.tolist()) == list(range(geometry.ffn)) for p in ffn)
    # heads stay inside their KV group: a valid GQA layout at every width
    per = geometry.heads_per_group
    for p in heads:
        assert all(
            sorted(p[g * per : (g + 1) * per].tolist()) == list(range(g * per, (g + 1) * per))
            for g in range(geometry.num_kv_heads)
        )
    assert all((s[p][:-1] >= s[p][1:]).all() for s, p in zip(ffn_scores, ffn, strict=True))
    assert any(not torch.equal(p, torch.arange(geometry.ffn)) for p in ffn), "calibration must reorder something"
    permuted = permute_state(state, geometry, ffn, heads)
    hf_perm = type(hf)(config).eval()
    hf_perm.load_state_dict(permuted, strict=False)
    hf_perm.tie_weights()
    ids = _ids(seed=2)
    with torch.no_grad():
        assert torch.allclose(hf_perm(ids).logits, hf(ids).logits, atol=1e-5)
        # and narrower widths really are different networks
        nested = ElasticModel.from_hf_state(config, permuted).eval()
        assert not torch.allclose(nested(ids, Shape(4, 50)).logits, hf(ids).logits, atol=1e-3)


def test_width_rule_and_shape_parsing(tiny):
    config, _, _ = tiny
    g = Geometry.from_config(config)  # ffn 128, 4 heads / 2 KV heads
    assert g.dims(100).ffn == 128 and g.dims(100).num_heads == 4
    assert g.dims(50).ffn == 64 and g.dims(50).heads_per_group == 1 and g.dims(50).num_heads == 2
    assert g.dims(10).ffn == 64  # never below one multiple
    smol = Geometry(30, 576, 1536, 9, 3, 64, 49152)
    assert smol.dims(75).ffn == 1152 and smol.dims(75).num_heads == 6
    # 134,515,008 parameters minus the 49152 x 576 embedding
    assert smol.non_embedding_params(Shape(30, 100)) == 134_515_008 - 49152 * 576
    assert parse_shape("d20-w75") == Shape(20, 75) and parse_shape("full", 30) == Shape(30, 100)
    assert parse_grid("d30,24 x w100,75") == [Shape(30, 100), Shape(30, 75), Shape(24, 100), Shape(24, 75)]
    with pytest.raises(UsageError, match="d20-w75"):
        parse_shape("20x75")


@pytest.mark.parametrize("method", ["amoeba", "shortgpt", "angular", "last"])
def test_depth_selection_gives_a_valid_set_per_depth(tiny, method):
    config, state, _ = tiny
    model = ElasticModel.from_hf_state(config, state).eval()
    calls = []
    plan = select_depth(model, _ids(2, 32, seed=3), method=method, min_depth=2, on_call=lambda: calls.append(1))
    assert sorted(plan.layer_sets) == [2, 3, 4]
    for depth, kept in plan.layer_sets.items():
        assert len(kept) == depth and kept == sorted(set(kept)) and 0 in kept
        assert 3 in kept or method == "last"  # the literal drop-last baseline is the one that drops it
        assert plan.scores[depth] > 1
    if method == "amoeba":
        assert plan.scorer_calls == dp_calls(4, 2, {0, 3}) == len(calls) + 1
        # DP keeps the better of the two candidates at every step, so its depth-3 choice is the
        # best single removal among the allowed layers (an exhaustive check on 2 candidates).
        full = ElasticModel.from_hf_state(config, state).eval()
        ids = _ids(2, 32, seed=3)
        from edgekit.elastic.depth import Calibration

        calib = Calibration(full, ids)
        best = min((1, 2), key=lambda r: calib.perplexity(calib.run_from(0, {r})))
        assert plan.layer_sets[3] == sorted({0, 1, 2, 3} - {best})
