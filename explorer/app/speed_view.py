"""The Speed section: measure the sparse kernels against dense torch in the background, per layer
and whole model, and say so when the result no longer matches the setting."""

from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING, Callable

import panel as pn

from prunescope.explorer.app.backends import kernel_backends, warmup_for
from prunescope.explorer.app.dispatch import SessionDispatcher
from prunescope.explorer.app.speed_chart import SpeedChart
from prunescope.explorer.core.jobs import Cancelled
from prunescope.explorer.core.setting import Setting
from prunescope.explorer.pruning import get_method
from prunescope.explorer.worker import LatestWorker

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer
    from prunescope.explorer.sparse_exec import SpeedReport
    from prunescope.explorer.core.setting import WeightSetting

BATCH_SIZES = (1, 32, 64, 256)
_STALE_STYLE = "color: #8a4b00; background: #fff4e0; padding: 2px 6px; border-radius: 4px"


def describe_spec(setting: "WeightSetting") -> str:
    """One line naming a weight setting, for titles and status lines (the method describes itself)."""
    text = get_method(setting.method).describe(setting)
    if setting.overrides:
        n = len(setting.overrides)
        text += f", {n} weight{'s' if n > 1 else ''} set by hand"
    return text


class SpeedView(pn.viewable.Viewer):
    """Batch size and kernel backend, a "Measure speed" button, the chart and table of the result.

    The measurement (``Explorer.benchmark``) runs on this view's own worker thread and its result
    comes back through the session's dispatcher (inside a Jupyter kernel it runs inline, like the
    app's evaluation). The last report of each model is kept for the
    session; when the setting, the batch size or the backend changes it stays on screen, faded
    and marked as measured for the old setting.
    """

    def __init__(self, dispatch: SessionDispatcher, on_error: Callable[[BaseException], None],
                 repeats: int = 20) -> None:
        super().__init__()
        self._dispatch = dispatch
        self._on_error = on_error
        self.repeats = repeats
        self._worker = LatestWorker(name="prunescope-speed")
        self._explorer: Explorer | None = None
        self._token: threading.Event | None = None  # the cancel event of the measurement under way
        self.reports: dict[str, SpeedReport] = {}

        backends = kernel_backends()
        self.batch_size = pn.widgets.Select(label="Batch size", options=list(BATCH_SIZES), value=64, width=100)
        self.backend = pn.widgets.Select(label="Kernels", options=backends, value=backends[0], width=130)
        self.run_button = pn.widgets.Button(label="Measure speed", color="primary", width=150,
                                            margin=(24, 10, 10, 10))
        self.cancel_button = pn.widgets.Button(label="Cancel", width=90, disabled=True, margin=(24, 10, 10, 0))
        self.progress = pn.indicators.Progress(value=0, visible=False, width=160, margin=(36, 10))
        self.status = pn.pane.HTML("", margin=(30, 10, 10, 10), sizing_mode="stretch_width",
                                   styles={"font-size": "13px", "color": "#374151"})
        self.note = pn.pane.HTML(
            "Median of repeated runs; dense torch and the sparse model run the same batch of test images. "
            "Other work in this process (evaluation, sweeps) can slow a measurement down.",
            margin=(0, 10), styles={"font-size": "12px", "color": "#4b5563"},
        )
        self.chart = SpeedChart()
        self.run_button.on_click(lambda event: self.run())
        self.cancel_button.on_click(lambda event: self.cancel())
        self.batch_size.param.watch(lambda event: self.mark(), "value")
        self.backend.param.watch(lambda event: self.mark(), "value")
        self._layout = pn.Column(
            pn.Row(self.batch_size, self.backend, self.run_button, self.cancel_button, self.progress, self.status,
                   sizing_mode="stretch_width"),
            self.chart, self.note, sizing_mode="stretch_width",
        )

    # ------------------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        """Whether a measurement is under way."""
        return self._token is not None

    def set_explorer(self, explorer: "Explorer") -> None:
        """Show ``explorer``'s last report, if this session measured one."""
        self._explorer = explorer
        report = self.reports.get(explorer.name)
        if report is None:
            self.chart.clear(f"Not measured for {explorer.name} yet")
            if not self.running:
                self.status.object = f"Not measured for <b>{html.escape(explorer.name)}</b> yet."
        else:
            self._show(report)

    def run(self) -> None:
        """Measure the current setting at the chosen batch size and backend in the background."""
        explorer = self._explorer
        if explorer is None or self.running:
            return
        spec, backend, batch_size, repeats = (explorer.setting.weights, self.backend.value, self.batch_size.value,
                                              self.repeats)
        warming = warmup_for(backend)
        token = threading.Event()
        self._token = token
        self.run_button.disabled = True
        self.cancel_button.disabled = False
        self.progress.param.update(value=0, visible=True)
        waiting = " (the kernels are still compiling; measuring after)" if not warming.done() else ""
        self.status.object = (f"Measuring <b>{html.escape(describe_spec(spec))}</b>, batch {batch_size}, "
                              f"{backend}…{waiting}")

        def progress(done: int, total: int) -> None:  # on the worker thread
            self._dispatch(lambda: self._show_progress(token, done, total))

        def job() -> "SpeedReport":
            warming.result()  # re-raises a failed compile
            return explorer.benchmark(batch_size=batch_size, backend=backend, repeats=repeats,
                                      setting=Setting(weights=spec),
                                      progress=progress, cancel=token)

        self._dispatch.submit(
            self._worker, job,
            on_done=lambda report: self._finished(explorer, token, report),
            on_error=lambda err: self._failed(token, err),
        )

    def cancel(self) -> None:
        """Stop the running measurement after the layer it is timing."""
        if self._token is not None:
            self._token.set()
            self.cancel_button.disabled = True
            self.status.object = "Cancelling…"

    def _show_progress(self, token: threading.Event, done: int, total: int) -> None:
        if self._token is token and not token.is_set():
            self.progress.value = int(100 * done / total)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no measurement runs (tests and scripts)."""
        return self._worker.wait_idle(timeout)

    def close(self) -> None:
        """Stop the running measurement and the worker thread (session ended)."""
        if self._token is not None:
            self._token.set()
        self._worker.close()

    def _idle_controls(self) -> None:
        self._token = None
        self.run_button.disabled = False
        self.cancel_button.disabled = True
        self.progress.visible = False

    def _finished(self, explorer: "Explorer", token: object, report: "SpeedReport") -> None:
        if self._token is not token:
            return
        self._idle_controls()
        self.reports[explorer.name] = report
        if explorer is self._explorer:
            self._show(report)
        else:
            self.set_explorer(self._explorer)

    def _failed(self, token: object, err: BaseException) -> None:
        if self._token is not token:
            return
        self._idle_controls()
        if isinstance(err, Cancelled):
            self.status.object = "Cancelled."
            self.mark()
            return
        self.status.object = "The measurement failed (see the alert above)."
        self._on_error(err)

    # ------------------------------------------------------------------------------ drawing
    def _show(self, report: "SpeedReport") -> None:
        self.chart.show(report, f"{describe_spec(report.setting)} · {self._explorer.name} · "
                                f"batch {report.batch_size} · {report.backend}")
        self.mark()

    def is_stale(self, report: "SpeedReport") -> bool:
        """Whether ``report`` was measured for another setting, batch size or backend than now."""
        explorer = self._explorer
        return (report.setting, report.batch_size, report.backend) != (
            explorer.setting.weights, self.batch_size.value, self.backend.value)

    def mark(self) -> None:
        """Say whether the report on screen still describes the current setting (call on every change)."""
        explorer = self._explorer
        report = self.reports.get(explorer.name) if explorer is not None else None
        if report is None or self.running:
            return
        stale = self.is_stale(report)
        self.chart.set_stale(stale)
        measured = f"{html.escape(describe_spec(report.setting))}</b>, batch {report.batch_size}, {report.backend}"
        if stale:
            self.status.object = (f'<span style="{_STALE_STYLE}">Measured for <b>{measured}; '
                                  "setting changed: measure again.</span>")
        else:
            whole = report.whole
            self.status.object = (f"Measured for <b>{measured}: whole model "
                                  f"<b>{whole['measured_speedup']:.2f}×</b> measured, "
                                  f"{whole['theoretical_speedup']:.2f}× theoretical.")

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout
