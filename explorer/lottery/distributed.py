"""Where a ticket search's independent trainings run: inline, or on Dask (dask.distributed).

``client=None`` runs serially in this process; ``'local'`` starts an embedded
``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` for the search; a scheduler
address string connects to an existing cluster; a ``distributed.Client`` is used as given. Tasks
are plain functions of picklable values (modules, state dicts, tensors), and every training
runs single-threaded and deterministic, so a Dask run equals the serial run tensor for tensor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Callable, Iterator

#: Seconds between checks for finished tasks (and for a cancel request).
POLL_S = 0.02

#: Environment of embedded workers, set before they import torch or numba.
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "NUMBA_THREADING_LAYER": "workqueue",
}


def _setup_worker_threads() -> None:
    """One torch thread and a fork-safe, single-threaded Numba per worker process."""
    import torch

    torch.set_num_threads(1)
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency
        return
    with contextlib.suppress(Exception):  # only possible before numba's first parallel launch
        numba.config.THREADING_LAYER = "workqueue"
    with contextlib.suppress(Exception):
        numba.set_num_threads(1)


def worker_plugin():
    """A ``distributed.WorkerPlugin`` that sets torch and Numba threads when a worker starts."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class ThreadsPlugin(WorkerPlugin):
        name = "prunescope-threads"

        def setup(self, worker) -> None:
            _setup_worker_threads()

    return ThreadsPlugin()


class SerialExecutor:
    """Runs submitted tasks in this process, in submission order, when their results are asked for."""

    #: Tasks run in this process (so they may be handed a ``threading.Event`` to cancel mid-training).
    in_process = True

    def __init__(self) -> None:
        self._queue: list[tuple[int, Callable, tuple]] = []
        self._next = 0

    def put(self, obj: Any) -> Any:
        return obj

    def submit(self, fn: Callable, *args: Any) -> int:
        self._next += 1
        self._queue.append((self._next, fn, args))
        return self._next

    def pending(self) -> int:
        return len(self._queue)

    def next_done(self, cancel=None) -> tuple[int, Any]:
        handle, fn, args = self._queue.pop(0)
        return handle, fn(*args)

    def cancel_all(self) -> None:
        self._queue.clear()


class DaskExecutor:
    """Submits tasks to a Dask client and hands back results as they finish."""

    in_process = False

    def __init__(self, client) -> None:
        self.client = client
        self._futures: dict[Any, int] = {}
        self._next = 0

    def put(self, obj: Any) -> Any:
        """Send ``obj`` to the workers once (a future passed to every task instead of the value)."""
        return self.client.scatter([obj], broadcast=True, hash=False)[0]

    def submit(self, fn: Callable, *args: Any) -> int:
        self._next += 1
        fut = self.client.submit(fn, *args, pure=False)
        self._futures[fut] = self._next
        return self._next

    def pending(self) -> int:
        return len(self._futures)

    def next_done(self, cancel=None) -> tuple[int, Any]:
        """The earliest-submitted finished task and its result (polls, so ``cancel`` is seen quickly)."""
        from prunescope.explorer.lottery.trainer import Cancelled, is_cancelled

        while True:
            if is_cancelled(cancel):
                raise Cancelled("ticket search cancelled")
            done = [f for f in self._futures if f.done()]
            if done:
                break
            time.sleep(POLL_S)
        fut = min(done, key=lambda f: self._futures[f])
        handle = self._futures.pop(fut)
        return handle, fut.result()

    def cancel_all(self) -> None:
        if self._futures:
            self.client.cancel(list(self._futures))
        self._futures.clear()


@contextlib.contextmanager
def executor_for(client: Any) -> Iterator[SerialExecutor | DaskExecutor]:
    """The executor for ``client`` (None, 'local', a scheduler address or a Client); closes what it opened."""
    if client is None:
        yield SerialExecutor()
        return
    from distributed import Client

    if isinstance(client, Client):
        client.register_plugin(worker_plugin())
        yield DaskExecutor(client)
        return
    if client == "local":
        with local_client() as c:
            yield DaskExecutor(c)
        return
    if isinstance(client, str):
        try:
            c = Client(client, timeout="10s", set_as_default=False)
        except OSError as exc:
            raise ValueError(f"cannot connect to a Dask scheduler at {client!r}: {exc}") from None
        try:
            c.register_plugin(worker_plugin())
            yield DaskExecutor(c)
        finally:
            c.close()
        return
    raise ValueError(f"client must be None, 'local', a scheduler address or a distributed.Client, got {client!r}")


@contextlib.contextmanager
def local_client(n_workers: int = 2) -> Iterator[Any]:
    """An embedded ``LocalCluster`` of ``n_workers`` single-threaded worker processes and its Client."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
        env=dict(WORKER_ENV), silence_logs=logging.ERROR,
    )
    client = Client(cluster, set_as_default=False)
    try:
        client.register_plugin(worker_plugin())
        yield client
    finally:
        client.close()
        cluster.close()
