"""Numba CUDA kernels: on the CUDA simulator in a subprocess (CI), on a real GPU when present.

``NUMBA_ENABLE_CUDASIM=1`` must be set before Numba is first imported, so the simulator checks
run in a fresh interpreter; shapes are small and nothing is timed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

SIMULATED_CHECKS = r"""
import numpy as np, torch
from prunescope.kernels import (NMLinear, SparseLinear, available_backends, nm_linear,
                                sparse_linear)
from prunescope.kernels.cuda import launch_shape
assert "numba-cuda" in available_backends(), available_backends()
def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / max(np.linalg.norm(b), 1e-30))
rng = np.random.default_rng(7)
worst = 0.0
for batch, rows, cols in [(1, 5, 8), (3, 9, 12), (33, 4, 16)]:
    weight = rng.standard_normal((rows, cols)).astype(np.float32)
    mask = rng.random(weight.shape) > 0.5
    mask[1] = False  # an empty row
    bias = rng.standard_normal(rows).astype(np.float32)
    x = rng.standard_normal((batch, cols)).astype(np.float32)
    expected = x @ np.where(mask, weight, 0).T + bias
    worst = max(worst, rel(sparse_linear(x, SparseLinear.from_dense(weight, mask, bias),
                                         backend="numba-cuda"), expected))
    for n, m in [(2, 4), (1, 2)]:
        nm_mask = np.zeros_like(mask)
        nm_mask[:, ::m] = True
        if n == 2:
            nm_mask[:, 3::m] = True
        layer = NMLinear.from_dense(weight, nm_mask, n, m, bias)
        got = nm_linear(torch.from_numpy(x), layer, backend="numba-cuda")
        assert isinstance(got, torch.Tensor)
        worst = max(worst, rel(got.numpy(), x @ np.where(nm_mask, weight, 0).T + bias))
zero = SparseLinear.from_dense(np.ones((3, 4), np.float32), np.zeros((3, 4), bool))
assert not sparse_linear(np.ones((2, 4), np.float32), zero, backend="numba-cuda").any()
assert launch_shape(1, 100) == ((1, 1), (1, 256))
assert launch_shape(40, 100) == ((2, 13), (32, 8))
print("worst relative error", worst)
assert worst <= 1e-5
"""


def test_cuda_kernels_on_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, "-c", SIMULATED_CHECKS], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]


def _gpu_present() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    from prunescope.kernels.cuda import is_available

    return is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_present(), reason="needs a real CUDA GPU")
@pytest.mark.parametrize("batch", [1, 32, 256])
def test_cuda_kernels_on_a_gpu(rng, assert_close, batch):
    import torch

    from prunescope.kernels import NMLinear, SparseLinear, nm_linear, sparse_linear

    weight = rng.standard_normal((512, 256)).astype(np.float32)
    mask = rng.random(weight.shape) > 0.9
    bias = rng.standard_normal(512).astype(np.float32)
    x = rng.standard_normal((batch, 256)).astype(np.float32)
    layer = SparseLinear.from_dense(weight, mask, bias)
    assert_close(sparse_linear(x, layer, backend="numba-cuda"),
                 x @ np.where(mask, weight, 0).T + bias)
    nm_mask = np.zeros_like(mask)
    nm_mask[:, ::4] = nm_mask[:, 1::4] = True
    nm_layer = NMLinear.from_dense(weight, nm_mask, 2, 4, bias)
    expected = x @ np.where(nm_mask, weight, 0).T + bias
    assert_close(nm_linear(x, nm_layer, backend="numba-cuda"), expected)
    if torch.cuda.is_available():
        on_gpu = nm_linear(torch.from_numpy(x).cuda(), nm_layer)  # auto picks numba-cuda
        assert on_gpu.device.type == "cuda"
        assert_close(on_gpu.cpu().numpy(), expected)
