"""A CPU schedule for the transformer's matrix products, which bound its speed on a CPU.

Every projection is y[t, n] = sum_k x[t, k] * W[n, k] with W stored row-major (the Hugging Face
layout), so each output reads one contiguous weight row. dlight's CPU GEMV rule vectorizes across
output rows instead, which turns every weight load into a strided gather (several times slower than
numpy here), and relax's CPU pipeline leaves prefill's products unscheduled. This rule:

- splits k into vector lanes and accumulates each lane separately (rfactor): the inner step is one
  contiguous vector load of x and of W and one vector multiply-add; the lanes are summed at the end;
- keeps ROWS_AT_ONCE rows' accumulators live at once, so the CPU overlaps independent multiply-adds
  instead of waiting on one chain (each add depends on the previous one: ~4x slower);
- parallelizes over blocks of output rows and runs every token of a prefill against a block while it
  is in cache, so a prompt reads the weights about once rather than once per token.

int4 prefill products dequantize each block of rows once into a float tile before running the prompt's tokens
against it (a decode step has one token: its product dequantizes in registers instead).
int4 products (tvm_int4) take the same schedule: a lane of 8 columns is one uint32 word of levels, so the inner
step loads one word, shifts each lane by its own 4*lane bits, and dequantizes in registers.

Tokens are not tiled as well: a prompt's length is symbolic, and the bounds check a token tile needs
sits in the innermost loop, which made it several times slower than no tile at all. Measured on the
default model's shapes (1 core, AVX2, quiet moments of a loaded machine): decode products at numpy's
speed (memory bound), a 64-token prefill product within ~1.5x of numpy/OpenBLAS.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import get_extent
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

LANES = 8  # float32 lanes of a 256-bit vector (AVX2); LLVM splits or merges them for other widths
ROWS = 16  # output rows per parallel task
ROWS_AT_ONCE = 4  # accumulators (vector registers) live in the inner loop; tvm_int4 interleaves its rows by as many


class MatmulNT(CPUScheduleRule):
    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        blocks = normalize_prim_func(sch)
        # an int4 prefill product dequantizes its weights in a block of its own first (tvm_int4.dequantize)
        prologue = blocks.pop(0) if blocks and len(blocks) > 1 and _is_dequantize(sch, blocks[0]) else None
        if not blocks or len(blocks) > 2 or (len(blocks) == 2 and not blocks[1].is_injective()):
            return None  # one product, optionally followed by an elementwise epilogue (a residual add)
        main = blocks[0]
        kinds = main.dom_kind()
        if len(kinds) < 2 or kinds[-1] != "R" or "R" in kinds[:-1] or len(sch.get(main.block_rv).reads) not in (2, 4):
            return None  # x and W; or x and W's 4-bit levels, scales and offsets (tvm_int4: dequantized in the lanes)
        *spatial, k = sch.get_loops(main.block_rv)
        depth, rows = get_extent(sch, k), get_extent(sch, spatial[-1])
        if not (isinstance(depth, int) and isinstance(rows, int)) or depth % LANES or rows < ROWS:
            return None
        _, lane = sch.split(k, [None, LANES])
        out_ndim = len(sch.get(main.block_rv).writes[0].region)
        partial = sch.rfactor(lane, factor_axis=out_ndim)  # partial[..., n, lane]: the last axis, contiguous
        *tokens, n, k_outer, lane = sch.get_loops(partial)  # decode has no token loop left
        row_block, row_outer, row = sch.split(n, [None, ROWS // ROWS_AT_ONCE, ROWS_AT_ONCE])
        sch.reorder(row_block, *tokens, row_outer, k_outer, row, lane)
        sch.unroll(row)
        sch.vectorize(lane)
        sch.parallel(row_block)
        sch.reverse_compute_at(main.block_rv, row_outer)  # sum the lanes while the tile is hot
        if len(blocks) == 2:
            sch.reverse_compute_at(blocks[1].block_rv, row_outer)
        sch.decompose_reduction(partial, k_outer)  # zero the accumulators once, outside the k loop
        if prologue is not None:
            # dequantize the row block once, before its tokens: every token then reads floats from cache
            sch.compute_at(prologue.block_rv, row_block)
            *_, col = sch.get_loops(prologue.block_rv)
            sch.vectorize(sch.split(col, [None, LANES])[1])
        return sch


def _is_dequantize(sch: s_tir.Schedule, block: object) -> bool:
    return "dequantize" in sch.get(block.block_rv).name_hint and block.is_injective()
