"""Prepared layers: a masked weight converted once to a kernel format, then run many times.

``SparseLinear`` (CSR), ``NMLinear`` (N:M packed) and ``SparseConv2d`` (CSR, groups = 1) hold
validated float32/int32 arrays and a bias, plus small caches that are filled on first use (the
balanced row splits for the parallel kernels, the dense torch weight for the ``torch``
reference backend, device copies for ``numba-cuda``). Run one with its ``__call__`` or with the
functions of :mod:`prunescope.kernels.dispatch`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from prunescope.kernels.formats import CSRMatrix, NMPacked, masked_dense, pack_nm
from prunescope.kernels.spmm import balanced_row_splits, csr_panel_bounds, nm_group_base
from prunescope.kernels.validation import as_float32_array, check_finite, require


@dataclass(frozen=True, eq=False)
class _LayerCache:
    """Per-layer memo of derived arrays (row splits, dense/device copies); thread-safe."""

    entries: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        """The entry for ``key``, made by ``make()`` on first use."""
        with self.lock:
            if key not in self.entries:
                self.entries[key] = make()
            return self.entries[key]


def _bias_vector(bias: object | None, size: int) -> np.ndarray:
    """``bias`` as a finite float32 vector of ``size`` entries; zeros when ``None``."""
    if bias is None:
        return np.zeros(size, dtype=np.float32)
    vector = as_float32_array(bias, "bias", ndim=1)
    require(vector.shape == (size,), f"bias must have shape ({size},), got {vector.shape}")
    check_finite(vector, "bias")
    return vector


def _pair(value: object, name: str, minimum: int) -> tuple[int, int]:
    """``value`` (an int or a pair of ints, each >= ``minimum``) as a pair of ints."""
    if isinstance(value, (int, np.integer)):
        pair: tuple = (value, value)
    else:
        try:
            pair = tuple(value)
        except TypeError:
            pair = ()
    ok = len(pair) == 2 and all(isinstance(v, (int, np.integer)) and v >= minimum for v in pair)
    require(ok, f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True, eq=False)
class SparseLinear:
    """A pruned ``nn.Linear``: CSR weight (out_features, in_features) and a float32 bias."""

    weight: CSRMatrix
    bias: np.ndarray
    has_bias: bool = True
    _cache: _LayerCache = field(default_factory=_LayerCache, repr=False)

    def __post_init__(self) -> None:
        require(isinstance(self.weight, CSRMatrix),
                f"weight must be a CSRMatrix, got {type(self.weight).__name__}")
        object.__setattr__(self, "bias", _bias_vector(self.bias, self.weight.shape[0]))

    @classmethod
    def from_dense(cls, weight: object, mask: object | None = None,
                   bias: object | None = None) -> SparseLinear:
        """Prepare from a dense weight (numpy or torch), an optional boolean mask and bias."""
        return cls.from_csr(CSRMatrix.from_dense(weight, mask), bias)

    @classmethod
    def from_csr(cls, csr: CSRMatrix, bias: object | None = None) -> SparseLinear:
        """Prepare from a :class:`CSRMatrix` and an optional bias."""
        require(isinstance(csr, CSRMatrix), f"csr must be a CSRMatrix, got {type(csr).__name__}")
        return cls(csr, bias, bias is not None)

    @property
    def in_features(self) -> int:
        """Inputs K."""
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        """Outputs N."""
        return self.weight.shape[0]

    @property
    def nnz(self) -> int:
        """Kept weights."""
        return self.weight.nnz

    def row_splits(self, parts: int) -> np.ndarray:
        """Row ranges of similar nonzero count for ``parts`` parallel tasks (memoised)."""
        return self._cache.get(("splits", parts),
                               lambda: balanced_row_splits(self.weight.indptr, parts))

    def panel_bounds(self, panel_cols: int) -> np.ndarray:
        """Each row's nonzero range per column panel of ``panel_cols`` (memoised)."""
        w = self.weight
        return self._cache.get(("panels", panel_cols), lambda: csr_panel_bounds(
            w.indptr, w.indices, w.shape[1], panel_cols))

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """Memoise a derived object (dense or device copy) on this layer."""
        return self._cache.get(key, make)

    def __call__(self, x: Any, backend: str = "auto") -> Any:
        """``x @ W.T + bias``; see :func:`prunescope.kernels.dispatch.sparse_linear`."""
        from prunescope.kernels.dispatch import sparse_linear

        return sparse_linear(x, self, backend=backend)


