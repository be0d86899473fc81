"""ElasticModel (edgekit.elastic.model): the full shape equals transformers; the width permutation changes nothing."""

from __future__ import annotations

import torch

from edgekit.elastic.model import ElasticModel
from edgekit.elastic.width import permute_state, width_importance
from edgekit.shapes import Geometry, Shape


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
        assert not torch.allclose(nested(ids, Shape(4, 50, 2)).logits, hf(ids).logits, atol=1e-3)
