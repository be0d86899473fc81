"""Self-speculative decoding (edgekit.speculative): the acceptance rule, and replies equal to the verifier's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgekit.engines import Sampling
from edgekit.errors import UsageError
from edgekit.speculative import SpeculativeSession, elastic_speculative, verify_greedy, verify_sampled


def test_greedy_keeps_the_prefix_the_verifier_would_pick_and_then_its_own_token() -> None:
    logits = torch.full((4, 6), -1.0)
    for row, best in enumerate([2, 5, 1, 3]):
        logits[row, best] = 1.0
    assert verify_greedy([2, 5, 1], logits).tokens([2, 5, 1]) == [2, 5, 1, 3]  # all kept, plus the bonus
    assert verify_greedy([2, 4, 1], logits).tokens([2, 4, 1]) == [2, 5]  # the second is wrong: corrected
    assert verify_greedy([0, 5, 1], logits).accepted == 0
    assert verify_greedy([], logits[:1]).tokens([]) == [2]  # no draft: plain decoding


@pytest.mark.parametrize("k", [1, 3])
def test_sampled_output_is_distributed_as_the_verifier_whatever_the_draft(k: int) -> None:
    """A 4-token vocabulary whose distributions do not depend on history: the first token out of a round must
    be distributed as the verifier's p (not the draft's q), and when the whole draft is kept the bonus token
    as p at the next position."""
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]])
    q = torch.tensor([[0.1, 0.1, 0.4, 0.4], [0.4, 0.3, 0.2, 0.1], [0.9, 0.05, 0.03, 0.02]])
    g = torch.Generator().manual_seed(0)
    n = 20000
    first = torch.zeros(4)
    bonus, bonus_n, kept = torch.zeros(4), 0, 0
    for _ in range(n):
        draft = [int(torch.multinomial(q[i], 1, generator=g)) for i in range(k)]
        verdict = verify_sampled(draft, q[:k], p[: k + 1], g)
        out = verdict.tokens(draft)
        first[out[0]] += 1
        kept += verdict.accepted
        if verdict.accepted == k:
            bonus[verdict.extra] += 1
            bonus_n += 1
    assert torch.allclose(first / n, p[0], atol=0.015)
    if k == 1:
        assert 0.37 < kept / n < 0.43  # the chance of keeping a draft token: sum(min(p, q)) = 0.4 here
        assert torch.allclose(bonus / bonus_n, p[1], atol=0.03)


def test_a_draft_equal_to_the_verifier_is_always_kept() -> None:
    p = torch.tensor([[0.6, 0.2, 0.1, 0.1]] * 5)
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        draft = [int(torch.multinomial(p[0], 1, generator=g)) for _ in range(4)]
        assert verify_sampled(draft, p[:4], p, g).accepted == 4


@pytest.fixture(scope="module")
def elastic_session(tiny_plan: Path):
    from edgekit.elastic.source import Source
    from edgekit.engines.torch_engine import ElasticTorchSession
    from edgekit.models.weights import read_config

    source = Source.resolve(plan=str(tiny_plan))
    return ElasticTorchSession(source.load(), source.plan, read_config(source.base_folder()), source.plan.full)


PROMPTS = [[5], [5, 17, 42], [9, 9, 30, 31, 2, 8, 77, 12, 40, 41, 3]]


@pytest.mark.parametrize(("draft", "k"), [("d3-f50-h2", 1), ("d3-f50-h2", 4), ("d4-f75-h3", 3), ("d5-f100-h3", 8)])
def test_speculative_greedy_reply_is_the_verifiers_token_for_token(elastic_session, draft: str, k: int) -> None:
    plan = elastic_session.plan
    spec = elastic_speculative(elastic_session, plan.shape(draft), k)
    greedy = Sampling(max_new_tokens=23, min_new_tokens=23)
    for ids in PROMPTS:
        alone = list(elastic_session.stream(ids, greedy))
        assert list(spec.stream(ids, greedy)) == alone and len(alone) == 23
    s = spec.stats
    assert s.tokens == 23 * len(PROMPTS) and 0 <= s.accepted <= s.drafted and s.rounds < s.tokens + len(PROMPTS)
    # every pass makes its kept draft tokens plus one of its own
    assert s.tokens == s.accepted + s.rounds


def test_a_reply_ends_where_the_verifiers_ends(elastic_session) -> None:
    plan = elastic_session.plan
    spec = elastic_speculative(elastic_session, plan.shape("d4-f75-h3"), 3)
    for limit in (1, 2, 7):
        sampling = Sampling(max_new_tokens=limit)
        assert list(spec.stream([5, 17, 42], sampling)) == list(elastic_session.stream([5, 17, 42], sampling))
    eos = next(iter(elastic_session.eos_ids))
    # an end of turn the draft proposes is kept only where the verifier picks it too
    tokens = list(spec.stream([eos, 3, 4], Sampling(max_new_tokens=40)))
    assert tokens == list(elastic_session.stream([eos, 3, 4], Sampling(max_new_tokens=40)))


def test_sampled_speculation_with_the_verifiers_own_model_as_draft_keeps_everything(elastic_session) -> None:
    spec = SpeculativeSession(elastic_session, elastic_session.model, 4, "self")
    tokens = list(spec.stream([5, 17, 42], Sampling(temperature=0.8, top_p=0.95, max_new_tokens=30, min_new_tokens=30,
                                                     seed=3)))  # fmt: skip
    assert len(tokens) == 30 and spec.stats.acceptance > 0.97
    again = SpeculativeSession(elastic_session, elastic_session.model, 4, "self")
    assert list(again.stream([5, 17, 42], Sampling(temperature=0.8, top_p=0.95, max_new_tokens=30, min_new_tokens=30,
                                                    seed=3))) == tokens  # a seed replays the reply  # fmt: skip


def test_refusals(elastic_session) -> None:
    plan = elastic_session.plan
    with pytest.raises(UsageError, match="the verifier's own shape"):
        elastic_speculative(elastic_session, plan.full, 4)
    small = elastic_speculative(elastic_session, plan.shape("d3-f50-h2"), 2)
    elastic_session.reshape(plan.shape("d4-f75-h3"))
    try:
        with pytest.raises(UsageError, match="larger than the verifier"):
            elastic_speculative(elastic_session, plan.shape("d5-f50-h2"), 2)
    finally:
        elastic_session.reshape(plan.full)
    for k in (0, 17):
        with pytest.raises(UsageError, match="the draft length k must be 1 to"):
            SpeculativeSession(elastic_session, small.draft_model, k)
    with pytest.raises(UsageError, match="outside|not a shape|plan"):
        elastic_speculative(elastic_session, type(plan.full)(2, 50, 2), 2)


def test_chat_with_a_draft_gives_the_shapes_own_reply_and_says_how_much_was_kept(tiny_plan: Path, cli) -> None:
    import json

    args = ["chat", "--plan", str(tiny_plan), "--shape", "d6-f100-h3", "--prompt", "hello there", "--max-new-tokens",
            "12", "--json"]  # fmt: skip
    plain = cli(*args)
    drafted = cli(*args, "--draft", "d3-f50-h2", "--draft-k", "3")
    assert plain.code == 0 and drafted.code == 0, drafted.err
    a, b = json.loads(plain.out), json.loads(drafted.out)
    assert a["reply"] == b["reply"] and b["draft"] == "d3-f50-h2 k=3" and a["draft"] is None
    spec = b["speculation"]
    assert spec["tokens"] == b["stats"]["new_tokens"] and spec["accepted"] <= spec["drafted"]
    assert spec["tokens"] == spec["accepted"] + spec["rounds"]
