"""One view component for long work: Run / Cancel buttons, a progress bar and a status line.

Every long computation of the app (the sensitivity sweep, the speed measurement, UMAP fits,
ticket searches, accuracy-vs-budget curves) is a job function ``fn(progress, cancel) -> result``
(see :mod:`prunescope.explorer.core.jobs`). :class:`JobPanel` runs it on its own worker thread
(inline inside a Jupyter kernel, where threads cannot update the page), throttles progress to
whole percents, and hands the result or the error back on the session's event loop.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import panel as pn

from prunescope.explorer.app.dispatch import SessionDispatcher, session_callback
from prunescope.explorer.core.jobs import Cancelled
from prunescope.explorer.worker import LatestWorker

_STATUS = {"font-size": "13px", "color": "#374151"}


class JobOwner:
    """The part every view with one :class:`JobPanel` shares: ``running``, ``cancel``,
    ``wait_idle`` and ``close`` go to ``self.job``, and its buttons, progress bar and status
    line are the view's own attributes (tests and the app reach them there)."""

    job: "JobPanel"

    def _own_job(self, job: "JobPanel") -> None:
        self.job = job
        self.run_button, self.cancel_button = job.run_button, job.cancel_button
        self.progress, self.status = job.progress, job.status

    @property
    def running(self) -> bool:
        """Whether the job is under way (its Cancel button is live)."""
        return self.job.running

    def cancel(self) -> None:
        """Stop the running job at its next check."""
        self.job.cancel()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no job runs (tests and scripts)."""
        return self.job.wait_idle(timeout)

    def close(self) -> None:
        """Stop the job and its worker thread (session ended)."""
        self.job.close()


class JobPanel(pn.viewable.Viewer):
    """Run/cancel/progress/status of one kind of job; at most one runs at a time.

    ``start(fn, on_done, running_text)`` starts ``fn(progress, cancel)``; ``on_done(result)`` runs
    on the session's loop when it finishes; a failure goes to ``on_error`` (the app's alert) and a
    cancel says so in the status line. ``on_run`` is called when the user presses Run.
    """

    def __init__(self, dispatch: SessionDispatcher, on_error: Callable[[BaseException], None], *,
                 run_label: str, name: str, on_run: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._dispatch = dispatch
        self._on_error = on_error
        self._worker = LatestWorker(name=f"prunescope-{name}")
        self._cancel: threading.Event | None = None
        self._percent = -1
        self.run_button = pn.widgets.Button(name=run_label, button_type="primary", width=190, margin=(10, 10, 5, 10))
        self.cancel_button = pn.widgets.Button(name="Cancel", width=90, disabled=True, margin=(10, 10, 5, 0))
        self.progress = pn.indicators.Progress(value=0, max=100, width=160, visible=False, margin=(20, 10, 5, 10))
        self.status = pn.pane.HTML("", margin=(14, 10, 5, 10), sizing_mode="stretch_width", styles=_STATUS)
        if on_run is not None:
            self.run_button.on_click(session_callback(lambda event: on_run()))
        self.cancel_button.on_click(session_callback(lambda event: self.cancel()))

    @property
    def running(self) -> bool:
        return self._cancel is not None

    def start(self, fn: Callable[[Callable[[int, int], None], threading.Event], Any],
              on_done: Callable[[Any], None], running_text: str) -> bool:
        """Start ``fn`` unless a job runs; returns whether it started."""
        if self.running:
            return False
        cancel = threading.Event()
        self._cancel, self._percent = cancel, -1
        self.run_button.disabled = True
        self.cancel_button.disabled = False
        self.progress.param.update(value=0, visible=True)
        self.status.object = running_text

        def progress(done: int, total: int) -> None:  # on the worker thread
            percent = int(100 * done / max(total, 1))
            if percent != self._percent:
                self._percent = percent
                self._dispatch(lambda: self._show_progress(cancel, percent, done, total))

        self._dispatch.submit(
            self._worker, lambda: fn(progress, cancel),
            on_done=lambda result: self._finished(cancel, on_done, result),
            on_error=lambda err: self._failed(cancel, err),
        )
        return True

    def cancel(self) -> None:
        """Ask the running job to stop at its next check."""
        if self._cancel is not None:
            self._cancel.set()
            self.cancel_button.disabled = True
            self.status.object = "Cancelling…"

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no job runs (tests and scripts)."""
        return self._worker.wait_idle(timeout)

    def close(self) -> None:
        """Stop the job and the worker thread (session ended)."""
        if self._cancel is not None:
            self._cancel.set()
        self._worker.close()

    def _show_progress(self, cancel: threading.Event, percent: int, done: int, total: int) -> None:
        if self._cancel is cancel and not cancel.is_set():
            self.progress.value = percent
            self.status.object = f"Running: {done} of {total}"

    def _idle(self) -> None:
        self._cancel = None
        self.run_button.disabled = False
        self.cancel_button.disabled = True
        self.progress.visible = False

    def _finished(self, cancel: threading.Event, on_done: Callable[[Any], None], result: Any) -> None:
        if self._cancel is not cancel:
            return
        self._idle()
        on_done(result)

    def _failed(self, cancel: threading.Event, err: BaseException) -> None:
        if self._cancel is not cancel:
            return
        self._idle()
        if isinstance(err, Cancelled):
            self.status.object = f"Cancelled: {err}."
        else:
            self.status.object = "Failed (see the alert above)."
            self._on_error(err)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.FlexBox(self.run_button, self.cancel_button, self.progress, self.status,
                          sizing_mode="stretch_width", flex_wrap="wrap", align_items="center")
