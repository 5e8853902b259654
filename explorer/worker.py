"""One compute worker per session: the latest request wins, stale ones are dropped."""

from __future__ import annotations

import threading
from typing import Any, Callable


class LatestWorker:
    """Runs submitted jobs one at a time on its own thread; only the newest waiting job runs.

    ``submit(job, on_done, on_error)`` replaces any job still waiting. A result is delivered only
    if no newer job was submitted meanwhile, so a view never shows a stale answer. Callbacks run
    on the worker thread: views hand them to their UI loop themselves. The thread starts with the
    first job: a session has a dozen workers (one per view and section), most never used.
    """

    def __init__(self, name: str = "prunescope-worker") -> None:
        self._cond = threading.Condition()
        self._pending: tuple[int, Callable[[], Any], Callable, Callable | None] | None = None
        self._generation = 0
        self._closed = False
        self._busy = False
        self._name = name
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], Any], on_done: Callable[[Any], None],
               on_error: Callable[[BaseException], None] | None = None) -> int:
        """Queue ``job`` in place of any waiting one; returns its generation number."""
        with self._cond:
            if self._closed:
                raise RuntimeError("worker is closed")
            self._generation += 1
            self._pending = (self._generation, job, on_done, on_error)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
            return self._generation

    def is_current(self, generation: int) -> bool:
        """Whether ``generation`` is still the newest submitted job."""
        return generation == self._generation

    @property
    def idle(self) -> bool:
        """No job running and none waiting."""
        with self._cond:
            return self._pending is None and not self._busy

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until idle (for tests and scripts); returns whether it became idle in time."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def close(self) -> None:
        """Stop the thread after the running job; waiting jobs are dropped."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._closed:
                    return
                generation, job, on_done, on_error = self._pending
                self._pending = None
                self._busy = True
            try:
                result = job()
            except BaseException as err:  # noqa: BLE001 - reported to the view, never kills the worker
                if on_error is not None and self.is_current(generation):
                    on_error(err)
            else:
                if self.is_current(generation):
                    on_done(result)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
