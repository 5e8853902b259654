"""Bad input gives a ValueError that names the bad value and what is allowed, never a crash."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunescope.kernels import (
    CSRMatrix,
    NMLinear,
    SparseLinear,
    available_backends,
    nm_linear,
    sparse_linear,
)


@pytest.fixture
def layer(rng) -> SparseLinear:
    weight = rng.standard_normal((6, 8)).astype(np.float32)
    return SparseLinear.from_dense(weight, rng.random((6, 8)) > 0.5)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 8), np.complex64), "real floating or integer dtype .* got dtype complex64"),
    (np.zeros((2, 8), bool), "got dtype bool"),
    (np.array([["a"] * 8]), "got dtype <U1"),
    (np.zeros((2, 8), object), "got dtype object"),
    ("text", "got dtype <U4"),
    ({"x": 1}, "numpy array or torch tensor, got dict"),
    (torch.zeros(2, 8, dtype=torch.complex64), "got dtype complex64"),
])
def test_wrong_dtype(layer, bad, message):
    with pytest.raises(ValueError, match=message):
        sparse_linear(bad, layer)


@pytest.mark.parametrize("shape", [(2, 7), (9,), (3, 8, 2), ()])
def test_shape_mismatch(layer, shape):
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 8\) for in_features=8|"
                                         r"at least 1 dimension"):
        sparse_linear(np.zeros(shape, np.float32), layer)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values(rng, layer, value):
    x = rng.standard_normal((3, 8)).astype(np.float32)
    x[1, 5] = value
    with pytest.raises(ValueError, match=rf"x must be finite, but x\[1, 5\] = {value}"):
        sparse_linear(x, layer)
    weight = rng.standard_normal((6, 8)).astype(np.float32)
    weight[2, 3] = value
    with pytest.raises(ValueError, match=r"weight must be finite, but weight\[2, 3\]"):
        SparseLinear.from_dense(weight)
    bias = np.zeros(6, np.float32)
    bias[4] = value
    with pytest.raises(ValueError, match=r"bias must be finite, but bias\[4\]"):
        SparseLinear.from_dense(np.ones((6, 8), np.float32), None, bias)


def test_mask_shape_and_values(rng):
    weight = rng.standard_normal((6, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"mask shape \(8, 6\) must equal the weight shape \(6, 8\)"):
        SparseLinear.from_dense(weight, np.ones((8, 6), bool))
    with pytest.raises(ValueError, match="boolean or 0/1 numbers, found the value 2"):
        SparseLinear.from_dense(weight, np.full((6, 8), 2))
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\), got \(5,\)"):
        SparseLinear.from_dense(weight, None, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        SparseLinear.from_dense(weight[None])


@pytest.mark.parametrize("indices, indptr, message", [
    ([0, 9, 1], [0, 2, 3], r"indices\[1\] = 9, allowed 0 <= index < 4"),
    ([0, -1, 1], [0, 2, 3], r"indices\[1\] = -1, allowed 0 <= index < 4"),
    ([0, 1, 1], [0, 2, 1], r"non-decreasing, but indptr\[2\] = 1 < indptr\[1\] = 2"),
    ([0, 1, 1], [0, 2, 4], "both have indptr\\[-1\\] = 4 entries"),
    ([0, 1, 1], [1, 2, 3], r"indptr\[0\] must be 0"),
    ([0, 1, 1], [0, 3], "rows \\+ 1 = 3 entries"),
    ([0.0, 1.0, 1.0], [0, 2, 3], "indices must hold integers"),
    ([0, 1, 2**40], [0, 2, 3], "must fit in int32"),
])
def test_handmade_csr_is_checked(indices, indptr, message):
    with pytest.raises(ValueError, match=message):
        CSRMatrix(np.ones(3, np.float32), np.asarray(indices), np.asarray(indptr), (2, 4))


def test_backend_and_layer_type(layer, rng):
    x = rng.standard_normal((2, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="backend='cupy' is not supported here; allowed"):
        sparse_linear(x, layer, backend="cupy")
    if "numba-cuda" not in available_backends():
        with pytest.raises(ValueError, match="'numba-cuda' is not available on this machine"):
            sparse_linear(x, layer, backend="numba-cuda")
    with pytest.raises(ValueError, match="layer must be an NMLinear, got SparseLinear"):
        nm_linear(x, layer)
    with pytest.raises(ValueError, match="layer must be a SparseLinear, got NMLinear"):
        sparse_linear(x, NMLinear.from_dense(np.ones((2, 8), np.float32), None, 4, 4))
