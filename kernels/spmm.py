"""CPU kernels for sparse weight x dense activation products: CSR and N:M packed weights.

All kernels compute ``Y = X @ W.T + bias`` for a sparse weight ``W`` of shape ``(N, K)`` and
dense activations ``X`` of shape ``(B, K)``; ``Y`` has shape ``(B, N)``.

Layout (why it is fast):

* ``X`` is repacked by :func:`pack_batch_chunks` into ``xt`` of shape ``(n_chunks, K, chunk)``,
  ``chunk`` a multiple of 16 (zero padded): for one chunk of batch rows, column ``k`` of ``X``
  becomes one contiguous row ``xt[c, k]``. A nonzero ``W[n, k]`` then is one vector FMA per 16
  lanes, ``acc[:] += W[n, k] * xt[c, k, :]``, with ``acc`` held in registers over the whole row
  (:mod:`prunescope.kernels.simd`).
* The columns are cut into panels of ``panel_cols`` so that a ``(panel_cols, chunk)`` slab of
  ``xt`` (``PANEL_BYTES``) stays in the L2 cache while ``ROW_BLOCK`` output rows stream past it;
  a CSR row's nonzeros per panel come from :func:`csr_panel_bounds` (N:M rows have a fixed
  number of entries per panel). The accumulators of a block are then written to ``Y``
  transposed, a contiguous run of output features per batch row.

Batch 1 (a sparse matrix-vector product) has its own kernels: a dot product per row that LLVM
vectorises with gathers. The parallel variants split the work into ``(chunk, row range)`` tasks; the row
ranges come from :func:`balanced_row_splits` so that every task holds about the same number of
nonzeros.

These functions do no validation: Numba does no bounds checks, so the callers in
:mod:`prunescope.kernels.dispatch` validate every array first.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from prunescope.kernels.simd import LANES, row_fma_16, row_fma_32, row_fma_64

ROW_BLOCK = 512  # output rows whose accumulators (ROW_BLOCK, chunk) are kept per panel pass
MAX_CHUNK = 64  # batch rows per chunk (measured best among 32, 64, 128)
PANEL_BYTES = 1 << 19  # one (panel_cols, chunk) slab of X^T stays in a core's L2 cache

_JIT = dict(cache=True, nogil=True, fastmath={"contract"})


def batch_chunk_width(batch: int) -> int:
    """Batch rows per chunk of the packed ``X^T``: equal chunks of at most ``MAX_CHUNK``,
    rounded up to a multiple of 16 lanes."""
    n_chunks = max(1, -(-batch // MAX_CHUNK))
    width = -(-max(batch, 1) // n_chunks)
    return -(-width // LANES) * LANES


def panel_columns(in_features: int, chunk: int, group: int = 1) -> int:
    """Columns per panel for a chunk width: ``PANEL_BYTES`` of ``X^T``, a multiple of ``group``."""
    cols = max(group, PANEL_BYTES // (4 * chunk))
    cols -= cols % group
    return max(group, min(cols, -(-in_features // group) * group))


def csr_panel_bounds(indptr: np.ndarray, indices: np.ndarray, in_features: int,
                     panel_cols: int) -> np.ndarray:
    """Where each CSR row's nonzeros cross panel boundaries: int32 ``(rows, n_panels + 1)``.

    Row ``r``'s nonzeros in columns ``[q * panel_cols, (q + 1) * panel_cols)`` are
    ``bounds[r, q]:bounds[r, q + 1]`` (absolute positions in ``data``). Column indices must be
    sorted within each row.
    """
    rows = indptr.size - 1
    n_panels = max(1, -(-in_features // panel_cols))
    row_of = np.repeat(np.arange(rows), np.diff(indptr))
    counts = np.bincount(row_of * n_panels + indices // panel_cols, minlength=rows * n_panels)
    bounds = np.empty((rows, n_panels + 1), dtype=np.int64)
    bounds[:, 0] = indptr[:-1]
    np.cumsum(counts.reshape(rows, n_panels), axis=1, out=bounds[:, 1:])
    bounds[:, 1:] += bounds[:, :1]
    return bounds.astype(np.int32)


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
def _pack_columns(x, chunk, c, k0, k1, xt):
    """``xt[c, k, t] = x[c * chunk + t, k]`` for ``k0 <= k < k1`` (16 columns stay in L1)."""
    for t in range(min(chunk, x.shape[0] - c * chunk)):
        x_row = x[c * chunk + t]
        for k in range(k0, k1):
            xt[c, k, t] = x_row[k]


@numba.njit(**_JIT)
def pack_batch_chunks(x: np.ndarray, chunk: int) -> np.ndarray:
    """Repack ``x`` (B, K) into ``xt`` (ceil(B / chunk), K, chunk), zero-padding the last chunk."""
    batch, in_features = x.shape
    n_chunks = (batch + chunk - 1) // chunk
    xt = np.zeros((n_chunks, in_features, chunk), dtype=np.float32)
    for c in range(n_chunks):
        for k0 in range(0, in_features, 16):
            _pack_columns(x, chunk, c, k0, min(k0 + 16, in_features), xt)
    return xt


@numba.njit(parallel=True, **_JIT)
def pack_batch_chunks_parallel(x: np.ndarray, chunk: int) -> np.ndarray:
    """Parallel :func:`pack_batch_chunks` over blocks of 16 columns."""
    batch, in_features = x.shape
    n_chunks = (batch + chunk - 1) // chunk
    n_blocks = (in_features + 15) // 16
    xt = np.empty((n_chunks, in_features, chunk), dtype=np.float32)
    for task in prange(n_chunks * n_blocks):
        c = task // n_blocks
        k0 = (task % n_blocks) * 16
        k1 = min(k0 + 16, in_features)
        xt[c, k0:k1, :] = 0.0
        _pack_columns(x, chunk, c, k0, k1, xt)
    return xt


@numba.njit(**_JIT)
def accumulate_lanes(values: np.ndarray, cols: np.ndarray, xc: np.ndarray, acc: np.ndarray) -> None:
    """``acc[:] += sum_j values[j] * xc[cols[j], :]``; ``acc.size`` a multiple of 16."""
    lane0 = 0
    while lane0 + 4 * LANES <= acc.size:
        row_fma_64(values, cols, xc, acc, lane0)
        lane0 += 4 * LANES
    if lane0 + 2 * LANES <= acc.size:
        row_fma_32(values, cols, xc, acc, lane0)
        lane0 += 2 * LANES
    if lane0 < acc.size:
        row_fma_16(values, cols, xc, acc, lane0)


@numba.njit(**_JIT)
def _write_block(acc, out, row0, row1, batch0):
    """Write ``acc[: row1 - row0, :]`` transposed into ``out[batch0 + t, row0:row1]``."""
    rows_in_chunk = min(acc.shape[1], out.shape[0] - batch0)
    for t in range(rows_in_chunk):
        out_row = out[batch0 + t]
        for r in range(row0, row1):
            out_row[r] = acc[r - row0, t]


@numba.njit(**_JIT)
def _csr_rows(data, indices, bounds, xc, bias, out, row0, row1, batch0, acc):
    """Output rows ``row0:row1`` of one batch chunk ``xc`` (K, chunk), panel by panel."""
    for block0 in range(row0, row1, ROW_BLOCK):
        block1 = min(block0 + ROW_BLOCK, row1)
        for r in range(block0, block1):
            acc[r - block0, :] = bias[r]
        for q in range(bounds.shape[1] - 1):
            for r in range(block0, block1):
                start = bounds[r, q]
                end = bounds[r, q + 1]
                if end > start:
                    accumulate_lanes(data[start:end], indices[start:end], xc, acc[r - block0])
        _write_block(acc, out, block0, block1, batch0)


@numba.njit(**_JIT)
def csr_spmm_serial(data: np.ndarray, indices: np.ndarray, bounds: np.ndarray, xt: np.ndarray,
                    bias: np.ndarray, out: np.ndarray) -> None:
    """``out (B, N) = X @ W.T + bias`` for CSR ``W`` (panel ``bounds``) and packed ``xt``."""
    n_rows = bounds.shape[0]
    acc = np.empty((min(ROW_BLOCK, n_rows), xt.shape[2]), dtype=np.float32)
    for c in range(xt.shape[0]):
        _csr_rows(data, indices, bounds, xt[c], bias, out, 0, n_rows, c * xt.shape[2], acc)


@numba.njit(parallel=True, **_JIT)
def csr_spmm_parallel(data: np.ndarray, indices: np.ndarray, bounds: np.ndarray, xt: np.ndarray,
                      bias: np.ndarray, out: np.ndarray, row_splits: np.ndarray) -> None:
    """Parallel :func:`csr_spmm_serial`: one task per (batch chunk, row range of ``row_splits``)."""
    chunk = xt.shape[2]
    n_ranges = row_splits.size - 1
    for task in prange(xt.shape[0] * n_ranges):
        c = task // n_ranges
        row0 = row_splits[task % n_ranges]
        row1 = row_splits[task % n_ranges + 1]
        acc = np.empty((min(ROW_BLOCK, row1 - row0), chunk), dtype=np.float32)
        _csr_rows(data, indices, bounds, xt[c], bias, out, row0, row1, c * chunk, acc)


@numba.njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def _dot_row(values, cols, x):
    """``sum_j values[j] * x[cols[j]]``; reassociation lets LLVM use vector gathers."""
    total = np.float32(0.0)
    for j in range(values.size):
        total += values[j] * x[cols[j]]
    return total


@numba.njit(**_JIT)
def csr_spmv_serial(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, x: np.ndarray,
                    bias: np.ndarray, out: np.ndarray) -> None:
    """``out (N,) = W @ x + bias`` for CSR ``W`` and a vector ``x`` (K,); one thread."""
    for r in range(indptr.size - 1):
        start = indptr[r]
        end = indptr[r + 1]
        out[r] = bias[r] + _dot_row(data[start:end], indices[start:end], x)


@numba.njit(parallel=True, **_JIT)
def csr_spmv_parallel(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, x: np.ndarray,
                      bias: np.ndarray, out: np.ndarray, row_splits: np.ndarray) -> None:
    """Parallel :func:`csr_spmv_serial` over the row ranges of ``row_splits``."""
    for part in prange(row_splits.size - 1):
        for r in range(row_splits[part], row_splits[part + 1]):
            start = indptr[r]
            end = indptr[r + 1]
            out[r] = bias[r] + _dot_row(data[start:end], indices[start:end], x)


def nm_group_base(width: int, n: int, m: int) -> np.ndarray:
    """First column of the group of each N:M entry: ``(j // n) * m`` for ``j < width`` (int32).

    One vector shared by all rows: entry ``j`` of any row sits at column
    ``group_base[j] + offsets[row, j]``, an addition that vectorises.
    """
    return (np.arange(width, dtype=np.int64) // n * m).astype(np.int32)


@numba.njit(**_JIT)
def _nm_columns(offsets, group_base, cols):
    """Absolute columns ``cols[j] = group_base[j] + offsets[j]`` of consecutive N:M entries."""
    for j in range(offsets.size):
        cols[j] = group_base[j] + offsets[j]


@numba.njit(**_JIT)
def _nm_rows(values, offsets, group_base, panel_entries, xc, bias, out, row0, row1, batch0, acc,
             cols):
    """Output rows ``row0:row1`` of one batch chunk ``xc`` of an N:M product, panel by panel."""
    width = values.shape[1]
    for block0 in range(row0, row1, ROW_BLOCK):
        block1 = min(block0 + ROW_BLOCK, row1)
        for r in range(block0, block1):
            acc[r - block0, :] = bias[r]
        for e0 in range(0, width, panel_entries):
            e1 = min(e0 + panel_entries, width)
            panel_cols = cols[: e1 - e0]
            for r in range(block0, block1):
                _nm_columns(offsets[r, e0:e1], group_base[e0:e1], panel_cols)
                accumulate_lanes(values[r, e0:e1], panel_cols, xc, acc[r - block0])
        _write_block(acc, out, block0, block1, batch0)


@numba.njit(**_JIT)
def nm_spmm_serial(values: np.ndarray, offsets: np.ndarray, group_base: np.ndarray,
                   panel_entries: int, xt: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
    """``out (B, N) = X @ W.T + bias`` for N:M packed ``W``; ``panel_entries`` per row panel."""
    n_rows = values.shape[0]
    acc = np.empty((min(ROW_BLOCK, n_rows), xt.shape[2]), dtype=np.float32)
    cols = np.empty(panel_entries, dtype=np.int32)
    for c in range(xt.shape[0]):
        _nm_rows(values, offsets, group_base, panel_entries, xt[c], bias, out, 0, n_rows,
                 c * xt.shape[2], acc, cols)


@numba.njit(parallel=True, **_JIT)
def nm_spmm_parallel(values: np.ndarray, offsets: np.ndarray, group_base: np.ndarray,
                     panel_entries: int, xt: np.ndarray, bias: np.ndarray, out: np.ndarray,
                     row_splits: np.ndarray) -> None:
    """Parallel :func:`nm_spmm_serial`: one task per (batch chunk, row range of ``row_splits``)."""
    chunk = xt.shape[2]
    n_ranges = row_splits.size - 1
    for task in prange(xt.shape[0] * n_ranges):
        c = task // n_ranges
        row0 = row_splits[task % n_ranges]
        row1 = row_splits[task % n_ranges + 1]
        acc = np.empty((min(ROW_BLOCK, row1 - row0), chunk), dtype=np.float32)
        cols = np.empty(panel_entries, dtype=np.int32)
        _nm_rows(values, offsets, group_base, panel_entries, xt[c], bias, out, row0, row1,
                 c * chunk, acc, cols)


@numba.njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def _nm_dot_row(values, offsets, group_base, x):
    """``sum_j values[j] * x[group_base[j] + offsets[j]]`` (vectorised with gathers)."""
    total = np.float32(0.0)
    for j in range(values.size):
        total += values[j] * x[group_base[j] + offsets[j]]
    return total


@numba.njit(**_JIT)
def nm_spmv_serial(values: np.ndarray, offsets: np.ndarray, group_base: np.ndarray, x: np.ndarray,
                   bias: np.ndarray, out: np.ndarray) -> None:
    """``out (N,) = W @ x + bias`` for N:M packed ``W`` and a vector ``x``; one thread."""
    for r in range(values.shape[0]):
        out[r] = bias[r] + _nm_dot_row(values[r], offsets[r], group_base, x)


@numba.njit(parallel=True, **_JIT)
def nm_spmv_parallel(values: np.ndarray, offsets: np.ndarray, group_base: np.ndarray,
                     x: np.ndarray, bias: np.ndarray, out: np.ndarray,
                     row_splits: np.ndarray) -> None:
    """Parallel :func:`nm_spmv_serial` over the row ranges of ``row_splits``."""
    for part in prange(row_splits.size - 1):
        for r in range(row_splits[part], row_splits[part + 1]):
            out[r] = bias[r] + _nm_dot_row(values[r], offsets[r], group_base, x)
