"""Which backends the app offers, and the one JIT warm-up of the Numba kernels that sessions share.

The kernels compile once per process (or load from Numba's on-disk cache). Under ``panel serve``
``explorer/app_hooks.py`` starts that when the server loads; every session then waits for the
same future on its worker thread, never on the event loop, so a slider never compiles anything.
Outside a server (tests, notebooks) the first view that needs a Numba backend starts it. The
future is kept in ``pn.state.cache``, Panel's store for what the sessions of a process share.
"""

from __future__ import annotations

from concurrent.futures import Future

import panel as pn

from prunescope.explorer.state import BACKENDS

#: Key of the warm-up future in ``pn.state.cache``.
WARMUP_KEY = "prunescope.kernels.warmup"

#: What each backend means, for the note under the sidebar's select.
BACKEND_NOTES = {
    "torch": "Dense PyTorch with masked weights (the reference).",
    "numba-cpu": "The pruned layers run on Prunescope's Numba CPU sparse kernels.",
    "numba-cuda": "The pruned linear layers run on the Numba CUDA kernels (convolutions on the CPU kernels).",
}


def kernel_warmup() -> Future:
    """The process's warm-up of the Numba CPU kernels, started on first call (returns at once).

    Two sessions starting it at the same moment may each start one; the second only re-runs
    kernels that are already compiled, and one future is kept. A warm-up that failed is started
    again by the next call: its error reaches the job that waited for it, and is not kept for
    the life of the server.
    """
    future = pn.state.cache.get(WARMUP_KEY)
    if future is None or (future.done() and future.exception() is not None):
        from prunescope.kernels import warmup

        fresh = warmup(background=True)
        if future is None:
            future = pn.state.cache.setdefault(WARMUP_KEY, fresh)
        else:
            future = pn.state.cache[WARMUP_KEY] = fresh
    return future


def warmup_for(backend: str) -> Future | None:
    """The warm-up a job on ``backend`` must wait for (``None`` for torch, which compiles nothing)."""
    return None if backend == "torch" else kernel_warmup()


def evaluation_backends() -> list[str]:
    """Backends that can evaluate here, in the state's order (torch, numba-cpu, numba-cuda)."""
    from prunescope.kernels import available_backends

    found = set(available_backends())
    return [name for name in BACKENDS if name in found]


def kernel_backends() -> list[str]:
    """The sparse-kernel backends available here (what a speed measurement can run on)."""
    return [name for name in evaluation_backends() if name != "torch"]
