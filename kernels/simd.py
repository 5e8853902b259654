"""The register-blocked inner loop of every CPU product, as a Numba intrinsic.

``row_fma_64(values, cols, xc, acc, lane0)``, ``row_fma_32`` and ``row_fma_16`` compute::

    acc[lane0 : lane0 + L] += sum_j values[j] * xc[cols[j], lane0 : lane0 + L]

for ``L = 64`` (four 16-float vectors, one accumulator each), ``L = 32`` (two vectors, two
partial sums over alternate nonzeros) and ``L = 16`` (one vector, four partial sums): at least
four independent FMA chains, to hide the FMA latency. The accumulators live in vector registers for the whole
loop over ``j`` and ``acc`` is read and written once. Written as plain Numba loops, LLVM keeps
the accumulator in memory and re-checks aliasing for every nonzero, which measured 2-3x slower
(docs/performance.md).

Numba's on-disk cache only watches the file of each cached function: after editing this module
(or ``spmm.py``, whose ``accumulate_lanes`` ``conv.py`` calls), delete ``kernels/__pycache__``
so that the kernels of the other modules are recompiled.

Requirements (checked by the callers, never here): ``values`` float32 and ``cols`` int32 are 1-D
contiguous of equal length with ``0 <= cols[j] < xc.shape[0]``; ``xc`` is 2-D float32 with
contiguous rows; ``acc`` is 1-D contiguous float32; ``lane0 + L <= min(xc.shape[1], acc.size)``.
"""

from __future__ import annotations

from typing import Any, Callable

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

LANES = 16  # floats per vector: one AVX-512 register (two AVX2 registers elsewhere)


def _make_row_fma(vectors: int, partial_sums: int) -> Callable[..., Any]:
    """An intrinsic accumulating ``vectors * LANES`` lanes with ``partial_sums`` chains each."""

    @intrinsic
    def row_fma(typingctx, values, cols, xc, acc, lane0):
        """Typing: the array layouts the kernels pass; codegen: the register-blocked loop."""
        expected = ((values, types.float32, 1), (cols, types.int32, 1), (xc, types.float32, 2),
                    (acc, types.float32, 1))
        for array, dtype, ndim in expected:
            if not (isinstance(array, types.Array) and array.dtype == dtype
                    and array.ndim == ndim and array.layout == "C"):
                return None  # typing fails: only the layouts the kernels pass are supported
        if not isinstance(lane0, types.Integer):
            return None
        signature = types.void(values, cols, xc, acc, lane0)

        def codegen(context, builder, sig, args):
            values_array = context.make_array(sig.args[0])(context, builder, args[0])
            cols_array = context.make_array(sig.args[1])(context, builder, args[1])
            xc_array = context.make_array(sig.args[2])(context, builder, args[2])
            acc_array = context.make_array(sig.args[3])(context, builder, args[3])
            first_lane = context.cast(builder, args[4], sig.args[4], types.intp)
            intp = context.get_value_type(types.intp)
            f32 = ir.FloatType()
            vector = ir.VectorType(f32, LANES)
            fmuladd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vector, [vector] * 3), "llvm.fmuladd.v16f32")
            count = cgutils.unpack_tuple(builder, values_array.shape, 1)[0]
            row_bytes = cgutils.unpack_tuple(builder, xc_array.strides, 2)[0]
            lanes_base = builder.bitcast(builder.gep(xc_array.data, [first_lane]),
                                         ir.IntType(8).as_pointer())
            zero = ir.Constant(vector, [0.0] * LANES)
            sums = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)]
                    for _ in range(partial_sums)]
            broadcast_mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)

            def accumulate(j: ir.Value, chain: int) -> None:
                value = builder.load(builder.gep(values_array.data, [j]))
                col = builder.sext(builder.load(builder.gep(cols_array.data, [j])), intp)
                row = builder.bitcast(builder.gep(lanes_base, [builder.mul(col, row_bytes)]),
                                      f32.as_pointer())
                splat = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vector, None), value,
                                           ir.Constant(ir.IntType(32), 0)),
                    ir.Constant(vector, None), broadcast_mask)
                for v in range(vectors):
                    pointer = builder.bitcast(builder.gep(row, [ir.Constant(intp, LANES * v)]),
                                              vector.as_pointer())
                    x = builder.load(pointer, align=4)
                    total = sums[chain][v]
                    builder.store(builder.call(fmuladd, [splat, x, builder.load(total)]), total)

            groups = builder.udiv(count, ir.Constant(intp, partial_sums))
            with cgutils.for_range(builder, groups) as loop:
                start = builder.mul(loop.index, ir.Constant(intp, partial_sums))
                for chain in range(partial_sums):
                    accumulate(builder.add(start, ir.Constant(intp, chain)), chain)
            done = builder.mul(groups, ir.Constant(intp, partial_sums))
            with cgutils.for_range(builder, builder.sub(count, done)) as loop:
                accumulate(builder.add(done, loop.index), 0)
            for v in range(vectors):
                total = builder.load(sums[0][v])
                for chain in range(1, partial_sums):
                    total = builder.fadd(total, builder.load(sums[chain][v]))
                lane = builder.add(first_lane, ir.Constant(intp, LANES * v))
                pointer = builder.bitcast(builder.gep(acc_array.data, [lane]), vector.as_pointer())
                builder.store(builder.fadd(builder.load(pointer, align=4), total), pointer,
                              align=4)
            return context.get_dummy_value()

        return signature, codegen

    return row_fma


row_fma_64 = _make_row_fma(vectors=4, partial_sums=1)
row_fma_32 = _make_row_fma(vectors=2, partial_sums=2)
row_fma_16 = _make_row_fma(vectors=1, partial_sums=4)
