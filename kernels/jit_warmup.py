"""JIT warm-up: compile (or load from Numba's on-disk cache) every CPU kernel at start-up.

The app calls ``warmup(background=True)`` once when it starts and never compiles on a slider
move. Warm-up runs each kernel through the real dispatch on tiny inputs, so the compiled
signatures are exactly the ones later calls use.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np

from prunescope.kernels import conv, spmm
from prunescope.kernels.dispatch import nm_linear, sparse_conv2d, sparse_linear
from prunescope.kernels.layers import NMLinear, SparseConv2d, SparseLinear

CPU_KERNELS = (
    spmm.pack_batch_chunks, spmm.pack_batch_chunks_parallel,
    spmm.csr_spmm_serial, spmm.csr_spmm_parallel, spmm.csr_spmv_serial, spmm.csr_spmv_parallel,
    spmm.nm_spmm_serial, spmm.nm_spmm_parallel, spmm.nm_spmv_serial, spmm.nm_spmv_parallel,
    conv.csr_conv2d_serial, conv.csr_conv2d_parallel,
)


def _compile_all() -> None:
    """Call every CPU kernel variant once on tiny inputs."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 8)).astype(np.float32)
    mask = np.tile([True, False], (8, 4))
    csr_layer = SparseLinear.from_dense(weight, mask, np.zeros(8, np.float32))
    nm_layer = NMLinear.from_dense(weight, mask, 2, 4)
    conv_layer = SparseConv2d.from_dense(rng.standard_normal((2, 2, 3, 3)).astype(np.float32),
                                         padding=1)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 8)).astype(np.float32)
        for parallel in (False, True):
            sparse_linear(x, csr_layer, backend="numba-cpu", parallel=parallel)
            nm_linear(x, nm_layer, backend="numba-cpu", parallel=parallel)
    images = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    for parallel in (False, True):
        sparse_conv2d(images, conv_layer, backend="numba-cpu", parallel=parallel)


def warmup(background: bool = True) -> Future:
    """Compile or cache-load all CPU kernels; returns a ``Future`` that is done when warm.

    With ``background=True`` the work runs in a daemon thread and this returns at once: poll
    ``future.done()`` or block on ``future.result()`` (which re-raises a compile error).
    With ``background=False`` it returns a future that is already done.
    """
    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            _compile_all()
        except BaseException as error:  # handed to the caller through the future
            future.set_exception(error)
        else:
            future.set_result(None)

    if background:
        threading.Thread(target=run, name="prunescope-kernels-warmup", daemon=True).start()
    else:
        run()
    return future


def is_warm() -> bool:
    """True when every CPU kernel has a compiled (or cache-loaded) signature in this process."""
    return all(kernel.signatures for kernel in CPU_KERNELS)
