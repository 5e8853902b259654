"""Parallel kernels entered from several Python threads at once: correct results, no abort."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from prunescope.kernels import SparseLinear, parallel_section, sparse_linear, threading_layer

CONCURRENT_CALLS = r"""
import sys, threading
import numpy as np
from prunescope.kernels import SparseLinear, NMLinear, sparse_linear, nm_linear, threading_layer
rng = np.random.default_rng(0)
weight = rng.standard_normal((256, 128)).astype(np.float32)
mask = rng.random(weight.shape) > 0.8
nm_mask = np.zeros(weight.shape, bool); nm_mask[:, ::2] = True
layer = SparseLinear.from_dense(weight, mask)
nm_layer = NMLinear.from_dense(weight, nm_mask, 2, 4)
inputs = [rng.standard_normal((b, 128)).astype(np.float32) for b in (1, 48)]
barrier = threading.Barrier(2)
failures = []
def worker(seed):
    barrier.wait()
    for i in range(40):
        x = inputs[(i + seed) % 2]
        y = sparse_linear(x, layer, parallel=True)
        z = nm_linear(x, nm_layer, parallel=True)
        if not (np.allclose(y, x @ (weight * mask).T, rtol=1e-4, atol=1e-4)
                and np.allclose(z, x @ (weight * nm_mask).T, rtol=1e-4, atol=1e-4)):
            failures.append(i)
threads = [threading.Thread(target=worker, args=(s,)) for s in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
print("ok" if not failures else f"wrong results {failures}", threading_layer())
"""


def test_two_threads_share_the_parallel_kernel(rng, assert_close):
    weight = rng.standard_normal((300, 200)).astype(np.float32)
    mask = rng.random(weight.shape) > 0.9
    layer = SparseLinear.from_dense(weight, mask)
    inputs = [rng.standard_normal((batch, 200)).astype(np.float32) for batch in (1, 64)]
    expected = [x @ np.where(mask, weight, 0).T for x in inputs]
    barrier = threading.Barrier(2)
    results: dict[int, list[np.ndarray]] = {0: [], 1: []}

    def worker(which: int) -> None:
        barrier.wait()
        for i in range(30):
            results[which].append(sparse_linear(inputs[(i + which) % 2], layer, parallel=True))

    threads = [threading.Thread(target=worker, args=(w,)) for w in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for which in (0, 1):
        assert len(results[which]) == 30
        for i, out in enumerate(results[which]):
            assert_close(out, expected[(i + which) % 2])
    assert threading_layer() in ("tbb", "omp", "workqueue")


@pytest.mark.parametrize("layer_name", ["default", "workqueue"])
def test_concurrent_calls_survive_in_a_fresh_process(layer_name):
    """Under ``workqueue`` (which aborts on concurrent entry) the dispatch lock must hold."""
    env = dict(os.environ)
    env.pop("NUMBA_THREADING_LAYER", None)
    if layer_name != "default":
        env["NUMBA_THREADING_LAYER"] = layer_name
    done = subprocess.run([sys.executable, "-c", CONCURRENT_CALLS], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok"), done.stdout
    if layer_name != "default":
        assert done.stdout.split()[-1] == layer_name


def test_parallel_section_is_one_process_wide_lock():
    entered = threading.Event()

    def enter() -> None:
        with parallel_section():
            entered.set()

    with parallel_section():
        other = threading.Thread(target=enter)
        other.start()
        assert not entered.wait(timeout=0.2)  # blocked while this thread holds the section
    other.join(timeout=5)
    assert entered.is_set()
