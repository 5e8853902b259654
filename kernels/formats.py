"""Sparse weight formats: CSR and N:M packed, built once from a dense weight and a mask.

Both are frozen containers of plain numpy arrays that validate themselves on construction, so a
kernel never sees an index out of range (Numba does no bounds checks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prunescope.kernels.validation import (
    as_float32_array,
    as_mask_array,
    check_finite,
    require,
)

INT32_MAX = np.iinfo(np.int32).max


@dataclass(frozen=True, eq=False)
class CSRMatrix:
    """A float32 CSR matrix of shape ``(rows, cols)`` with int32 ``indices`` and ``indptr``.

    Row ``r`` holds ``data[indptr[r]:indptr[r+1]]`` at columns ``indices[indptr[r]:indptr[r+1]]``.
    Construction validates everything a kernel relies on and raises ``ValueError`` otherwise;
    columns are sorted within each row (duplicates are kept and add up).
    """

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        rows, cols = (int(s) for s in self.shape)
        require(rows >= 0 and cols >= 0, f"CSR shape must be non-negative, got {self.shape}")
        data = as_float32_array(self.data, "CSR data", ndim=1)
        indices = _as_index_array(self.indices, "CSR indices")
        indptr = _as_index_array(self.indptr, "CSR indptr")
        require(indptr.shape == (rows + 1,),
                f"CSR indptr must have rows + 1 = {rows + 1} entries, got {indptr.shape[0]}")
        require(indptr[0] == 0, f"CSR indptr[0] must be 0, got {indptr[0]}")
        steps = np.diff(indptr.astype(np.int64))
        if steps.size and steps.min() < 0:
            bad = int(np.argmax(steps < 0))
            raise ValueError(f"CSR indptr must be non-decreasing, but indptr[{bad + 1}] = "
                             f"{indptr[bad + 1]} < indptr[{bad}] = {indptr[bad]}")
        nnz = int(indptr[-1])
        require(data.shape == (nnz,) and indices.shape == (nnz,),
                f"CSR data and indices must both have indptr[-1] = {nnz} entries, got "
                f"{data.shape[0]} and {indices.shape[0]}")
        if nnz:
            bad = np.flatnonzero((indices < 0) | (indices >= cols))
            if bad.size:
                raise ValueError(f"CSR column index out of range: indices[{bad[0]}] = "
                                 f"{indices[bad[0]]}, allowed 0 <= index < {cols}")
        check_finite(data, "CSR data")
        row_of = np.repeat(np.arange(rows), np.diff(indptr))
        if nnz and np.any(np.diff(row_of * np.int64(cols) + indices) < 0):
            order = np.lexsort((indices, row_of))  # the kernels want sorted columns per row
            data, indices = data[order], indices[order]
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "shape", (rows, cols))

    @classmethod
    def from_dense(cls, weight: object, mask: object | None = None) -> CSRMatrix:
        """CSR of ``weight * mask`` (2-D); entries that are zero after masking are dropped."""
        dense = masked_dense(weight, mask, ndim=2)
        rows, cols = np.nonzero(dense)  # row-major order: sorted by row, then column
        require(rows.size <= INT32_MAX, f"too many nonzeros for int32 indices: {rows.size}")
        indptr = np.zeros(dense.shape[0] + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
        return cls(dense[rows, cols], cols.astype(np.int32), indptr, dense.shape)

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.indptr[-1])

    @property
    def density(self) -> float:
        """Stored entries divided by ``rows * cols`` (0 for an empty shape)."""
        size = self.shape[0] * self.shape[1]
        return self.nnz / size if size else 0.0

    def to_dense(self) -> np.ndarray:
        """The dense float32 matrix."""
        dense = np.zeros(self.shape, dtype=np.float32)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        dense[rows, self.indices] = self.data
        return dense


@dataclass(frozen=True, eq=False)
class NMPacked:
    """An N:M sparse weight (at most ``n`` nonzeros in each group of ``m`` consecutive inputs).

    ``values`` (rows, in_features // m * n) float32 holds ``n`` entries per group in column
    order; ``offsets`` (same shape, uint8) holds each entry's position ``0 <= offset < m`` in
    its group. Groups with fewer than ``n`` nonzeros are padded with zero values.
    """

    values: np.ndarray
    offsets: np.ndarray
    n: int
    m: int
    in_features: int

    def __post_init__(self) -> None:
        n, m, in_features = int(self.n), int(self.m), int(self.in_features)
        _check_nm(n, m, in_features)
        values = as_float32_array(self.values, "N:M values", ndim=2)
        offsets = np.ascontiguousarray(self.offsets)
        require(offsets.dtype == np.uint8, f"N:M offsets must be uint8, got {offsets.dtype}")
        width = in_features // m * n
        require(values.shape[1] == width and offsets.shape == values.shape,
                f"N:M values and offsets must both have shape (rows, {width}) for "
                f"in_features={in_features}, {n}:{m}; got {values.shape} and {offsets.shape}")
        if offsets.size and offsets.max() >= m:
            raise ValueError(f"N:M offset out of range: {int(offsets.max())}, allowed 0..{m - 1}")
        check_finite(values, "N:M values")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "in_features", in_features)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(rows, in_features)`` of the dense weight."""
        return (self.values.shape[0], self.in_features)

    def to_dense(self) -> np.ndarray:
        """The dense float32 weight."""
        rows, width = self.values.shape
        group = np.arange(width) // self.n
        cols = group * self.m + self.offsets.astype(np.int64)
        dense = np.zeros(self.shape, dtype=np.float32)
        np.add.at(dense, (np.arange(rows)[:, None], cols), self.values)
        return dense


def pack_nm(weight: object, mask: object | None, n: int, m: int) -> NMPacked:
    """Pack ``weight * mask`` (rows, in_features) into the N:M format.

    ``mask`` is boolean (or 0/1) with the weight's shape; ``None`` keeps the nonzeros of
    ``weight``. Every group of ``m`` consecutive inputs of a row may keep at most ``n`` weights,
    and ``in_features`` must be a multiple of ``m``; otherwise ``ValueError`` names the first
    offending group.
    """
    dense = masked_dense(weight, mask, ndim=2)
    rows, in_features = dense.shape
    _check_nm(int(n), int(m), in_features)
    groups = dense.reshape(rows, in_features // m, m)
    kept = groups != 0
    counts = kept.sum(axis=2)
    if counts.size and counts.max() > n:
        row, group = np.unravel_index(int(np.argmax(counts > n)), counts.shape)
        raise ValueError(f"mask is not {n}:{m} sparse: row {row}, input group {group} (columns "
                         f"{group * m}..{group * m + m - 1}) keeps {counts[row, group]} weights, "
                         f"at most {n} allowed")
    # Kept positions first, in column order; padding slots point at zero-valued positions.
    offsets = np.argsort(~kept, axis=2, kind="stable")[:, :, :n]
    values = np.take_along_axis(groups, offsets, axis=2)
    return NMPacked(values.reshape(rows, -1), offsets.astype(np.uint8).reshape(rows, -1),
                    n, m, in_features)


def masked_dense(weight: object, mask: object | None, ndim: int) -> np.ndarray:
    """``weight * mask`` as a finite float32 C-contiguous array, after validating both."""
    dense = as_float32_array(weight, "weight", ndim=ndim)
    check_finite(dense, "weight")
    if mask is None:
        return dense
    keep = as_mask_array(mask, "mask", dense.shape)
    return np.where(keep, dense, np.float32(0.0))


def _check_nm(n: int, m: int, in_features: int) -> None:
    require(1 <= m <= 256, f"N:M group size m must be in 1..256, got m={m}")
    require(1 <= n <= m, f"N:M n must be in 1..m={m}, got n={n}")
    require(in_features % m == 0,
            f"in_features={in_features} must be a multiple of the N:M group size m={m}")


def _as_index_array(values: object, name: str) -> np.ndarray:
    array = np.asarray(values)
    require(array.ndim == 1, f"{name} must be 1-D, got shape {array.shape}")
    require(array.dtype.kind in "iu", f"{name} must hold integers, got dtype {array.dtype}")
    if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > INT32_MAX):
        raise ValueError(f"{name} must fit in int32, got values in "
                         f"[{array.min()}, {array.max()}]")
    return np.ascontiguousarray(array, dtype=np.int32)
