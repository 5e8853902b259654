"""N:M packing and the N:M matmul against the dense torch reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prunescope.kernels import NMLinear, NMPacked, nm_linear, pack_nm, spmm


def nm_magnitude_mask(weight: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the ``n`` largest-magnitude weights of every group of ``m`` consecutive inputs."""
    rows, cols = weight.shape
    groups = np.abs(weight).reshape(rows, cols // m, m)
    order = np.argsort(-groups, axis=2, kind="stable")[:, :, :n]
    mask = np.zeros_like(groups, dtype=bool)
    np.put_along_axis(mask, order, True, axis=2)
    return mask.reshape(rows, cols)


@pytest.mark.parametrize("n, m", [(2, 4), (1, 3), (3, 8), (1, 1), (4, 4)])
def test_pack_round_trip(rng, assert_close, n, m):
    weight = rng.standard_normal((10, 6 * m)).astype(np.float32)
    mask = nm_magnitude_mask(weight, n, m)
    packed = pack_nm(weight, mask, n, m)
    assert packed.values.shape == (10, 6 * n) and packed.values.dtype == np.float32
    assert packed.offsets.dtype == np.uint8 and packed.offsets.max() < m
    assert_close(packed.to_dense(), np.where(mask, weight, 0))


def test_pack_groups_with_fewer_than_n_kept(rng, assert_close):
    weight = rng.standard_normal((4, 16)).astype(np.float32)
    mask = nm_magnitude_mask(weight, 2, 4)
    mask[0] = False  # an empty row
    mask[1, :4] = [False, False, True, False]  # a group with one kept weight
    packed = pack_nm(weight, mask, 2, 4)
    assert_close(packed.to_dense(), np.where(mask, weight, 0))
    x = rng.standard_normal((3, 16)).astype(np.float32)
    out = nm_linear(x, NMLinear(packed, None))
    assert_close(out, x @ np.where(mask, weight, 0).T)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("batch", [1, 2, 33, 64, 256])
@pytest.mark.parametrize("n, m", [(2, 4), (1, 3), (3, 8)])
def test_nm_linear_matches_torch(rng, assert_close, n, m, batch, parallel):
    out_features, in_features = 48, 24 * m
    weight = rng.standard_normal((out_features, in_features)).astype(np.float32)
    mask = nm_magnitude_mask(weight, n, m)
    bias = rng.standard_normal(out_features).astype(np.float32)
    layer = NMLinear.from_dense(weight, mask, n, m, bias)
    x = rng.standard_normal((batch, in_features)).astype(np.float32)
    expected = F.linear(torch.from_numpy(x), torch.from_numpy(np.where(mask, weight, 0)),
                        torch.from_numpy(bias)).numpy()
    assert_close(nm_linear(x, layer, backend="numba-cpu", parallel=parallel), expected)
    assert_close(nm_linear(x, layer, backend="torch"), expected)


def test_nm_non_contiguous_torch_input_and_all_zero(rng, assert_close):
    weight = rng.standard_normal((8, 32)).astype(np.float32)
    mask = nm_magnitude_mask(weight, 2, 4)
    layer = NMLinear.from_dense(torch.from_numpy(weight), torch.from_numpy(mask), 2, 4)
    x = torch.from_numpy(rng.standard_normal((32, 6)).astype(np.float32)).t()  # (6, 32) view
    result = layer(x)
    assert isinstance(result, torch.Tensor)
    assert_close(result.numpy(), x.numpy() @ np.where(mask, weight, 0).T)
    zero = NMLinear.from_dense(weight, np.zeros_like(mask), 2, 4)
    assert_close(zero(x.contiguous().numpy()), np.zeros((6, 8)))


def test_pack_nm_rejects_bad_patterns(rng):
    weight = rng.standard_normal((3, 8)).astype(np.float32)
    mask = np.zeros((3, 8), bool)
    mask[2, 4:7] = True  # three kept in one group of four
    with pytest.raises(ValueError, match=r"not 2:4 sparse: row 2, input group 1 .* keeps 3"):
        pack_nm(weight, mask, 2, 4)
    with pytest.raises(ValueError, match="multiple of the N:M group size m=3"):
        pack_nm(weight, None, 1, 3)
    with pytest.raises(ValueError, match="n must be in 1..m=4"):
        pack_nm(weight, mask, 5, 4)
    with pytest.raises(ValueError, match="mask shape"):
        pack_nm(weight, mask[:, :4], 2, 4)
    with pytest.raises(ValueError, match="offsets must be uint8"):
        NMPacked(np.zeros((1, 2), np.float32), np.zeros((1, 2), np.int64), 2, 4, 4)
    with pytest.raises(ValueError, match="offset out of range"):
        NMPacked(np.zeros((1, 2), np.float32), np.full((1, 2), 4, np.uint8), 2, 4, 4)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("n, m", [(2, 4), (1, 3), (3, 8)])
def test_nm_many_column_panels(rng, assert_close, monkeypatch, n, m, parallel):
    monkeypatch.setattr(spmm, "PANEL_BYTES", 4096)  # panels of a few groups each
    weight = rng.standard_normal((spmm.ROW_BLOCK + 40, 40 * m)).astype(np.float32)
    mask = nm_magnitude_mask(weight, n, m)
    x = rng.standard_normal((37, 40 * m)).astype(np.float32)
    layer = NMLinear.from_dense(weight, mask, n, m)
    assert_close(nm_linear(x, layer, parallel=parallel), x @ np.where(mask, weight, 0).T)
