"""CSR sparse linear layers against the dense torch reference ``F.linear(x, W * mask, b)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prunescope.kernels import CSRMatrix, SparseLinear, sparse_linear, spmm


def reference(x: np.ndarray, weight: np.ndarray, mask: np.ndarray, bias) -> np.ndarray:
    bias_t = None if bias is None else torch.from_numpy(bias)
    masked = torch.from_numpy(np.where(mask, weight, 0).astype(np.float32))
    return F.linear(torch.from_numpy(x), masked, bias_t).numpy()


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("out_features, in_features, batch", [
    (1, 1, 1), (7, 13, 1), (33, 70, 2), (64, 48, 17), (130, 96, 64), (40, 300, 257),
])
def test_csr_linear_matches_torch(rng, random_masked, assert_close, out_features, in_features,
                                  batch, sparsity, parallel):
    weight, mask = random_masked(rng, (out_features, in_features), sparsity)
    bias = rng.standard_normal(out_features).astype(np.float32)
    x = rng.standard_normal((batch, in_features)).astype(np.float32)
    layer = SparseLinear.from_dense(weight, mask, bias)
    out = sparse_linear(x, layer, backend="numba-cpu", parallel=parallel)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert_close(out, reference(x, weight, mask, bias))


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("batch", [1, 5, 40])
def test_empty_rows_and_all_zero_matrix(rng, assert_close, batch, parallel):
    weight = rng.standard_normal((50, 24)).astype(np.float32)
    mask = rng.random(weight.shape) > 0.5
    mask[[0, 3, 4, 49]] = False  # empty rows, including the first and the last
    mask[10:30] = False  # a long run of empty rows
    x = rng.standard_normal((batch, 24)).astype(np.float32)
    bias = rng.standard_normal(50).astype(np.float32)
    out = sparse_linear(x, SparseLinear.from_dense(weight, mask, bias), parallel=parallel)
    assert_close(out, reference(x, weight, mask, bias))
    assert_close(out[:, 10:30], np.broadcast_to(bias[10:30], (batch, 20)))
    nothing = np.zeros_like(mask)
    zero_layer = SparseLinear.from_dense(weight, nothing)
    assert zero_layer.nnz == 0
    assert_close(sparse_linear(x, zero_layer, parallel=parallel), np.zeros((batch, 50)))


def test_no_bias_leading_dims_and_empty_batch(rng, assert_close):
    weight = rng.standard_normal((12, 9)).astype(np.float32)
    mask = rng.random(weight.shape) > 0.6
    layer = SparseLinear.from_dense(weight, mask)
    x = rng.standard_normal((2, 3, 4, 9)).astype(np.float32)
    out = sparse_linear(x, layer)
    assert out.shape == (2, 3, 4, 12)
    assert_close(out.reshape(-1, 12), reference(x.reshape(-1, 9), weight, mask, None))
    assert sparse_linear(np.zeros((0, 9), np.float32), layer).shape == (0, 12)
    vector = rng.standard_normal(9).astype(np.float32)
    assert_close(sparse_linear(vector, layer), reference(vector[None], weight, mask, None)[0])


@pytest.mark.parametrize("parallel", [False, True])
def test_non_contiguous_and_converted_inputs(rng, assert_close, parallel):
    weight = rng.standard_normal((20, 32)).astype(np.float32)
    mask = rng.random(weight.shape) > 0.7
    layer = SparseLinear.from_dense(weight, mask)
    base = rng.standard_normal((32, 48)).astype(np.float32)
    x = base.T  # (48, 32), Fortran-ordered view
    assert not x.flags.c_contiguous
    expected = reference(np.ascontiguousarray(x), weight, mask, None)
    assert_close(sparse_linear(x, layer, parallel=parallel), expected)
    strided = np.ascontiguousarray(np.repeat(x, 2, axis=0))[::2]  # every other row
    assert_close(sparse_linear(strided, layer, parallel=parallel), expected)
    assert_close(sparse_linear(x.astype(np.float64), layer, parallel=parallel), expected)
    torch_view = torch.from_numpy(base).t()
    result = sparse_linear(torch_view, layer, parallel=parallel)
    assert isinstance(result, torch.Tensor) and result.dtype == torch.float32
    assert_close(result.numpy(), expected)


def test_torch_weight_mask_and_bias_are_accepted(rng, assert_close):
    weight = torch.randn(16, 24, generator=torch.Generator().manual_seed(1))
    mask = torch.rand(16, 24, generator=torch.Generator().manual_seed(2)) > 0.8
    bias = torch.randn(16, generator=torch.Generator().manual_seed(3))
    layer = SparseLinear.from_dense(weight, mask, bias)
    x = torch.randn(5, 24, generator=torch.Generator().manual_seed(4))
    expected = F.linear(x, weight * mask, bias)
    assert_close(layer(x).numpy(), expected.numpy())
    assert_close(sparse_linear(x, layer, backend="torch").numpy(), expected.numpy())


def test_csr_round_trip_and_handmade_csr(rng, assert_close):
    weight = rng.standard_normal((9, 11)).astype(np.float32)
    mask = rng.random(weight.shape) > 0.5
    csr = CSRMatrix.from_dense(weight, mask)
    assert_close(csr.to_dense(), np.where(mask, weight, 0))
    assert csr.nnz == int(np.count_nonzero(mask)) and csr.indices.dtype == np.int32
    handmade = CSRMatrix(data=[1.0, 2.0, 3.0], indices=[2, 0, 1], indptr=[0, 1, 1, 3],
                         shape=(3, 4))
    x = rng.standard_normal((4, 4)).astype(np.float32)
    out = sparse_linear(x, SparseLinear.from_csr(handmade))
    assert_close(out, x @ handmade.to_dense().T)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("batch", [3, 70])
def test_many_column_panels_and_row_blocks(rng, random_masked, assert_close, monkeypatch, batch,
                                           parallel):
    """Small panels (as for a very wide layer) and several row blocks give the same result."""
    monkeypatch.setattr(spmm, "PANEL_BYTES", 4096)  # 64 or fewer columns per panel
    rows = 2 * spmm.ROW_BLOCK + 37
    weight, mask = random_masked(rng, (rows, 300), 0.8)
    mask[:, 100:200] = False  # whole panels without a nonzero
    bias = rng.standard_normal(rows).astype(np.float32)
    x = rng.standard_normal((batch, 300)).astype(np.float32)
    layer = SparseLinear.from_dense(weight, mask, bias)
    out = sparse_linear(x, layer, parallel=parallel)
    assert_close(out, reference(x, weight, mask, bias))
