"""CPU kernels for 2-D convolution with a sparse (CSR) weight, groups = 1.

The weight ``(C_out, C_in, kh, kw)`` is stored as a CSR matrix of shape ``(C_out, C_in*kh*kw)``;
column ``k`` is tap ``(ci, dy, dx)`` with ``k = (ci * kh + dy) * kw + dx``, the order of
``weight.reshape(C_out, -1)``.

im2col + SpMM: for one image and a chunk of ``pc`` output positions, the input taps are
gathered into ``cols`` (K, pc), which is exactly the packed ``X^T`` layout the CSR product in
:mod:`prunescope.kernels.spmm` wants: each nonzero then does one contiguous axpy over the chunk,
and every output row ``out[b, co, p0:p1]`` is contiguous, so no transposition is needed. (A direct
sparse convolution, one shifted axpy per nonzero and output row, was measured too and was slower:
see docs/performance.md.)

No validation here: :mod:`prunescope.kernels.dispatch` validates every array first.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from prunescope.kernels.simd import LANES
from prunescope.kernels.spmm import accumulate_lanes

_JIT = dict(cache=True, nogil=True, fastmath={"contract"})
COLS_CACHE_BYTES = 1 << 18  # one (K, pc) im2col chunk should stay in the L2 cache


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis (PyTorch's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def position_chunk_width(positions: int, taps: int, images: int, threads: int) -> int:
    """Output positions per im2col chunk, a multiple of 16: the (taps, chunk) slab fits
    ``COLS_CACHE_BYTES`` and there are at least two chunks per thread where possible."""
    cap = max(LANES, COLS_CACHE_BYTES // (4 * max(taps, 1)) // LANES * LANES)
    n_chunks = max(-(-positions // cap), -(-2 * threads // max(images, 1)))
    n_chunks = min(n_chunks, max(1, positions // LANES))
    width = -(-positions // n_chunks)
    return -(-width // LANES) * LANES


@numba.njit(**_JIT)
def _pad_image(image, ph, pw, padded):
    """Copy ``image`` (C, H, W) into the middle of ``padded`` (C, H + 2 ph, W + 2 pw), zero border."""
    channels, height, width = image.shape
    padded[:] = 0.0
    for ci in range(channels):
        for iy in range(height):
            src = image[ci, iy]
            dst = padded[ci, iy + ph, pw: pw + width]
            for ix in range(width):
                dst[ix] = src[ix]


@numba.njit(**_JIT)
def _im2col_chunk(padded, kh, kw, sh, sw, dh, dw, out_w, p0, p1, cols):
    """Fill ``cols[k, p - p0]`` with tap ``k`` of output position ``p`` from a padded image."""
    for ci in range(padded.shape[0]):
        for dy in range(kh):
            for dx in range(kw):
                row = cols[(ci * kh + dy) * kw + dx]
                for oy in range(p0 // out_w, (p1 - 1) // out_w + 1):
                    a = max(p0 - oy * out_w, 0)  # output columns a:b of this row lie in the chunk
                    b = min(p1 - oy * out_w, out_w)
                    dst = row[oy * out_w + a - p0: oy * out_w + b - p0]
                    src = padded[ci, oy * sh + dy * dh, a * sw + dx * dw:]
                    if sw == 1:
                        for t in range(b - a):
                            dst[t] = src[t]
                    else:
                        for t in range(b - a):
                            dst[t] = src[t * sw]


@numba.njit(**_JIT)
def _conv_chunk(data, indices, indptr, padded, bias, out_image, geometry, p0, p1, cols, acc):
    """All output channels of positions ``p0:p1`` of one padded image: im2col, then CSR rows.

    ``cols`` (taps, chunk) and ``acc`` (chunk,) are scratch, ``chunk >= p1 - p0`` a multiple of
    16; lanes past ``p1 - p0`` compute garbage that is never written out.
    """
    kh, kw, sh, sw, ph, pw, dh, dw, out_w = geometry
    _im2col_chunk(padded, kh, kw, sh, sw, dh, dw, out_w, p0, p1, cols)
    for co in range(indptr.size - 1):
        acc[:] = bias[co]
        start = indptr[co]
        end = indptr[co + 1]
        accumulate_lanes(data[start:end], indices[start:end], cols, acc)
        out_row = out_image[co]
        for p in range(p1 - p0):
            out_row[p0 + p] = acc[p]


@numba.njit(**_JIT)
def csr_conv2d_serial(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, x: np.ndarray,
                      bias: np.ndarray, out: np.ndarray, geometry: np.ndarray, chunk: int) -> None:
    """``out (B, C_out, P)`` = conv of ``x (B, C_in, H, W)`` with a CSR weight; one thread.

    ``geometry`` is the int64 array ``(kh, kw, sh, sw, ph, pw, dh, dw, out_w)`` and ``chunk``
    the number of output positions per im2col chunk (a multiple of 16).
    """
    batch, channels, height, width = x.shape
    ph = geometry[4]
    pw = geometry[5]
    positions = out.shape[2]
    padded = np.empty((channels, height + 2 * ph, width + 2 * pw), dtype=np.float32)
    cols = np.zeros((channels * geometry[0] * geometry[1], chunk), dtype=np.float32)
    acc = np.empty(chunk, dtype=np.float32)
    for b in range(batch):
        _pad_image(x[b], ph, pw, padded)
        for p0 in range(0, positions, chunk):
            p1 = min(p0 + chunk, positions)
            _conv_chunk(data, indices, indptr, padded, bias, out[b], geometry, p0, p1, cols, acc)


@numba.njit(parallel=True, **_JIT)
def csr_conv2d_parallel(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray,
                        x: np.ndarray, bias: np.ndarray, out: np.ndarray, geometry: np.ndarray,
                        chunk: int) -> None:
    """Parallel :func:`csr_conv2d_serial`: pad all images, then one task per (image, chunk)."""
    batch, channels, height, width = x.shape
    ph = geometry[4]
    pw = geometry[5]
    positions = out.shape[2]
    taps = channels * geometry[0] * geometry[1]
    padded = np.empty((batch, channels, height + 2 * ph, width + 2 * pw), dtype=np.float32)
    for b in prange(batch):
        _pad_image(x[b], ph, pw, padded[b])
    n_chunks = (positions + chunk - 1) // chunk
    for task in prange(batch * n_chunks):
        b = task // n_chunks
        p0 = (task % n_chunks) * chunk
        p1 = min(p0 + chunk, positions)
        cols = np.zeros((taps, chunk), dtype=np.float32)
        acc = np.empty(chunk, dtype=np.float32)
        _conv_chunk(data, indices, indptr, padded[b], bias, out[b], geometry, p0, p1, cols, acc)


@numba.njit(**_JIT)
def csr_conv2d_direct(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, x: np.ndarray,
                      bias: np.ndarray, out: np.ndarray, geometry: np.ndarray) -> None:
    """Direct sparse convolution (measured against im2col; kept for the benchmark only).

    For each nonzero ``(co, ci, dy, dx)`` and output row, one shifted axpy along the row.
    """
    kh, kw, sh, sw, ph, pw, dh, dw, out_w = geometry
    height = x.shape[2]
    width = x.shape[3]
    out_h = out.shape[2] // out_w
    for b in range(x.shape[0]):
        for co in range(indptr.size - 1):
            plane = out[b, co]
            plane[:] = bias[co]
            for j in range(indptr[co], indptr[co + 1]):
                k = indices[j]
                ci = k // (kh * kw)
                dy = (k // kw) % kh
                dx = k % kw
                v = data[j]
                # valid output columns: 0 <= ox * sw - pw + dx * dw < width
                shift = dx * dw - pw
                ox0 = max(0, (-shift + sw - 1) // sw)
                ox1 = min(out_w, (width - 1 - shift) // sw + 1)
                for oy in range(out_h):
                    iy = oy * sh - ph + dy * dh
                    if iy < 0 or iy >= height:
                        continue
                    x_row = x[b, ci, iy]
                    out_row = plane[oy * out_w: (oy + 1) * out_w]
                    for ox in range(ox0, ox1):
                        out_row[ox] += v * x_row[ox * sw + shift]
