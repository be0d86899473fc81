"""A draft sliced from the verifier's tensors (edgekit.speculative.slice) computes its own merged model's logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgekit.elastic.base_model import base_folder, load_elastic
from edgekit.elastic.plan import load_plan
from edgekit.elastic.smol import Smol, SmolConfig
from edgekit.engines.base import Sampling
from edgekit.engines.torch_engine import ElasticTorchSession
from edgekit.models.weights import read_config
from edgekit.speculative import elastic_speculative
from edgekit.speculative.slice import CorrectedLinear, own_bytes, slice_draft

IDS = torch.randint(0, 300, (1, 24), generator=torch.Generator().manual_seed(1))


def _session(tiny_plan: Path, smol: SmolConfig | None, verifier: str | None = None) -> ElasticTorchSession:
    plan = load_plan(tiny_plan)
    elastic = load_elastic(plan)
    if smol is not None:
        torch.manual_seed(0)
        elastic.smol = Smol(plan.geometry, smol, plan.width.grid)
        with torch.no_grad():  # trained adapters are not zero: give B values so every shape's mix matters
            for b in elastic.smol.B.values():
                b.normal_(0, 0.05)
            if smol.shared:
                for b in elastic.smol.shared_B.values():
                    b.normal_(0, 0.05)
    shape = plan.shape(verifier) if verifier else plan.full
    return ElasticTorchSession(elastic.eval(), plan, read_config(base_folder(plan)), shape)


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize(
    ("smol", "draft"),
    [
        (SmolConfig(experts=4, rank=4, top_k=2, mixing="outputs"), "d3-f50-h3"),
        (SmolConfig(experts=4, rank=4, top_k=2, mixing="outputs", shared=True), "d4-f75-h2"),
        (SmolConfig(experts=4, rank=4, top_k=2, mixing="factors"), "d3-f50-h2"),
        (None, "d4-f75-h3"),
    ],
)
def test_a_sliced_draft_computes_its_own_merged_models_logits(tiny_plan: Path, smol, draft: str) -> None:
    session = _session(tiny_plan, smol)
    shape = session.plan.shape(draft)
    own = session._build(shape)
    made = slice_draft(session, shape)
    assert made is not None
    sliced, info = made
    reference = _logits(own)
    assert (_logits(sliced) - reference).abs().max().item() < 1e-4
    corrected = [m for m in sliced.modules() if isinstance(m, CorrectedLinear)]
    if smol is None:
        assert info.correction_rank == 0 and not corrected
        return
    assert corrected and info.correction_rank > 0
    # the correction is what makes them equal: the bare slice carries the verifier's mix, not the draft's
    for m in corrected:
        m.a.data.zero_()
    assert (_logits(sliced) - reference).abs().max() > 1e-3


def test_a_draft_slice_shares_the_verifiers_storage(tiny_plan: Path) -> None:
    session = _session(tiny_plan, SmolConfig(experts=4, rank=4, top_k=2))
    shape = session.plan.shape("d3-f50-h3")
    sliced, info = slice_draft(session, shape)
    own = session._build(shape)
    verifier = {t.untyped_storage().data_ptr() for t in session.model.state_dict().values()}
    layer = sliced.model.layers[0]
    assert layer.mlp.down_proj.weight.untyped_storage().data_ptr() in verifier
    assert layer.self_attn.k_proj.weight.untyped_storage().data_ptr() in verifier
    # what the slice adds is its corrections alone, far below a second copy of the draft's layers
    assert info.own_bytes == sum(
        m.a.numel() * 4 + m.b.numel() * 4 for m in sliced.modules() if isinstance(m, CorrectedLinear)
    )
    assert info.own_bytes == own_bytes(sliced, session.model) and info.own_bytes < own_bytes(own, session.model) / 2
    assert info.shared_bytes > 0


def test_a_draft_whose_layers_the_verifier_lacks_is_built_from_its_own_weights(tiny_plan: Path) -> None:
    plan = load_plan(tiny_plan)
    sets = plan.layer_sets
    pair = next(((a, b) for a in sets for b in sets if a < b and not set(sets[a]) <= set(sets[b])), None)
    if pair is None:  # the tiny plan's sets happen to nest: make the verifier's depth lack one of the draft's layers
        small, big = min(sets), min(sets) + 1
        missing = sets[small][0]
        sets[big] = [x for x in range(plan.geometry.num_layers) if x != missing][:big]
        pair = (small, big)
    small, big = pair
    session = _session(tiny_plan, None, f"d{big}-f100-h3")
    session.plan.layer_sets.update(sets)
    session.reshape(session.plan.shape(f"d{big}-f100-h3"))
    draft = session.plan.shape(f"d{small}-f50-h3")
    assert slice_draft(session, draft) is None
    spec = elastic_speculative(session, draft, 3)
    assert spec.draft_bytes == own_bytes(spec.draft_model, session.model) and not spec.draft_sliced
    greedy = Sampling(max_new_tokens=12, min_new_tokens=12)
    assert list(spec.stream([5, 17, 42], greedy)) == list(session.stream([5, 17, 42], greedy))


def test_speculation_drafts_with_a_slice_and_keeps_the_verifiers_reply(tiny_plan: Path) -> None:
    session = _session(tiny_plan, SmolConfig(experts=4, rank=4, top_k=2))
    spec = elastic_speculative(session, session.plan.shape("d4-f75-h2"), 3)
    assert spec.draft_sliced and spec.draft_bytes < own_bytes(session._build(session.plan.shape("d4-f75-h2")),
                                                                session.model)  # fmt: skip
    greedy = Sampling(max_new_tokens=20, min_new_tokens=20)
    for ids in ([5], [5, 17, 42], [9, 9, 30, 31, 2, 8]):
        assert list(spec.stream(ids, greedy)) == list(session.stream(ids, greedy))
    assert spec.stats.drafted > 0


def test_a_shipped_slice_opens_on_its_verifier_with_its_correction(tiny_plan: Path, tmp_path: Path) -> None:
    from edgekit.speculative.slice import SliceSpec, corrections, is_slice, open_slice, write_slice

    session = _session(tiny_plan, SmolConfig(experts=4, rank=4, top_k=2), "d5-f75-h3")
    shape = session.plan.shape("d3-f50-h2")
    spec = SliceSpec.between(session.plan, session.shape, shape)
    write_slice(tmp_path, spec, corrections(session.elastic, session.plan, session.shape, shape))
    assert is_slice(tmp_path) and (tmp_path / "correction.safetensors").is_file()
    assert SliceSpec.read(tmp_path) == spec
    opened = open_slice(tmp_path, session)  # from the verifier's model alone: no plan, no checkpoint
    assert (_logits(opened) - _logits(session._build(shape))).abs().max().item() < 1e-4
    # a spec naming a block the verifier does not hold is refused in one line
    SliceSpec(spec.layers + [40], spec.ffn, spec.heads_per_group, []).write(tmp_path)
    with pytest.raises(Exception, match="index|deploy it again"):
        open_slice(tmp_path, session)
