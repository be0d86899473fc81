"""4-bit weights for the tvm runtime: MLC's q4f32_1/q4f16_1 layout, with the zero points GPTQ writes.

A weight W [out, in] is stored as three tensors, rows interleaved in fours (R = 4):

    qweight  [out / R, in / 8, R]      uint32  eight 4-bit levels per word: row n, column c in word
                                               [n / R, c / 8, n % R], bits 4*(c % 8) .. +3
    scales   [out / R, in / group, R]  float   one scale per row and group of `group` columns
    offsets  [out / R, in / group, R]  float   -zero_point * scale: W = level * scale + offset

so the matrix product dequantizes each weight where it multiplies it (one TE compute: level, multiply-add,
multiply-add) and a decode step reads 6 bits per weight (blocks of 32, float32 scales and offsets) instead of
32. The interleaving is for the CPU schedule (tvm_schedule), which keeps R rows' sums going at once: their words
then sit side by side and a decode step streams each tensor front to back, where row-major storage made it
walk R rows at once, 3R streams per core, more than the hardware prefetcher follows on rows of 1,536 columns
(the MLP's down projection ran at 0.12 against 0.07 ms with the weights out of cache; llama.cpp repacks its
CPU blocks for the same reason). The levels are the ones our GPTQ makes for ONNX Runtime's MatMulNBits
(edgekit.quantize): the same numbers in another layout, so TVM int4 and ORT int4 artifacts of one subnet
can be compared on equal weights.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

PER_WORD = 8  # 4-bit levels per uint32
R = 4  # rows interleaved: tvm_schedule.ROWS_AT_ONCE
GROUPS = (32, 64)  # columns per scale: both divide every width SmolLM2's shapes take (576, 192-wide head groups)


def _level(w: te.Tensor, row: Any, col: Any) -> Any:
    """The 4-bit level of column `col` of `row`, as a uint32."""
    shift = (col % PER_WORD * 4).astype("uint32")
    word = w[row // R, col // PER_WORD, row % R]
    return tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const(15, "uint32"))


def _weight(w: te.Tensor, scales: te.Tensor, offsets: te.Tensor, row: Any, col: Any, group: int) -> Any:
    g = (row // R, col // group, row % R)
    return _level(w, row, col).astype(scales.dtype) * scales[g] + offsets[g]


Blocks = tuple[tuple[int, int], ...]  # (first stored row, count) per block of rows a product computes


def _rows(w: te.Tensor, rows: Blocks | None) -> tuple[Any, int]:
    """(output row -> stored row, output rows) for the blocks of stored rows a product computes: all of them, or
    a draft's blocks of a wider matrix (gate's and up's first rows of a fused gate_up)."""
    if rows is None:
        return (lambda n: n), w.shape[0] * R

    def stored(n: Any) -> Any:
        # later blocks first: row n belongs to the last block whose output range starts at or before it
        start = sum(count for _, count in rows[:-1])
        out = n - start + rows[-1][0]
        for i in range(len(rows) - 2, -1, -1):
            start -= rows[i][1]
            out = tirx.Select(n < start + rows[i][1], n - start + rows[i][0], out)
        return out

    return stored, sum(count for _, count in rows)


def quant_matmul(
    x: te.Tensor, w: te.Tensor, scales: te.Tensor, offsets: te.Tensor, *, group: int, out_dtype: str,
    rows: Blocks | None = None,
) -> te.Tensor:  # fmt: skip
    """y[..., n] = sum_k x[..., k] * W[row(n), k], W dequantized inside the reduction (never written out).

    The reduction runs over x's columns, so a matrix stored wider than x reads only its first columns, and `rows`
    picks blocks of its rows (one product, so one scheduled kernel): how a draft reads its verifier's arrays
    (edgekit.speculative.slice)."""
    *lead, depth = x.shape
    row, count = _rows(w, rows)
    k = te.reduce_axis((0, depth), name="k")

    def cell(*idx: Any) -> Any:
        weight = _weight(w, scales, offsets, row(idx[-1]), k, group)
        return te.sum(x[(*idx[:-1], k)].astype(out_dtype) * weight.astype(out_dtype), axis=k)

    return te.compute((*lead, count), cell, name="quant_matmul")


def dequantize(
    w: te.Tensor, scales: te.Tensor, offsets: te.Tensor, *, group: int, rows: Blocks | None = None,
    columns: Any = None,
) -> te.Tensor:  # fmt: skip
    """W [out, in] as floats (its blocks of rows `rows` and first `columns` columns when given)."""
    row, count = _rows(w, rows)
    shape = (count, columns if columns is not None else w.shape[1] * PER_WORD)
    return te.compute(shape, lambda n, k: _weight(w, scales, offsets, row(n), k, group), name="dequantize")


