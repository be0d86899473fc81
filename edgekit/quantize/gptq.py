"""Block-wise weight quantization: round-to-nearest and GPTQ (Frantar et al., 2023) onto the same grid.

The grid is the one ONNX Runtime's MatMulNBits runs: for each output row, blocks of `block` consecutive
input columns share a scale and an integer zero point, and a weight is `(level - zero_point) * scale`
with `level` in 0..2**bits-1. Asymmetric grids (a zero point per block) are the default: on SmolLM2-135M
they keep 1.06x of the fp32 chat perplexity against 1.11x for symmetric ones (docs/runtimes.md).

GPTQ rounds one input column at a time and pushes its rounding error onto the columns not yet rounded,
weighted by the inverse Hessian of the layer's inputs (H = X^T X over calibration tokens), so the layer's
*output* stays close rather than each weight. Columns go in order of decreasing H diagonal (act order)
with the block grids fixed from the unrounded weights first ("static groups"), which keeps every block's
scale and zero point valid whatever order its columns are rounded in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LAZY_COLUMNS = 128  # columns rounded between two full error updates (the paper's lazy batch)


@dataclass
class Quantized:
    """A weight matrix [N, K] on a block grid: what MatMulNBits stores, before bit packing."""

    levels: torch.Tensor  # [N, K] uint8, 0..2**bits-1
    scales: torch.Tensor  # [N, K // block] float32
    zero_points: torch.Tensor  # [N, K // block] uint8
    bits: int
    block: int

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.levels.shape[0]), int(self.levels.shape[1]))

    def dequantize(self) -> torch.Tensor:
        scales = self.scales.repeat_interleave(self.block, dim=1)
        zeros = self.zero_points.float().repeat_interleave(self.block, dim=1)
        return (self.levels.float() - zeros) * scales

    def slice_rows(self, start: int, end: int) -> Quantized:
        return Quantized(self.levels[start:end], self.scales[start:end], self.zero_points[start:end], self.bits,
                         self.block)  # fmt: skip

    @staticmethod
    def rows(parts: list[Quantized]) -> Quantized:
        """Several matrices stacked by rows (q, k and v into one packed projection): exact, since every
        block lies within one row."""
        first = parts[0]
        if any(p.bits != first.bits or p.block != first.block or p.shape[1] != first.shape[1] for p in parts):
            raise ValueError("only matrices with the same width, bits and block stack by rows")
        return Quantized(torch.cat([p.levels for p in parts]), torch.cat([p.scales for p in parts]),
                         torch.cat([p.zero_points for p in parts]), first.bits, first.block)  # fmt: skip


def check_shape(weight: torch.Tensor, block: int) -> None:
    if weight.dim() != 2 or weight.shape[1] % block:
        raise ValueError(f"a [N, K] weight with K a multiple of {block} is needed, not {list(weight.shape)}")


def block_grid(weight: torch.Tensor, bits: int, block: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(scales, zero points) per block [N, K // block] from each block's range. Asymmetric: the range is
    [min, max] stretched to include 0 (so zero stays exact); symmetric: the largest magnitude maps to the
    lowest level and the zero point is the middle level, as ONNX Runtime's own quantizer does."""
    check_shape(weight, block)
    top = 2**bits - 1
    blocks = weight.float().reshape(weight.shape[0], -1, block)
    if symmetric:
        idx = blocks.abs().argmax(-1, keepdim=True)
        peak = blocks.gather(-1, idx).squeeze(-1)
        scales = peak / -(2 ** (bits - 1))
        scales = torch.where(scales == 0, torch.ones_like(scales), scales)
        zeros = torch.full_like(scales, 2 ** (bits - 1))
    else:
        low = blocks.amin(-1).clamp(max=0)
        high = blocks.amax(-1).clamp(min=0)
        scales = (high - low) / top
        scales = torch.where(scales == 0, torch.ones_like(scales), scales)
        zeros = (-low / scales).round().clamp(0, top)
    return scales, zeros.to(torch.uint8)


def round_to_grid(column: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """The levels nearest to `column` on the grid (scale, zero), all three [N] or broadcastable."""
    return (column / scale + zero.float()).round().clamp(0, 2**bits - 1)


def rtn(weight: torch.Tensor, bits: int = 4, block: int = 32, symmetric: bool = False) -> Quantized:
    """Round to nearest on each block's own grid: no calibration, the baseline GPTQ improves on."""
    scales, zeros = block_grid(weight, bits, block, symmetric)
    s = scales.repeat_interleave(block, dim=1)
    z = zeros.repeat_interleave(block, dim=1)
    levels = round_to_grid(weight.float(), s, z, bits)
    return Quantized(levels.to(torch.uint8), scales.float(), zeros, bits, block)


def gptq(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int = 4,
    block: int = 32,
    symmetric: bool = False,
    act_order: bool = True,
    damp: float = 0.01,
) -> Quantized:
    """GPTQ onto static block grids. `hessian` is X^T X of the layer's inputs [K, K] (any positive scale)."""
    check_shape(weight, block)
    n_in = weight.shape[1]
    if hessian.shape != (n_in, n_in):
        raise ValueError(f"the Hessian of a [N, {n_in}] weight is [{n_in}, {n_in}], not {list(hessian.shape)}")
    w = weight.detach().float().clone()
    h = hessian.detach().double().clone()
    dead = torch.diag(h) == 0  # inputs never active in calibration: their weights cannot matter there
    h[dead, dead] = 1
    scales, zeros = block_grid(w, bits, block, symmetric)
    col_scale = scales.repeat_interleave(block, dim=1)
    col_zero = zeros.repeat_interleave(block, dim=1)
    order = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(n_in)
    w, h = w[:, order], h[order][:, order]
    col_scale, col_zero = col_scale[:, order], col_zero[:, order]
    h += damp * torch.mean(torch.diag(h)) * torch.eye(n_in, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    levels = torch.zeros_like(w)
    for start in range(0, n_in, LAZY_COLUMNS):
        end = min(start + LAZY_COLUMNS, n_in)
        chunk = w[:, start:end].clone()
        errors = torch.zeros_like(chunk)
        hi = hinv[start:end, start:end]
        for i in range(end - start):
            col = start + i
            s, z = col_scale[:, col], col_zero[:, col]
            level = round_to_grid(chunk[:, i], s, z, bits)
            levels[:, col] = level
            err = (chunk[:, i] - (level - z.float()) * s) / hi[i, i]
            chunk[:, i:] -= err.unsqueeze(1) * hi[i, i:].unsqueeze(0)
            errors[:, i] = err
        w[:, end:] -= errors @ hinv[start:end, end:]
    out = torch.empty_like(levels)
    out[:, order] = levels
    return Quantized(out.to(torch.uint8), scales.float(), zeros, bits, block)
