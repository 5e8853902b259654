"""Channel-pruned layers compacted to smaller dense layers equal the masked dense layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prunescope.kernels import compact_conv2d, compact_linear


def test_compact_linear_equals_masked_dense(rng, assert_close):
    weight = rng.standard_normal((20, 12)).astype(np.float32)
    bias = rng.standard_normal(20).astype(np.float32)
    kept_out = np.array([0, 3, 4, 11, 19])
    kept_in = np.array([1, 2, 7, 10])
    x = rng.standard_normal((6, 12)).astype(np.float32)
    out_mask = np.isin(np.arange(20), kept_out)
    in_mask = np.isin(np.arange(12), kept_in)
    masked = F.linear(torch.from_numpy(x), torch.from_numpy(weight * np.outer(out_mask, in_mask)),
                      torch.from_numpy(bias * out_mask)).numpy()
    small_weight, small_bias = compact_linear(weight, bias, kept_out, kept_in)
    assert small_weight.shape == (5, 4) and small_bias.shape == (5,)
    small_out = x[:, kept_in] @ small_weight.T + small_bias
    full = np.zeros_like(masked)
    full[:, kept_out] = small_out
    assert_close(full, masked)


def test_compact_conv2d_equals_masked_dense(rng, assert_close):
    weight = rng.standard_normal((8, 6, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    kept_out, kept_in = [1, 2, 6], [0, 5]
    x = rng.standard_normal((2, 6, 7, 7)).astype(np.float32)
    out_mask = np.isin(np.arange(8), kept_out)
    in_mask = np.isin(np.arange(6), kept_in)
    channel_mask = np.outer(out_mask, in_mask)[:, :, None, None]
    masked = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight * channel_mask),
                      torch.from_numpy(bias * out_mask), padding=1).numpy()
    small_weight, small_bias = compact_conv2d(torch.from_numpy(weight), torch.from_numpy(bias),
                                              kept_out, kept_in)
    assert isinstance(small_weight, torch.Tensor) and small_weight.shape == (3, 2, 3, 3)
    small_out = F.conv2d(torch.from_numpy(x[:, kept_in]), small_weight, small_bias, padding=1)
    full = np.zeros_like(masked)
    full[:, kept_out] = small_out.numpy()
    assert_close(full, masked)


def test_compact_keeps_all_with_none_and_validates_indices(rng):
    weight = rng.standard_normal((4, 3)).astype(np.float32)
    same, no_bias = compact_linear(weight, None, None, None)
    assert no_bias is None and np.array_equal(same, weight)
    with pytest.raises(ValueError, match=r"kept_out\[1\] = 4 is out of range, allowed 0 <= index < 4"):
        compact_linear(weight, None, [0, 4], None)
    with pytest.raises(ValueError, match="must not repeat"):
        compact_linear(weight, None, None, [1, 1])
    with pytest.raises(ValueError, match="boolean array"):
        compact_linear(weight, None, np.ones(4, bool), None)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        compact_linear(weight, np.zeros(3, np.float32), None, None)