@dataclass(frozen=True, eq=False)
class NMLinear:
    """An N:M-pruned ``nn.Linear``: packed weight and a float32 bias."""

    weight: NMPacked
    bias: np.ndarray
    has_bias: bool = True
    _cache: _LayerCache = field(default_factory=_LayerCache, repr=False)

    def __post_init__(self) -> None:
        require(isinstance(self.weight, NMPacked),
                f"weight must be an NMPacked, got {type(self.weight).__name__}")
        object.__setattr__(self, "bias", _bias_vector(self.bias, self.weight.shape[0]))

    @classmethod
    def from_dense(cls, weight: object, mask: object | None, n: int, m: int,
                   bias: object | None = None) -> NMLinear:
        """Prepare from a dense weight and an N:M mask (see :func:`pack_nm`)."""
        return cls(pack_nm(weight, mask, n, m), bias, bias is not None)

    @property
    def in_features(self) -> int:
        """Inputs K."""
        return self.weight.in_features

    @property
    def out_features(self) -> int:
        """Outputs N."""
        return self.weight.values.shape[0]

    def group_base(self) -> np.ndarray:
        """First column of each entry's group, shared by all rows (memoised)."""
        w = self.weight
        return self._cache.get("group_base", lambda: nm_group_base(w.values.shape[1], w.n, w.m))

    def row_splits(self, parts: int) -> np.ndarray:
        """Equal row ranges for ``parts`` parallel tasks (every row holds as many entries)."""
        rows = self.out_features
        return self._cache.get(("splits", parts), lambda: np.unique(
            np.linspace(0, rows, max(1, min(parts, rows)) + 1).astype(np.int64)))

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """Memoise a derived object (dense or device copy) on this layer."""
        return self._cache.get(key, make)

    def __call__(self, x: Any, backend: str = "auto") -> Any:
        """``x @ W.T + bias``; see :func:`prunescope.kernels.dispatch.nm_linear`."""
        from prunescope.kernels.dispatch import nm_linear

        return nm_linear(x, self, backend=backend)


@dataclass(frozen=True, eq=False)
class SparseConv2d:
    """A pruned ``nn.Conv2d`` (groups = 1, zero padding): CSR weight (C_out, C_in*kh*kw)."""

    weight: CSRMatrix
    bias: np.ndarray
    in_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    has_bias: bool = True
    _cache: _LayerCache = field(default_factory=_LayerCache, repr=False)

    def __post_init__(self) -> None:
        require(isinstance(self.weight, CSRMatrix),
                f"weight must be a CSRMatrix, got {type(self.weight).__name__}")
        kh, kw = _pair(self.kernel_size, "kernel_size", 1)
        taps = int(self.in_channels) * kh * kw
        require(self.weight.shape[1] == taps,
                f"CSR weight has {self.weight.shape[1]} columns, but in_channels * kh * kw = "
                f"{self.in_channels} * {kh} * {kw} = {taps}")
        object.__setattr__(self, "bias", _bias_vector(self.bias, self.weight.shape[0]))
        object.__setattr__(self, "in_channels", int(self.in_channels))
        object.__setattr__(self, "kernel_size", (kh, kw))
        object.__setattr__(self, "stride", _pair(self.stride, "stride", 1))
        object.__setattr__(self, "padding", _pair(self.padding, "padding", 0))
        object.__setattr__(self, "dilation", _pair(self.dilation, "dilation", 1))

    @classmethod
    def from_dense(cls, weight: object, mask: object | None = None, bias: object | None = None,
                   stride: object = 1, padding: object = 0, dilation: object = 1,
                   groups: int = 1) -> SparseConv2d:
        """Prepare from a dense weight (C_out, C_in, kh, kw), optional mask and bias.

        ``stride``, ``padding`` and ``dilation`` are ints or pairs as in ``nn.Conv2d``; only
        ``groups=1`` and numeric zero padding are supported.
        """
        if groups != 1:
            raise ValueError(f"groups={groups} is not supported by the sparse conv kernels: "
                             f"only groups=1 (run grouped/depthwise convs with backend='torch')")
        if isinstance(padding, str):
            raise ValueError(f"padding={padding!r} is not supported: give ints (zero padding)")
        dense = masked_dense(weight, mask, ndim=4)
        out_channels, in_channels, kh, kw = dense.shape
        csr = CSRMatrix.from_dense(dense.reshape(out_channels, -1))
        return cls(csr, bias, in_channels, (kh, kw), stride, padding, dilation, bias is not None)

    @property
    def out_channels(self) -> int:
        """Output channels C_out."""
        return self.weight.shape[0]

    def geometry(self, out_width: int) -> np.ndarray:
        """The int64 array ``(kh, kw, sh, sw, ph, pw, dh, dw, out_w)`` the kernels take."""
        return np.array([*self.kernel_size, *self.stride, *self.padding, *self.dilation,
                         out_width], dtype=np.int64)

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """Memoise a derived object (dense or device copy) on this layer."""
        return self._cache.get(key, make)

    def __call__(self, x: Any, backend: str = "auto") -> Any:
        """The convolution of ``x``; see :func:`prunescope.kernels.dispatch.sparse_conv2d`."""
        from prunescope.kernels.dispatch import sparse_conv2d

        return sparse_conv2d(x, self, backend=backend)
