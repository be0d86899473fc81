"""SMOL (edgekit.elastic.smol) on the tiny plan: merged extraction equals the adapted model, the gate is sparse."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from edgekit.elastic.base_model import base_folder, load_elastic
from edgekit.elastic.extract import extract_elastic
from edgekit.elastic.plan import load_plan
from edgekit.elastic.smol import Smol, SmolConfig
from edgekit.shapes import Shape


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(seed))


def _adapted(plan, cfg: SmolConfig | None = None):
    elastic = load_elastic(plan)
    torch.manual_seed(0)
    smol = Smol(plan.geometry, cfg or SmolConfig(experts=4, rank=4, top_k=2), plan.width.grid)
    with torch.no_grad():  # trained adapters are not zero: give B values so the merge matters
        for b in smol.B.values():
            b.normal_(0, 0.05)
    elastic.smol = smol
    return elastic.eval()


@pytest.mark.parametrize("mixing", ["outputs", "factors"])
@pytest.mark.parametrize("shape", ["d6-w100", "d5-w67", "d3-w34"])
def test_merged_extraction_equals_the_elastic_model_with_smol(tiny_plan: Path, tmp_path: Path, shape: str, mixing: str):
    plan = load_plan(tiny_plan)
    elastic = _adapted(plan, SmolConfig(experts=4, rank=4, top_k=2, mixing=mixing))
    s = plan.shape(shape)
    with torch.no_grad():
        adapted = elastic(_ids(), s).logits
        elastic.smol, smol = None, elastic.smol
        plain = elastic(_ids(), s).logits
        elastic.smol = smol
    assert (adapted - plain).abs().max() > 1e-3, "the adapters must change the output for this test to mean anything"
    extract_elastic(elastic, plan, base_folder(plan), s, tmp_path / "sub")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "sub").eval()
    with torch.no_grad():
        assert (hf(_ids()).logits - adapted).abs().max().item() < 1e-5


def test_mixing_outputs_is_the_gated_sum_of_whole_loras(tiny_plan: Path):
    plan = load_plan(tiny_plan)
    smol = _adapted(plan, SmolConfig(experts=4, rank=4, top_k=2, mixing="outputs")).smol
    shape = plan.shape("d5-w67")
    mix = smol.mix(shape, plan.layer_sets[5])
    x = torch.randn(3, plan.geometry.hidden)
    want = sum(g * (x @ smol.A["up"][1, e].T) @ smol.B["up"][1, e].T for e, g in enumerate(mix) if g > 0)
    got = smol.delta(1, "up", x, mix)
    torch.testing.assert_close(got, want * smol.config.scaling)
    # the product-of-mixtures form differs: it has cross terms between the chosen experts
    old = Smol(plan.geometry, SmolConfig(experts=4, rank=4, top_k=2, mixing="factors"), plan.width.grid)
    old.load_state_dict(smol.state_dict())
    assert (old.delta(1, "up", x, mix) - got).abs().max() > 1e-4


@pytest.mark.parametrize("shared_rank", [0, 7])
def test_shared_expert_is_always_on_beside_the_routed_ones(tiny_plan: Path, tmp_path: Path, shared_rank: int):
    plan = load_plan(tiny_plan)
    cfg = SmolConfig(experts=4, rank=4, top_k=2, mixing="outputs", shared=True, shared_rank=shared_rank)
    elastic = _adapted(plan, cfg)
    smol = elastic.smol
    assert smol.shared_A["up"].shape[1] == (shared_rank or 4) and smol.A["up"].shape[2] == 4
    with torch.no_grad():
        for b in smol.shared_B.values():
            b.normal_(0, 0.05)
    shape = plan.shape("d5-w67")
    mix = smol.mix(shape, plan.layer_sets[5])
    x = torch.randn(3, plan.geometry.hidden)
    routed = sum(g * (x @ smol.A["up"][1, e].T) @ smol.B["up"][1, e].T for e, g in enumerate(mix) if g > 0)
    want = routed + (x @ smol.shared_A["up"][1].T) @ smol.shared_B["up"][1].T
    torch.testing.assert_close(smol.delta(1, "up", x, mix), want * smol.config.scaling)
    with torch.no_grad():
        adapted = elastic(_ids(), shape).logits
    extract_elastic(elastic, plan, base_folder(plan), shape, tmp_path / "sub")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "sub").eval()
    with torch.no_grad():
        assert (hf(_ids()).logits - adapted).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="shared needs"):
        SmolConfig(shared=True, mixing="factors")
    with pytest.raises(ValueError, match="shared_rank needs"):
        SmolConfig(shared_rank=8)


def test_checkpoints_without_mixing_load_as_factors():
    """smol.json from before its format was tagged (v1) does not say how the experts mix: it mixed factors."""
    from edgekit.formats import upgrade

    old = {"config": {"experts": 4, "rank": 4}, "widths": [100, 50]}
    current = upgrade("edgekit-smol", old, "smol.json")
    config = SmolConfig(**current["config"])
    assert current["format"] == "edgekit-smol/3" and config.mixing == "factors"
    # and its gate read the coupled width (v2 and before), not FFN and heads apart
    assert config.encoding == "width"
    assert SmolConfig(experts=4, rank=4).mixing == "outputs"  # new code builds the current form
    assert SmolConfig(experts=4, rank=4).encoding == "ffn-heads"
    with pytest.raises(ValueError, match="mixing must be outputs or factors"):
        SmolConfig(mixing="sum")


def test_gate_is_sparse_and_shape_aware(tiny_plan: Path):
    plan = load_plan(tiny_plan)
    smol = Smol(plan.geometry, SmolConfig(experts=5, rank=2, top_k=2), plan.width.grid).eval()
    with torch.no_grad():
        for layer in smol.gate:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0, 1.0)
    mixes = {}
    for shape in plan.space():
        mix = smol.mix(shape, plan.layer_sets[shape.depth])
        assert int((mix > 0).sum()) == 2 and abs(mix.sum().item() - 1) < 1e-6
        mixes[shape] = mix
    assert len({tuple(m.tolist()) for m in mixes.values()}) > 1, "different shapes should get different mixes"
    # FFN and heads each reach the gate: shapes that differ only in one of them are told apart
    codes = {smol.encode(Shape(6, f, h), plan.layer_sets[6]).tolist().__repr__() for f in (100, 50) for h in (3, 1)}
    assert len(codes) == 4
    shape = next(iter(mixes))
    again = smol.mix(shape, plan.layer_sets[shape.depth])
    assert torch.equal(again, mixes[shape]), "eval mode is deterministic"
    smol.train()
    draws = {tuple(smol.mix(shape, plan.layer_sets[shape.depth]).tolist()) for _ in range(20)}
    assert len(draws) > 1, "training adds noise to the gate"
    # a checkpoint whose gate read the coupled width still encodes every shape of the space
    old = Smol(plan.geometry, SmolConfig(experts=5, rank=2, top_k=2, encoding="width"), plan.width.grid)
    w = plan.width.grid[1]
    coupled = old.encode(plan.geometry.coupled(6, w), plan.layer_sets[6])
    assert coupled[6 + plan.width.grid.index(w)] == 1.0 and coupled[-1] == pytest.approx(w / 100)
    apart = old.encode(Shape(6, 50, 3), plan.layer_sets[6])
    assert apart[6 : 6 + len(plan.width.grid)].sum() == 0 and apart[-1] == pytest.approx(0.5)


def test_ungated_smol_is_one_lora_for_every_shape(tiny_plan: Path):
    plan = load_plan(tiny_plan)
    smol = Smol(plan.geometry, SmolConfig(gated=False, experts=4, rank=2), plan.width.grid)
    assert smol.config.experts == 1 and smol.A["q"].shape[1] == 1
    assert torch.equal(smol.mix(Shape(3, 25, 1), plan.layer_sets[3]), torch.ones(1))
