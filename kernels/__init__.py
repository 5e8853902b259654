"""Numeric kernels of Prunescope: sparse (CSR, N:M) linear and conv layers on Numba CPU/CUDA.

Typical use: prepare a pruned layer once, run it many times::

    from prunescope.kernels import SparseLinear, sparse_linear, warmup
    warmup(background=True)                        # compile/cache-load at start-up
    layer = SparseLinear.from_dense(weight, mask, bias)
    y = sparse_linear(x, layer, backend="auto")    # x: numpy or torch, (..., in_features)

Importing this package is light: the names below load their modules (and Numba) on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "available_backends": "dispatch",
    "sparse_linear": "dispatch",
    "nm_linear": "dispatch",
    "sparse_conv2d": "dispatch",
    "SparseLinear": "layers",
    "NMLinear": "layers",
    "SparseConv2d": "layers",
    "CSRMatrix": "formats",
    "NMPacked": "formats",
    "pack_nm": "formats",
    "compact_linear": "compact",
    "compact_conv2d": "compact",
    "warmup": "jit_warmup",
    "is_warm": "jit_warmup",
    "parallel_section": "threads",
    "threading_layer": "threads",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from prunescope.kernels.compact import compact_conv2d, compact_linear
    from prunescope.kernels.dispatch import (
        available_backends,
        nm_linear,
        sparse_conv2d,
        sparse_linear,
    )
    from prunescope.kernels.formats import CSRMatrix, NMPacked, pack_nm
    from prunescope.kernels.layers import NMLinear, SparseConv2d, SparseLinear
    from prunescope.kernels.threads import parallel_section, threading_layer
    from prunescope.kernels.jit_warmup import is_warm, warmup


def __getattr__(name: str) -> Any:
    """Load a public name from its submodule on first access (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'prunescope.kernels' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"prunescope.kernels.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
