"""Structured (channel) pruning: run a channel-pruned layer as a smaller dense layer.

Keeping output channels ``kept_out`` and input channels ``kept_in`` of a layer is the same as
masking the other rows and columns of its weight, but the compacted layer does
``len(kept_out) * len(kept_in)`` work instead of the full product. ``compact_linear`` and
``compact_conv2d`` return the smaller weight and bias; feed the layer ``x[..., kept_in]``
(``x[:, kept_in]`` for a conv) and scatter its outputs back to positions ``kept_out`` (the
pruned outputs are zero).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prunescope.kernels.validation import (
    as_float32_array,
    as_index_vector,
    check_finite,
    is_torch_tensor,
    require,
)


def compact_linear(weight: Any, bias: Any | None, kept_out: Any | None,
                   kept_in: Any | None) -> tuple[Any, Any | None]:
    """Rows ``kept_out`` and columns ``kept_in`` of ``weight`` (N, K), and ``bias[kept_out]``.

    ``None`` keeps every output / input. Indices must be unique and in range. Returns torch
    tensors if ``weight`` is one (same device), numpy arrays otherwise.
    """
    return _compact(weight, bias, kept_out, kept_in, ndim=2)


def compact_conv2d(weight: Any, bias: Any | None, kept_out: Any | None,
                   kept_in: Any | None) -> tuple[Any, Any | None]:
    """Output channels ``kept_out`` and input channels ``kept_in`` of ``weight`` (C_out, C_in,
    kh, kw), and ``bias[kept_out]``; groups = 1. Same conventions as :func:`compact_linear`.
    """
    return _compact(weight, bias, kept_out, kept_in, ndim=4)


def _compact(weight: Any, bias: Any | None, kept_out: Any | None, kept_in: Any | None,
             ndim: int) -> tuple[Any, Any | None]:
    dense = as_float32_array(weight, "weight", ndim=ndim)
    check_finite(dense, "weight")
    n_out, n_in = dense.shape[:2]
    rows = np.arange(n_out) if kept_out is None else as_index_vector(kept_out, "kept_out", n_out)
    cols = np.arange(n_in) if kept_in is None else as_index_vector(kept_in, "kept_in", n_in)
    small = np.ascontiguousarray(dense[rows][:, cols])
    small_bias = None
    if bias is not None:
        vector = as_float32_array(bias, "bias", ndim=1)
        require(vector.shape == (n_out,), f"bias must have shape ({n_out},), got {vector.shape}")
        small_bias = np.ascontiguousarray(vector[rows])
    if is_torch_tensor(weight):
        import torch

        small = torch.from_numpy(small).to(weight.device)
        small_bias = None if small_bias is None else torch.from_numpy(small_bias).to(weight.device)
    return small, small_bias
