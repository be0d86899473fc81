"""The routing policy (edgekit.routing.policy): pure functions on predicted losses and latencies."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.routing.policy import calibrate, choose, mean_latency


def predictions(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four shapes, slower ones better on average, prompts of varied difficulty and varied gaps."""
    rng = np.random.default_rng(seed)
    ms = np.array([4.0, 6.0, 8.0, 10.0])
    hard = rng.gamma(2.0, 0.5, size=(n, 1))
    pred = 1.0 + hard * np.array([[1.2, 0.7, 0.35, 0.0]]) + rng.normal(0, 0.05, size=(n, 4))
    return pred, ms


@pytest.mark.parametrize("budget", [4.5, 5.0, 6.3, 7.7, 9.2])
def test_the_calibrated_mean_latency_lands_on_the_budget(budget: float) -> None:
    pred, ms = predictions()
    cal = calibrate(pred, ms, budget)
    assert cal.mean_ms <= budget + 1e-9
    # one prompt moved up one shape is the finest step the mean can take: it lands within that of the budget
    assert budget - cal.mean_ms <= (ms.max() - ms.min()) / len(pred)
    assert cal.mean_ms == pytest.approx(mean_latency(choose(pred, ms, cal.lam), ms))
    assert sum(cal.shares) == pytest.approx(1.0) and len(cal.shares) == 4


def test_easy_prompts_go_to_small_shapes_and_hard_ones_to_large() -> None:
    pred, ms = predictions()
    picked = choose(pred, ms, calibrate(pred, ms, 7.0).lam)
    gap = pred[:, 0] - pred[:, 3]  # what the smallest shape gives up on each prompt
    assert gap[picked == 0].mean() < gap[picked == 3].mean()


def test_a_budget_past_the_slowest_takes_the_best_everywhere_and_one_below_the_fastest_is_refused() -> None:
    pred, ms = predictions()
    cal = calibrate(pred, ms, 50.0)
    assert cal.lam == 0.0 and np.array_equal(choose(pred, ms, 0.0), pred.argmin(1))
    with pytest.raises(ValueError, match="^4$"):
        calibrate(pred, ms, 3.0)


def test_the_floor_keeps_each_prompt_near_its_best_predicted_shape() -> None:
    pred, ms = predictions()
    floored = choose(pred, ms, 1e9, floor=0.5)
    assert np.all(pred[np.arange(len(pred)), floored] <= pred.min(1) + 0.5 + 1e-12)
    assert mean_latency(floored, ms) > mean_latency(choose(pred, ms, 1e9), ms)
    # with a floor the lowest reachable mean is higher, and a budget under it is refused
    with pytest.raises(ValueError):
        calibrate(pred, ms, 4.0, floor=0.5)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1e9])
def test_a_shape_the_deployment_left_out_is_never_chosen(lam: float) -> None:
    # an adaptive deployment holds only the shapes its policy used on the router's prompts; the others carry an
    # infinite latency, and no prompt may reach them, not even at lambda 0 (where 0 * inf would be NaN)
    pred, ms = predictions()
    ms = ms.copy()
    ms[0] = np.inf
    picked = choose(pred, ms, lam)
    assert not np.any(picked == 0)
    assert np.all(np.isfinite(pred[np.arange(len(pred)), picked]))
