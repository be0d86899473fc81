"""edgekit.deployment.choose: the frontier, and which shape to try after a measurement (pure functions)."""

from __future__ import annotations

from edgekit.deployment.budget import parse_budget
from edgekit.deployment.choose import STEP_UP_MARGIN, Candidate, next_candidate, pareto, step_up_candidate


def _rows(*spec: tuple[str, float, float]) -> list[Candidate]:
    """(shape, predicted ms/token, ppl), given best first as deploy ranks them."""
    return [Candidate(name, 0, ms, 10.0, 100.0, ppl, True) for name, ms, ppl in spec]


def test_the_frontier_keeps_each_shape_faster_than_every_better_one():
    rows = _rows(("a", 9.0, 20), ("b", 10.0, 25), ("c", 7.0, 30), ("d", 7.5, 31), ("e", 3.0, 90), ("f", 3.0, 95))
    assert [c.shape for c in pareto(rows)] == ["a", "c", "e"]


def test_step_up_takes_the_best_shape_that_fits_at_the_measured_speed():
    budget = parse_budget("10ms").resolve(20.0)
    rows = _rows(("full", 16.0, 20), ("big", 12.0, 25), ("mid", 9.0, 30), ("small", 6.0, 40))
    # "small" measured 3 ms against 6 predicted: at that speed "full" takes 8 ms, within 0.95 x the budget
    assert step_up_candidate(rows, rows[3], set(), budget, 0.5).shape == "full"
    assert step_up_candidate(rows, rows[3], {"full"}, budget, 0.5).shape == "big"
    # at 0.7 x: full 11.2 ms and big 8.4 ms (under 9.5), so big
    assert step_up_candidate(rows, rows[3], set(), budget, 0.7).shape == "big"
    # nothing above the current one fits with the margin: stay
    assert step_up_candidate(rows, rows[2], set(), budget, 0.99) is None
    assert step_up_candidate(rows, rows[0], set(), budget, 0.1) is None  # nothing ranks above the best
    # the margin: "big" exactly at the budget is not enough ("mid" is taken), at 0.95 of it it is
    assert step_up_candidate(rows, rows[3], set(), budget, 10.0 / 12.0).shape == "mid"
    edge = STEP_UP_MARGIN * 10.0 / 12.0
    assert step_up_candidate(rows, rows[3], set(), budget, edge).shape == "big"


def test_step_up_keeps_the_other_budget_terms():
    budget = parse_budget("10ms,mem<150MB").resolve(20.0)
    rows = _rows(("big", 12.0, 25), ("small", 6.0, 40))
    rows[0].memory_mb = 200.0
    assert step_up_candidate(rows, rows[1], set(), budget, 0.5) is None


def test_step_down_takes_the_best_that_fits_at_the_slowdown():
    budget = parse_budget("10ms").resolve(20.0)
    rows = _rows(("big", 9.5, 25), ("mid", 7.0, 30), ("small", 4.0, 40))
    assert next_candidate(rows, set(), budget, 1.0).shape == "big"
    assert next_candidate(rows, {"big"}, budget, 1.3).shape == "mid"
    assert next_candidate(rows, {"big"}, budget, 2.0).shape == "small"
    assert next_candidate(rows, {"big", "mid"}, budget, 5.0).shape == "small"  # the fastest left: it may fit


def test_quality_ratio_divides_perplexities_inverts_accuracies_and_names_the_cheapest_clear_budget():
    from edgekit.deployment.choose import below_floor, quality_ratio
    from edgekit.elastic.ranking import Ranking

    ppl = Ranking("predictor", "chat_ppl", {"full": 10.0, "mid": 18.0, "small": 31.0, "tiny": 50.0}, "")
    assert quality_ratio(ppl, "small", "full") == 3.1 and quality_ratio(ppl, "full", "full") == 1.0
    acc = Ranking("accuracy-table", "acc_norm", {"full": 0.6, "small": 0.3}, "")
    assert quality_ratio(acc, "small", "full") == 2.0
    assert quality_ratio(Ranking("params", "params", {"full": 9.0, "small": 1.0}, ""), "small", "full") is None
    rows = _rows(("full", 20.0, 10.0), ("mid", 12.0, 18.0), ("small", 8.0, 31.0), ("tiny", 5.0, 50.0))
    assert below_floor(ppl, rows, "mid", "full", 2.0, 20.0) is None
    why = below_floor(ppl, rows, "small", "full", 2.0, 20.0)
    assert "3.10x the full model's chat_ppl" in why and "at most 2x" in why
    assert "--budget 12ms (60% of the full model), for mid" in why
    assert "for full" in below_floor(ppl, rows, "tiny", "full", 1.0, 20.0)
    # after a step down: shapes measured 1.25x slower than predicted, the full model measured at 22 ms; the
    # budget named is what mid needs here (12 x 1.25 = 15 ms, 68.2 % of 22, named rounded up so that giving it
    # back admits mid), never one the user already gave
    why = below_floor(ppl, rows, "small", "full", 2.0, 22.0, slowdown=1.25, missed=["mid"])
    assert "measured here, mid missed the budget" in why
    assert "--budget 15ms (69% of the full model as measured here), for mid" in why
    # held on another metric (a domain checkpoint's chat_ppl): mid is fine on the ranking's but 2.5x worse on
    # the one held, so a floor of 2 refuses it, and the cheapest budget named clears the one held (small: 1.5x)
    chat = Ranking("accuracy-table", "chat_ppl", {"full": 2.0, "mid": 5.0, "small": 3.0, "tiny": 6.0}, "")
    assert below_floor([chat], rows, "mid", "full", 2.0, 20.0) == (
        "mid is expected at 2.50x the full model's chat_ppl, below the quality floor (at most 2x); the cheapest "
        "budget that clears it: --budget 8ms (40% of the full model), for small"
    )
    assert below_floor([chat], rows, "small", "full", 2.0, 20.0) is None  # 3.1x on the ranking, 1.5x held
    assert "--budget 20ms (100% of the full model), for full" in below_floor([chat], rows, "mid", "full", 1.2, 20.0)
    both = below_floor([ppl, chat], rows, "small", "full", 1.2, 20.0)
    assert "3.10x the full model's chat_ppl and 1.50x the full model's chat_ppl" in both
