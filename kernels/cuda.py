"""Numba CUDA kernels for the CSR and N:M products, beside the CPU ones in ``spmm``.

Both compute ``out (B, N) = X @ W.T + bias`` from ``xt = X.T`` (K, B) in device memory. One
thread computes one output ``(b, n)``; the threads of a warp run along ``b``, so each nonzero is
read once per warp (a broadcast) and ``xt[k, b0:b0 + 32]`` is one coalesced load.

This module imports ``numba.cuda`` and is imported only by the ``numba-cuda`` backend of
:mod:`prunescope.kernels.dispatch` (CI runs it on the CUDA simulator, ``NUMBA_ENABLE_CUDASIM=1``).
Inputs are validated by the dispatch before they get here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

THREADS_PER_BLOCK = 256


@cuda.jit(cache=True)
def _csr_spmm_kernel(data, indices, indptr, xt, bias, out):
    b, row = cuda.grid(2)
    if b < out.shape[0] and row < out.shape[1]:
        acc = bias[row]
        for j in range(indptr[row], indptr[row + 1]):
            acc += data[j] * xt[indices[j], b]
        out[b, row] = acc


@cuda.jit(cache=True)
def _nm_spmm_kernel(values, offsets, n, m, xt, bias, out):
    b, row = cuda.grid(2)
    if b < out.shape[0] and row < out.shape[1]:
        acc = bias[row]
        for j in range(values.shape[1]):
            acc += values[row, j] * xt[(j // n) * m + offsets[row, j], b]
        out[b, row] = acc


def launch_shape(batch: int, rows: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(blocks, threads) covering a ``(batch, rows)`` output, a warp along the batch."""
    along_batch = 32 if batch > 16 else max(1, 1 << (max(batch, 1) - 1).bit_length())
    along_rows = THREADS_PER_BLOCK // along_batch
    blocks = (-(-batch // along_batch), -(-rows // along_rows))
    return blocks, (along_batch, along_rows)


def is_available() -> bool:
    """True if a CUDA GPU (or the CUDA simulator) can run these kernels."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install counts as no GPU
        return False


def to_device(array: Any) -> Any:
    """A device array for a numpy array, or a zero-copy view of a CUDA array (torch tensor)."""
    if hasattr(array, "__cuda_array_interface__"):
        return cuda.as_cuda_array(array)
    return cuda.to_device(np.ascontiguousarray(array))


def csr_spmm(data: Any, indices: Any, indptr: Any, xt: Any, bias: Any, out: Any) -> None:
    """``out (B, N) = xt.T @ W.T + bias`` on the GPU for a CSR ``W``; all device arrays."""
    blocks, threads = launch_shape(out.shape[0], out.shape[1])
    if out.shape[0] and out.shape[1]:
        _csr_spmm_kernel[blocks, threads](data, indices, indptr, xt, bias, out)


def nm_spmm(values: Any, offsets: Any, n: int, m: int, xt: Any, bias: Any, out: Any) -> None:
    """``out (B, N) = xt.T @ W.T + bias`` on the GPU for an N:M packed ``W``; device arrays."""
    blocks, threads = launch_shape(out.shape[0], out.shape[1])
    if out.shape[0] and out.shape[1]:
        _nm_spmm_kernel[blocks, threads](values, offsets, n, m, xt, bias, out)