def quant_matmul_prefill(
    x: te.Tensor, w: te.Tensor, scales: te.Tensor, offsets: te.Tensor, *, group: int, out_dtype: str,
    rows: Blocks | None = None,
) -> te.Tensor:  # fmt: skip
    """quant_matmul for many tokens: the weights dequantized in a stage of their own, which the schedule computes
    once per block of rows (tvm_schedule) instead of once per token and weight."""
    *lead, depth = x.shape
    weight = dequantize(w, scales, offsets, group=group, rows=rows, columns=depth)
    k = te.reduce_axis((0, depth), name="k")

    def cell(*idx: Any) -> Any:
        return te.sum(x[(*idx[:-1], k)].astype(out_dtype) * weight[idx[-1], k].astype(out_dtype), axis=k)

    return te.compute((*lead, weight.shape[0]), cell, name="quant_matmul")


def quant_take(w: te.Tensor, scales: te.Tensor, offsets: te.Tensor, ids: te.Tensor, *, group: int) -> te.Tensor:
    """The embedding rows of `ids`, dequantized: the tied LM head's int4 weights serve the lookup too."""
    hidden = w.shape[1] * PER_WORD

    def cell(*idx: Any) -> Any:
        return _weight(w, scales, offsets, ids[idx[:-1]], idx[-1], group)

    return te.compute((*ids.shape, hidden), cell, name="quant_take")


class _FourBit(nn.Module):
    """A [rows, columns] matrix's three tensors, laid out as the module's docstring says."""

    def __init__(self, rows: int, columns: int, group: int) -> None:
        self.group = group
        self.qweight = nn.Parameter((rows // R, columns // PER_WORD, R), "uint32")
        self.scales = nn.Parameter((rows // R, columns // group, R), "float32")
        self.offsets = nn.Parameter((rows // R, columns // group, R), "float32")

    def to(self, dtype: str | None = None) -> None:
        # the levels stay uint32 whatever the activations' dtype
        self.scales.to(dtype)
        self.offsets.to(dtype)


class QuantLinear(_FourBit):
    """nn.Linear without bias, its weight in 4 bits."""

    def __init__(self, in_features: int, out_features: int, group: int, out_dtype: str | None = None) -> None:
        super().__init__(out_features, in_features, group)
        self.out_dtype = out_dtype

    def forward(self, x: Tensor) -> Tensor:
        return matmul(x, self, self.out_dtype or x.dtype)


class QuantEmbedding(_FourBit):
    """nn.Embedding (num rows of dim), its table in 4 bits (tied, the LM head's matrix)."""

    def forward(self, ids: Tensor) -> Tensor:
        fn = functools.partial(quant_take, group=self.group)
        return op.tensor_expr_op(fn, "quant_take", args=[self.qweight, self.scales, self.offsets, ids])


def matmul(x: Tensor, weights: _FourBit, out_dtype: str, rows: Blocks | None = None) -> Tensor:
    """x times the transpose of a 4-bit matrix (a linear layer's, or the tied embedding as the LM head): one
    token dequantizes in the product's registers, a prompt dequantizes each block of rows once. `rows`: only
    those (first, count) blocks of the matrix's rows; x may be narrower than the matrix (its first columns)."""
    one_token = all(isinstance(d, int) and d == 1 for d in x.shape[:-1])
    fn = functools.partial(quant_matmul if one_token else quant_matmul_prefill, group=weights.group,
                           out_dtype=out_dtype, rows=rows)  # fmt: skip
    return op.tensor_expr_op(fn, "quant_matmul", args=[x, weights.qweight, weights.scales, weights.offsets])


def pack(levels: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """(qweight, scales, offsets) of one matrix from its levels [out, in], scales and zero points [out, groups]."""
    levels = np.asarray(levels, dtype=np.uint32)
    if levels.shape[0] % R or levels.shape[1] % PER_WORD or levels.max(initial=0) > 15:
        raise ValueError(f"4-bit levels in a multiple of {R} rows of a multiple of {PER_WORD} columns are needed")
    words = np.zeros((levels.shape[0], levels.shape[1] // PER_WORD), dtype=np.uint32)
    for j in range(PER_WORD):
        words |= levels[:, j::PER_WORD] << np.uint32(4 * j)
    scales = np.asarray(scales, dtype=np.float32)
    offsets = -np.asarray(zero_points, dtype=np.float32) * scales
    return {"qweight": interleave(words), "scales": interleave(scales.astype(dtype)),
            "offsets": interleave(offsets.astype(dtype))}  # fmt: skip


def interleave(rows: np.ndarray) -> np.ndarray:
    """[out, m] -> [out / R, m, R]: R consecutive rows side by side."""
    return np.ascontiguousarray(rows.reshape(rows.shape[0] // R, R, rows.shape[1]).transpose(0, 2, 1))


def deinterleave(blocks: np.ndarray) -> np.ndarray:
    return blocks.transpose(0, 2, 1).reshape(blocks.shape[0] * R, blocks.shape[1])


def unpack(words: np.ndarray) -> np.ndarray:
    """The levels [out, in] back from qweight: for checks."""
    words = deinterleave(words)
    shifts = np.arange(PER_WORD, dtype=np.uint32) * 4
    return ((words[:, :, None] >> shifts) & 15).reshape(words.shape[0], -1).astype(np.uint8)
