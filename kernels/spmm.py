"""CPU kernels for sparse weight x dense activation products: CSR and N:M packed weights.

All kernels compute ``Y = X @ W.T + bias`` for a sparse weight ``W`` of shape ``(N, K)`` and
dense activations ``X`` of shape ``(B, K)``; ``Y`` has shape ``(B, N)``.

Layout (why it is fast): ``X`` is first repacked by :func:`pack_batch_chunks` into
``xt`` of shape ``(n_chunks, K, chunk)``: for one chunk of ``chunk`` batch rows, column ``k`` of
``X`` becomes one contiguous row ``xt[c, k]``. Each nonzero ``W[n, k]`` then does one contiguous
axpy ``acc[:] += W[n, k] * xt[c, k, :]`` that LLVM vectorises, and a chunk is sized to stay in
the L2 cache while all output rows stream past it. Four nonzeros are folded into one pass over
``acc`` so that the accumulator is loaded and stored once per four nonzeros. Results of
``ROW_BLOCK`` output rows are gathered in a small tile and written to ``Y`` transposed, so that
every write to ``Y`` is a contiguous run of ``ROW_BLOCK`` floats.

Batch 1 (a sparse matrix-vector product) has its own kernels with four independent scalar
accumulators. The parallel variants split the work into ``(chunk, row range)`` tasks; the row
ranges come from :func:`balanced_row_splits` so that every task holds about the same number of
nonzeros.

These functions do no validation: Numba does no bounds checks, so the callers in
:mod:`prunescope.kernels.dispatch` validate every array first.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

ROW_BLOCK = 16  # output rows per tile: one tile row of Y is a 64-byte cache line
CHUNK_CACHE_BYTES = 1 << 20  # one (K, chunk) slab of X^T should fit in a core's L2 cache
MAX_CHUNK = 128

_JIT = dict(cache=True, nogil=True, fastmath={"contract"})


def batch_chunk_width(batch: int, in_features: int) -> int:
    """Batch rows per chunk of the packed ``X^T`` for a batch of ``batch`` rows of ``in_features``.

    Small batches (<= 16) form one chunk. Larger ones are split into equal chunks, each a
    multiple of 8 floats wide and at most ``CHUNK_CACHE_BYTES`` large (so it stays in L2).
    """
    if batch <= 16:
        return max(batch, 1)
    cap = CHUNK_CACHE_BYTES // (4 * max(in_features, 1))
    cap = min(MAX_CHUNK, max(16, cap - cap % 8))
    n_chunks = -(-batch // cap)
    width = -(-batch // n_chunks)
    return -(-width // 8) * 8


def balanced_row_splits(indptr: np.ndarray, n_parts: int) -> np.ndarray:
    """Split rows ``0..N`` into at most ``n_parts`` contiguous ranges of similar nonzero count.

    Returns the int64 boundaries ``s`` (``s[0] = 0``, ``s[-1] = N``, strictly increasing): range
    ``i`` is rows ``s[i]:s[i+1]``. A row is counted as one nonzero more than it holds, so that
    ranges of empty rows (which still write their output) are spread too.
    """
    n_rows = indptr.size - 1
    n_parts = max(1, min(int(n_parts), n_rows))
    work = indptr.astype(np.int64) + np.arange(n_rows + 1, dtype=np.int64)
    targets = np.linspace(0, work[-1], n_parts + 1)[1:-1]
    inner = np.searchsorted(work, targets, side="left")
    return np.unique(np.concatenate(([0], inner, [n_rows]))).astype(np.int64)


@numba.njit(**_JIT)
def pack_batch_chunks(x: np.ndarray, chunk: int) -> np.ndarray:
    """Repack ``x`` (B, K) into ``xt`` (ceil(B / chunk), K, chunk), zero-padding the last chunk."""
    batch, in_features = x.shape
    n_chunks = (batch + chunk - 1) // chunk
    xt = np.zeros((n_chunks, in_features, chunk), dtype=np.float32)
    for c in range(n_chunks):
        rows = min(chunk, batch - c * chunk)
        for k0 in range(0, in_features, 16):  # 16 x rows at a time: reads and writes stay in L1
            k1 = min(k0 + 16, in_features)
            for t in range(rows):
                x_row = x[c * chunk + t]
                for k in range(k0, k1):
                    xt[c, k, t] = x_row[k]
    return xt


@numba.njit(**_JIT)
def _accumulate_row(values, cols, xc, acc):
    """``acc[:] += sum_j values[j] * xc[cols[j], :]``, four nonzeros per pass over ``acc``."""
    width = acc.size
    count = values.size
    j = 0
    while j + 4 <= count:
        v0 = values[j]
        v1 = values[j + 1]
        v2 = values[j + 2]
        v3 = values[j + 3]
        x0 = xc[cols[j]]
        x1 = xc[cols[j + 1]]
        x2 = xc[cols[j + 2]]
        x3 = xc[cols[j + 3]]
        for t in range(width):
            acc[t] = acc[t] + v0 * x0[t] + v1 * x1[t] + v2 * x2[t] + v3 * x3[t]
        j += 4
    while j < count:
        v0 = values[j]
        x0 = xc[cols[j]]
        for t in range(width):
            acc[t] += v0 * x0[t]
        j += 1


@numba.njit(**_JIT)
def _dot_row(values, cols, x):
    """``sum_j values[j] * x[cols[j]]`` with four independent accumulators."""
    count = values.size
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    s3 = np.float32(0.0)
    j = 0
    while j + 4 <= count:
        s0 += values[j] * x[cols[j]]
        s1 += values[j + 1] * x[cols[j + 1]]
        s2 += values[j + 2] * x[cols[j + 2]]
        s3 += values[j + 3] * x[cols[j + 3]]
        j += 4
    while j < count:
        s0 += values[j] * x[cols[j]]
        j += 1
    return (s0 + s1) + (s2 + s3)


@numba.njit(**_JIT)
def _write_tile(tile, out, row0, row1, batch0):
    """Write ``tile[: row1 - row0, :]`` transposed into ``out[batch0 + t, row0:row1]``."""
    rows_in_chunk = min(tile.shape[1], out.shape[0] - batch0)
    for t in range(rows_in_chunk):
        out_row = out[batch0 + t]
        for r in range(row0, row1):
            out_row[r] = tile[r - row0, t]


@numba.njit(**_JIT)
def _csr_rows(data, indices, indptr, xc, bias, out, row0, row1, batch0, tile):
    """Output rows ``row0:row1`` of one batch chunk ``xc`` (K, chunk) of a CSR product."""
    for block0 in range(row0, row1, ROW_BLOCK):
        block1 = min(block0 + ROW_BLOCK, row1)
        for r in range(block0, block1):
            acc = tile[r - block0]
            acc[:] = bias[r]
            start = indptr[r]
            end = indptr[r + 1]
            _accumulate_row(data[start:end], indices[start:end], xc, acc)
        _write_tile(tile, out, block0, block1, batch0)


@numba.njit(**_JIT)
def csr_spmm_serial(data, indices, indptr, xt, bias, out):
    """``out (B, N) = X @ W.T + bias`` for CSR ``W`` and packed ``xt``; one thread."""
    n_rows = indptr.size - 1
    chunk = xt.shape[2]
    tile = np.empty((ROW_BLOCK, chunk), dtype=np.float32)
    for c in range(xt.shape[0]):
        _csr_rows(data, indices, indptr, xt[c], bias, out, 0, n_rows, c * chunk, tile)


@numba.njit(parallel=True, **_JIT)
def csr_spmm_parallel(data, indices, indptr, xt, bias, out, row_splits):
    """Parallel :func:`csr_spmm_serial`: one task per (batch chunk, row range of ``row_splits``)."""
    chunk = xt.shape[2]
    n_ranges = row_splits.size - 1
    for task in prange(xt.shape[0] * n_ranges):
        c = task // n_ranges
        part = task % n_ranges
        tile = np.empty((ROW_BLOCK, chunk), dtype=np.float32)
        _csr_rows(data, indices, indptr, xt[c], bias, out,
                  row_splits[part], row_splits[part + 1], c * chunk, tile)


@numba.njit(**_JIT)
def csr_spmv_serial(data, indices, indptr, x, bias, out):
    """``out (N,) = W @ x + bias`` for CSR ``W`` and a vector ``x`` (K,); one thread."""
    for r in range(indptr.size - 1):
        start = indptr[r]
        end = indptr[r + 1]
        out[r] = bias[r] + _dot_row(data[start:end], indices[start:end], x)


@numba.njit(parallel=True, **_JIT)
def csr_spmv_parallel(data, indices, indptr, x, bias, out, row_splits):
    """Parallel :func:`csr_spmv_serial` over the row ranges of ``row_splits``."""
    for part in prange(row_splits.size - 1):
        for r in range(row_splits[part], row_splits[part + 1]):
            start = indptr[r]
            end = indptr[r + 1]
            out[r] = bias[r] + _dot_row(data[start:end], indices[start:end], x)


@numba.njit(**_JIT)
def _nm_columns(group_offsets, n, m, cols):
    """Absolute input columns of one N:M row: entry ``j`` lies in group ``j // n``."""
    base = 0
    slot = 0
    for j in range(group_offsets.size):
        cols[j] = base + group_offsets[j]
        slot += 1
        if slot == n:
            slot = 0
            base += m


