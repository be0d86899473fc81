"""The input-adaptive router on the tiny plan: features from shared weights only, a router fitted and stored
with its hashes, and routed replies equal to the chosen shape's own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.engines import Sampling
from edgekit.errors import IntegrityError
from edgekit.routing import fit_router, identity, policy
from edgekit.routing import router as router_io
from edgekit.routing.features import FeatureExtractor, shared_prefix
from edgekit.routing.session import RoutedPolicy, RoutedSession

MENU = ["d3-f50-h2", "d4-f75-h3", "d6-f100-h3"]


@pytest.fixture(scope="module")
def source(tiny_plan: Path):
    from edgekit.elastic.source import Source

    return Source.resolve(plan=str(tiny_plan))


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough prompts that the stable dev tenth holds a router part of a dozen or more."""
    topics = ["France", "Python", "a Jetson board", "latency", "memory", "a language model", "the capital"]
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = [{"prompt": f"Tell me about {topics[i % len(topics)]}, item {i}." + " Please." * (i % 5)}
            for i in range(400)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def fitted(source, prompts_file: Path):
    menu = [source.shape(n) for n in MENU]
    return fit_router(source, prompts_file, menu, limit=14, reply_tokens=24)


def base_config(source) -> dict:
    from edgekit.models.weights import read_config

    return read_config(source.base_folder())


def test_features_come_only_from_weights_every_menu_shape_holds(source) -> None:
    menu = [source.shape(n) for n in MENU]
    assert shared_prefix(source.plan.layer_sets, menu) == [0, 1]
    elastic = source.load()
    ids = [5, 17, 42, 99, 7, 3]

    def features() -> np.ndarray:
        return FeatureExtractor.from_elastic(elastic, source.plan, base_config(source), menu).features(ids)

    before = features()
    with torch.no_grad():
        blocks = elastic.blocks
        g = elastic.geometry
        narrow_ffn, narrow_rows = g.dims(menu[0]).ffn, g.dims(menu[0]).num_heads * g.head_dim
        blocks[2].gate.add_(1.0)  # a layer the smallest menu shape does not run
        blocks[0].gate[narrow_ffn:].add_(1.0)  # FFN channels past the narrowest menu width
        blocks[1].q[narrow_rows:].add_(1.0)  # query heads past the narrowest menu head count
        assert np.array_equal(features(), before)
        blocks[1].gate[0].add_(1.0)  # a channel every menu shape runs
        assert not np.allclose(features(), before)
    assert before[-1] == pytest.approx(np.log(len(ids)))


def test_a_router_is_fitted_checked_on_held_out_folds_and_stored_with_its_hashes(source, fitted, tmp_path: Path):
    router, extractor, data = fitted
    n = len(data.prompts)
    assert 10 <= n <= 14 and data.loss.shape == (n, 3) and router.menu == MENU
    assert router.calibration.shape == (n, 3) and router.stats["prompts"] == n
    assert 0 <= router.stats["best_found"] <= 1 and router.stats["regret"] >= 0
    # the bigger shapes predict the full model's replies better on average: the losses say so
    assert data.loss[:, 2].mean() < data.loss[:, 0].mean()
    out = router_io.save(router, extractor, tmp_path / "router")
    again, extractor2 = router_io.load(out, identity(source))
    assert np.allclose(again.predict(data.features), router.predict(data.features))
    assert np.allclose(extractor2.features([5, 6, 7]), extractor.features([5, 6, 7]), atol=1e-2)  # stored in fp16
    other = {**identity(source), "smol_sha256": "f" * 64}
    with pytest.raises(IntegrityError, match="was fitted on checkpoint"):
        router_io.load(out, other)
    weights = out / router_io.WEIGHTS_FILE
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="router.safetensors does not match"):
        router_io.load(out)


def test_a_routed_reply_is_the_chosen_shapes_own_reply(source, fitted) -> None:
    from edgekit.engines.torch_engine import ElasticTorchSession

    router, extractor, data = fitted
    ms = [3.0, 4.0, 6.0]
    cal = policy.calibrate(router.calibration, np.array(ms), 4.5)
    routed = RoutedPolicy(router, extractor, ms, cal.lam)
    elastic, plan, config = source.load(), source.plan, base_config(source)
    live = ElasticTorchSession(elastic, plan, config, plan.full)

    def switch(name: str):
        if live.shape.name != name:
            live.reshape(plan.shape(name))
        return live

    session = RoutedSession(routed, switch)
    greedy = Sampling(max_new_tokens=10, min_new_tokens=10)
    seen = set()
    for ids in ([5, 17, 42], [9, 9, 30, 31, 2, 8, 77, 12, 40, 41, 3], [1, 2]):
        tokens = list(session.stream(ids, greedy))
        shape = session.last.shape
        seen.add(shape)
        alone = ElasticTorchSession(elastic, plan, config, plan.shape(shape))
        assert tokens == list(alone.stream(ids, greedy))
        assert session.last.router_ms > 0 and set(session.last.predicted) == set(MENU)
    assert seen <= set(MENU) and len(routed.history) == 3


def test_a_deployment_without_its_largest_menu_shape_opens_and_routes_to_what_it_holds(source, fitted) -> None:
    """An adaptive deployment leaves out a menu shape the policy never chose; the routed session must open
    on the shapes it holds (it opened the largest shape's session first and raised KeyError)."""
    from edgekit.engines.torch_engine import ElasticTorchSession

    router, extractor, _ = fitted
    held = MENU[:-1]
    ms = [3.0, 4.0, float("inf")]  # the largest shape is not in the deployment: never chosen
    routed = RoutedPolicy(router, extractor, ms, policy.calibrate(router.calibration, np.array([3.0, 4.0, 6.0]),
                                                                   3.5).lam)  # fmt: skip
    elastic, plan, config = source.load(), source.plan, base_config(source)
    sessions = {name: ElasticTorchSession(elastic, plan, config, plan.shape(name)) for name in held}
    session = RoutedSession.over(routed, sessions)
    assert session.context_length == sessions[held[-1]].context_length
    for ids in ([5, 17, 42], [9, 9, 30, 31, 2, 8], [1, 2]):
        list(session.stream(ids, Sampling(max_new_tokens=3)))
        assert session.last.shape in held
