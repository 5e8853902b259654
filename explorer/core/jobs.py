"""One job mechanism for long work (sweeps, speed measurements, UMAP fits, ticket searches).

A job is a function ``fn(progress, cancel) -> result``: it reports ``progress(done, total)`` and
checks ``cancel`` (a ``threading.Event``), raising :class:`Cancelled` when it is set. A
:class:`Job` runs one such function inline or on a thread and records its lifecycle
(pending, running, done, failed, cancelled) for views to show.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

JobFn = Callable[[Callable[[int, int], None], threading.Event], Any]


class Cancelled(Exception):
    """Raised by long work when its ``cancel`` event is set."""


def check_cancel(cancel: threading.Event | None, what: str, done: int, total: int) -> None:
    """Raise :class:`Cancelled` naming how far ``what`` got, if ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} cancelled after {done} of {total} steps")


class Job:
    """A long computation with progress, cancel, error and result.

    ``on_change(job)`` is called (on the running thread) at every progress step and state
    change; views hand it to their own UI loop.
    """

    STATES = ("pending", "running", "done", "failed", "cancelled")

    def __init__(self, fn: JobFn, name: str = "job", on_change: Callable[["Job"], None] | None = None) -> None:
        self.fn, self.name, self.on_change = fn, name, on_change
        self.state = "pending"
        self.done = 0
        self.total = 0
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancel_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = threading.Event()

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = int(done), int(total)
        self._notify()

    def run(self) -> Any:
        """Run on the calling thread; returns the result (errors are recorded and re-raised)."""
        self.state = "running"
        self._notify()
        try:
            self.result = self.fn(self._progress, self.cancel_event)
        except Cancelled as err:
            self.state, self.error = "cancelled", err
        except BaseException as err:  # noqa: BLE001 - recorded for the view
            self.state, self.error = "failed", err
        else:
            self.state = "done"
        finally:
            self._finished.set()
            self._notify()
        if self.state == "failed":
            raise self.error  # type: ignore[misc]
        return self.result

    def start(self) -> "Job":
        """Run on a daemon thread; returns ``self`` at once."""
        def target() -> None:
            try:
                self.run()
            except BaseException:  # noqa: BLE001 - recorded in self.error
                pass

        self._thread = threading.Thread(target=target, name=f"prunescope-{self.name}", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the job to stop at its next check."""
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends; returns whether it did within ``timeout``."""
        return self._finished.wait(timeout)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")
