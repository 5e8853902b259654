"""Sparse Conv2d (im2col + CSR) against ``F.conv2d`` on the masked dense weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prunescope.kernels import SparseConv2d, sparse_conv2d
from prunescope.kernels.conv import csr_conv2d_direct


def reference(x, weight, mask, bias, stride, padding, dilation) -> np.ndarray:
    masked = torch.from_numpy(np.where(mask, weight, 0).astype(np.float32))
    bias_t = None if bias is None else torch.from_numpy(bias)
    return F.conv2d(torch.from_numpy(x), masked, bias_t, stride, padding, dilation).numpy()


GEOMETRIES = [  # (C_in, C_out, H, W, kernel, stride, padding, dilation)
    (3, 8, 9, 9, (3, 3), 1, 1, 1),
    (4, 5, 11, 7, (3, 2), (2, 1), (1, 0), (1, 2)),
    (2, 6, 8, 8, (1, 1), 1, 0, 1),
    (5, 4, 12, 10, (5, 5), 2, 2, 1),
    (3, 3, 10, 10, (3, 3), 3, (2, 1), 2),
    (16, 24, 16, 16, (3, 3), 1, 1, 1),
]


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("sparsity", [0.0, 0.7, 0.95])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_conv_matches_torch(rng, random_masked, assert_close, geometry, sparsity, parallel):
    c_in, c_out, height, width, kernel, stride, padding, dilation = geometry
    weight, mask = random_masked(rng, (c_out, c_in, *kernel), sparsity)
    bias = rng.standard_normal(c_out).astype(np.float32)
    x = rng.standard_normal((2, c_in, height, width)).astype(np.float32)
    layer = SparseConv2d.from_dense(weight, mask, bias, stride, padding, dilation)
    out = sparse_conv2d(x, layer, backend="numba-cpu", parallel=parallel)
    expected = reference(x, weight, mask, bias, stride, padding, dilation)
    assert_close(out, expected)
    assert_close(sparse_conv2d(x, layer, backend="torch"), expected)


def test_batch_one_unbatched_non_contiguous_and_all_zero(rng, random_masked, assert_close):
    weight, mask = random_masked(rng, (6, 4, 3, 3), 0.8)
    layer = SparseConv2d.from_dense(weight, mask, None, padding=1)
    x = rng.standard_normal((1, 4, 7, 7)).astype(np.float32)
    expected = reference(x, weight, mask, None, 1, 1, 1)
    assert_close(sparse_conv2d(x, layer), expected)
    assert_close(sparse_conv2d(x[0], layer), expected[0])
    channels_last = torch.from_numpy(x).to(memory_format=torch.channels_last)
    assert not channels_last.is_contiguous()
    result = layer(channels_last)
    assert isinstance(result, torch.Tensor)
    assert_close(result.numpy(), expected)
    zero = SparseConv2d.from_dense(weight, np.zeros_like(mask), None, padding=1)
    assert_close(sparse_conv2d(x, zero, parallel=True), np.zeros_like(expected))


def test_direct_conv_reference_kernel(rng, random_masked, assert_close):
    """The direct kernel (kept for the benchmark's im2col-vs-direct comparison) is correct too."""
    weight, mask = random_masked(rng, (5, 3, 3, 3), 0.6)
    layer = SparseConv2d.from_dense(weight, mask, None, stride=2, padding=1, dilation=1)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    expected = reference(x, weight, mask, None, 2, 1, 1)
    out = np.empty((2, 5, expected.shape[2] * expected.shape[3]), np.float32)
    w = layer.weight
    csr_conv2d_direct(w.data, w.indices, w.indptr, x, layer.bias, out,
                      layer.geometry(expected.shape[3]))
    assert_close(out.reshape(expected.shape), expected)


def test_conv_rejects_unsupported_and_bad_input(rng):
    weight = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="groups=2 is not supported"):
        SparseConv2d.from_dense(weight, groups=2)
    with pytest.raises(ValueError, match="padding='same' is not supported"):
        SparseConv2d.from_dense(weight, padding="same")
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        SparseConv2d.from_dense(weight, stride=0)
    layer = SparseConv2d.from_dense(weight)
    with pytest.raises(ValueError, match="x has 3 channels, the layer expects in_channels=2"):
        sparse_conv2d(np.zeros((1, 3, 8, 8), np.float32), layer)
    with pytest.raises(ValueError, match="too small"):
        sparse_conv2d(np.zeros((1, 2, 2, 8), np.float32), layer)
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W\) or \(C, H, W\)"):
        sparse_conv2d(np.zeros((2, 8, 8), np.float32)[0], layer)
    with pytest.raises(ValueError, match="backend='numba-cuda' is not supported here"):
        sparse_conv2d(np.zeros((1, 2, 8, 8), np.float32), layer, backend="numba-cuda")