@numba.njit(**_JIT)
def _nm_rows(values, offsets, n, m, xc, bias, out, row0, row1, batch0, tile, cols):
    """Output rows ``row0:row1`` of one batch chunk ``xc`` of an N:M product."""
    for block0 in range(row0, row1, ROW_BLOCK):
        block1 = min(block0 + ROW_BLOCK, row1)
        for r in range(block0, block1):
            acc = tile[r - block0]
            acc[:] = bias[r]
            _nm_columns(offsets[r], n, m, cols)
            _accumulate_row(values[r], cols, xc, acc)
        _write_tile(tile, out, block0, block1, batch0)


@numba.njit(**_JIT)
def nm_spmm_serial(values, offsets, n, m, xt, bias, out):
    """``out (B, N) = X @ W.T + bias`` for N:M packed ``W`` (values, in-group offsets); one thread."""
    chunk = xt.shape[2]
    tile = np.empty((ROW_BLOCK, chunk), dtype=np.float32)
    cols = np.empty(values.shape[1], dtype=np.int32)
    for c in range(xt.shape[0]):
        _nm_rows(values, offsets, n, m, xt[c], bias, out, 0, values.shape[0], c * chunk, tile, cols)


@numba.njit(parallel=True, **_JIT)
def nm_spmm_parallel(values, offsets, n, m, xt, bias, out, row_splits):
    """Parallel :func:`nm_spmm_serial`: one task per (batch chunk, row range of ``row_splits``)."""
    chunk = xt.shape[2]
    n_ranges = row_splits.size - 1
    for task in prange(xt.shape[0] * n_ranges):
        c = task // n_ranges
        part = task % n_ranges
        tile = np.empty((ROW_BLOCK, chunk), dtype=np.float32)
        cols = np.empty(values.shape[1], dtype=np.int32)
        _nm_rows(values, offsets, n, m, xt[c], bias, out,
                 row_splits[part], row_splits[part + 1], c * chunk, tile, cols)


@numba.njit(**_JIT)
def nm_spmv_serial(values, offsets, n, m, x, bias, out):
    """``out (N,) = W @ x + bias`` for N:M packed ``W`` and a vector ``x``; one thread."""
    cols = np.empty(values.shape[1], dtype=np.int32)
    for r in range(values.shape[0]):
        _nm_columns(offsets[r], n, m, cols)
        out[r] = bias[r] + _dot_row(values[r], cols, x)


@numba.njit(parallel=True, **_JIT)
def nm_spmv_parallel(values, offsets, n, m, x, bias, out, row_splits):
    """Parallel :func:`nm_spmv_serial` over the row ranges of ``row_splits``."""
    for part in prange(row_splits.size - 1):
        cols = np.empty(values.shape[1], dtype=np.int32)
        for r in range(row_splits[part], row_splits[part + 1]):
            _nm_columns(offsets[r], n, m, cols)
            out[r] = bias[r] + _dot_row(values[r], cols, x)
