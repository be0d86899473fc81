"""GPTQ and round-to-nearest onto MatMulNBits' block grid (edgekit.quantize.gptq): pure maths on small matrices."""

from __future__ import annotations

import pytest
import torch

from edgekit.quantize.gptq import Quantized, block_grid, gptq, rtn


def correlated_inputs(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Inputs whose features are correlated and unevenly scaled, as a transformer's are (one distribution:
    the seed draws the samples)."""
    mix = torch.randn(k, k, generator=torch.Generator().manual_seed(1234)) / k**0.5 + torch.eye(k)
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) @ mix * torch.linspace(0.2, 3.0, k)


@pytest.mark.parametrize("symmetric", [False, True])
def test_round_to_nearest_stays_within_half_a_step_of_every_weight(symmetric: bool) -> None:
    w = torch.randn(24, 96, generator=torch.Generator().manual_seed(1))
    q = rtn(w, bits=4, block=32, symmetric=symmetric)
    assert q.levels.dtype == torch.uint8 and int(q.levels.max()) <= 15
    assert q.scales.shape == (24, 3) and q.zero_points.shape == (24, 3)
    step = q.scales.abs().repeat_interleave(32, dim=1)
    err = (q.dequantize() - w).abs()
    if symmetric:  # the largest magnitude maps to -8 exactly; the far side stops at +7, a step short of it
        assert torch.all(err <= step + 1e-6) and torch.all(q.zero_points == 8)
        inside = w.abs() < 7 * step
        assert torch.all(err[inside] <= step[inside] / 2 + 1e-6)
    else:
        assert torch.all(err <= step / 2 + 1e-6)


def test_asymmetric_grid_keeps_zero_exact_and_fits_a_one_sided_block() -> None:
    # a block of positive weights: the zero point sits at level 0 and the range is not wasted on negatives
    w = torch.cat([torch.linspace(0.1, 1.5, 32), torch.linspace(-2.0, 0.5, 32)]).reshape(1, 64)
    w[0, 40] = 0.0
    scales, zeros = block_grid(w, 4, 32, symmetric=False)
    assert int(zeros[0, 0]) == 0 and scales[0, 0] == pytest.approx(1.5 / 15)
    q = rtn(w, 4, 32)
    assert float(q.dequantize()[0, 40]) == 0.0


def test_gptq_without_correlations_is_round_to_nearest() -> None:
    """With an identity Hessian no column's error can be offset by another's: GPTQ must round exactly as RTN."""
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(2))
    plain = rtn(w, 4, 32)
    for act_order in (False, True):
        q = gptq(w, torch.eye(64), 4, 32, act_order=act_order, damp=0.0)
        assert torch.equal(q.levels, plain.levels) and torch.equal(q.scales, plain.scales)


def test_gptq_keeps_the_layer_output_closer_than_round_to_nearest() -> None:
    w = torch.randn(48, 128, generator=torch.Generator().manual_seed(3)) * 0.05
    calib, held_out = correlated_inputs(4096, 128, seed=4), correlated_inputs(1024, 128, seed=5)
    h = calib.T @ calib
    err_rtn = float((held_out @ (w - rtn(w, 4, 32).dequantize()).T).pow(2).mean())
    errs = {}
    for act_order in (False, True):
        q = gptq(w, h, 4, 32, act_order=act_order)
        errs[act_order] = float((held_out @ (w - q.dequantize()).T).pow(2).mean())
        # the grid is the static one: GPTQ only chooses levels on it
        scales, zeros = block_grid(w, 4, 32, symmetric=False)
        assert torch.equal(q.scales, scales) and torch.equal(q.zero_points, zeros)
    # on inputs it was not calibrated on; rounding the most active inputs first leaves them least error
    assert errs[False] < 0.9 * err_rtn and errs[True] < 0.6 * err_rtn, (errs, err_rtn)


def test_gptq_refuses_a_hessian_of_the_wrong_size_and_a_width_off_the_block() -> None:
    with pytest.raises(ValueError, match=r"\[64, 64\]"):
        gptq(torch.zeros(4, 64), torch.eye(32))
    with pytest.raises(ValueError, match="multiple of 32"):
        rtn(torch.zeros(4, 48))


def test_stacked_rows_split_back_exactly() -> None:
    g = torch.Generator().manual_seed(6)
    parts = [rtn(torch.randn(n, 64, generator=g), 4, 32) for n in (8, 4, 4)]
    stacked = Quantized.rows(parts)
    assert stacked.shape == (16, 64)
    assert torch.equal(stacked.slice_rows(8, 12).dequantize(), parts[1].dequantize())
    with pytest.raises(ValueError, match="same width"):
        Quantized.rows([parts[0], rtn(torch.randn(2, 32, generator=g), 4, 32)])
