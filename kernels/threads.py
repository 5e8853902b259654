"""Thread safety of the parallel (``prange``) kernels.

Numba's ``workqueue`` threading layer aborts the whole process when parallel kernels are entered
from two threads at once, and the Panel server calls from several threads. Numba's default
choice is ``tbb``, then ``omp``, then ``workqueue``; the first two are thread-safe (this venv gets
``omp``: no tbb package, and GNU OpenMP from libgomp). We do not change Numba's process-global
configuration. Instead every call of a parallel kernel goes through :func:`parallel_section`,
which holds one process-wide lock:

* under ``workqueue`` it is what keeps the process alive;
* under ``tbb``/``omp`` it keeps latency predictable: two concurrent parallel kernels would each
  start a full team of threads and oversubscribe the cores (OpenMP threads also spin while they
  wait), so running them one after the other is as fast in total and never slower for either.

Serial kernels release the GIL and take no lock, so sessions running small layers never wait.
Other Numba-parallel code in the process (UMAP's layouts) should enter :func:`parallel_section`
too when :func:`threading_layer` reports ``workqueue``.

Caveat of ``omp`` on Linux (GNU OpenMP): a process forked *after* a parallel kernel ran must not
run a parallel kernel itself (Numba terminates it); use the ``spawn`` or ``forkserver`` start
method for worker processes.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import numba

_PARALLEL_LOCK = threading.RLock()  # process-wide like Numba's thread pool; re-entrant, so
# code that holds the section (say, around a UMAP fit) may call a parallel kernel inside it
THREAD_SAFE_LAYERS = ("tbb", "omp")


@contextmanager
def parallel_section() -> Iterator[None]:
    """Hold the process-wide (re-entrant) lock under which every parallel kernel runs."""
    with _PARALLEL_LOCK:
        yield


def threading_layer() -> str:
    """Numba's active threading layer (``tbb``, ``omp``, ``workqueue``), or ``not started``."""
    try:
        return str(numba.threading_layer())
    except ValueError:  # no parallel kernel has run yet in this process
        return "not started"


def num_threads() -> int:
    """Threads a parallel kernel uses (``numba.get_num_threads()``, set by NUMBA_NUM_THREADS)."""
    return int(numba.get_num_threads())
