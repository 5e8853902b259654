"""The Speed section: measure the sparse kernels against dense torch in the background, per layer
and whole model, and say so when the result no longer matches the setting.

The chart draws the table of the paper figure ``speed`` (``quantity='speedup'``) computed from the
report this view measured; its Export control downloads that table or the figure drawn from it.
The figure's data function asks ``explorer.benchmark(...)`` for its report and the engine does not
memoise benchmarks, so the export hands the data function a :class:`MeasuredSpeed` stand-in whose
``benchmark`` returns the report already measured: exporting never times anything again.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd
import panel as pn

from prunescope.explorer.app.backends import kernel_backends, warmup_for
from prunescope.explorer.app.dispatch import SessionDispatcher, session_callback
from prunescope.explorer.app.export_view import ExportMenu
from prunescope.explorer.app.job_view import JobOwner, JobPanel
from prunescope.explorer.app.speed_chart import SpeedChart
from prunescope.explorer.core.setting import Setting
from prunescope.explorer.figures import figure_data
from prunescope.explorer.pruning import get_method

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


class MeasuredSpeed:
    """Stands in for an explorer in the ``speed`` figure's data function: ``benchmark`` returns the
    report measured before (for its batch size and backend) instead of timing again."""

    def __init__(self, name: str, report: "SpeedReport") -> None:
        self.name = name
        self.report = report
        self.setting = Setting(weights=report.setting)

    def benchmark(self, batch_size: int, backend: str, repeats: int, **kwargs: Any) -> "SpeedReport":
        """The measured report; asking for another batch size or backend is an error (nothing is timed)."""
        if (batch_size, backend) != (self.report.batch_size, self.report.backend):
            raise ValueError(f"measured at batch {self.report.batch_size} on {self.report.backend}, "
                             f"not batch {batch_size} on {backend}: measure again")
        return self.report


def speed_table(name: str, report: "SpeedReport", repeats: int) -> pd.DataFrame:
    """The ``speed`` figure's table (``quantity='speedup'``) of a report already measured."""
    return figure_data("speed", MeasuredSpeed(name, report), quantity="speedup", batch_size=report.batch_size,
                       repeats=repeats, backend=report.backend, threads=0)


class SpeedView(JobOwner, pn.viewable.Viewer):
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
        self._explorer: Explorer | None = None
        self.reports: dict[str, SpeedReport] = {}
        #: Per model: the ``speed`` figure table of its report (what the chart draws and Export saves).
        self.tables: dict[str, pd.DataFrame] = {}
        self._measured_on: dict[str, Explorer] = {}

        backends = kernel_backends()
        self.batch_size = pn.widgets.Select(name="Batch size", options=list(BATCH_SIZES), value=64, width=100)
        self.backend = pn.widgets.Select(name="Kernels", options=backends, value=backends[0], width=130)
        self._own_job(JobPanel(dispatch, on_error, run_label="Measure speed", name="speed", on_run=self.run))
        self.note = pn.pane.HTML(
            "Median of repeated runs; dense torch and the sparse model run the same batch of test images. "
            "Other work in this process (evaluation, sweeps) can slow a measurement down.",
            margin=(0, 10), styles={"font-size": "12px", "color": "#4b5563"},
        )
        self.chart = SpeedChart()
        self.export = ExportMenu("speed", self._table, on_error=on_error, enabled=False)
        self.batch_size.param.watch(session_callback(lambda event: self.mark()), "value")
        self.backend.param.watch(session_callback(lambda event: self.mark()), "value")
        self._layout = pn.Column(
            pn.FlexBox(self.batch_size, self.backend, self.job, sizing_mode="stretch_width", align_items="end"),
            pn.Row(pn.HSpacer(), self.export, sizing_mode="stretch_width"),
            self.chart, self.note, sizing_mode="stretch_width",
        )

    # ------------------------------------------------------------------------------ running
    def set_explorer(self, explorer: "Explorer") -> None:
        """Show ``explorer``'s last report, if this session measured one."""
        self._explorer = explorer
        report = self._report(explorer)
        if report is None:
            self.export.set_enabled(False)
            self.chart.clear(f"Not measured for {explorer.name} yet")
            if not self.running:
                self.status.object = f"Not measured for <b>{html.escape(explorer.name)}</b> yet."
        else:
            self._show(report)

    def _report(self, explorer: "Explorer | None") -> "SpeedReport | None":
        """The last report this session measured on ``explorer`` (these very weights), or None."""
        if explorer is None or self._measured_on.get(explorer.name) is not explorer:
            return None
        return self.reports.get(explorer.name)

    def _table(self) -> pd.DataFrame:
        if self._report(self._explorer) is None:
            raise ValueError("measure the speed first: there is nothing to export yet")
        return self.tables[self._explorer.name]

    def run(self) -> None:
        """Measure the current setting at the chosen batch size and backend in the background."""
        explorer = self._explorer
        if explorer is None:
            return
        spec, backend, batch_size, repeats = (explorer.setting.weights, self.backend.value, self.batch_size.value,
                                              self.repeats)
        warming = warmup_for(backend)
        waiting = " (the kernels are still compiling; measuring after)" if not warming.done() else ""

        def measure(progress, cancel) -> "SpeedReport":
            warming.result()  # re-raises a failed compile
            return explorer.benchmark(batch_size=batch_size, backend=backend, repeats=repeats,
                                      setting=Setting(weights=spec), progress=progress, cancel=cancel)

        def done(report: "SpeedReport") -> None:
            if explorer is not self._explorer and explorer.name == self._explorer.name:
                return  # measured on weights this session no longer uses
            self.reports[explorer.name], self._measured_on[explorer.name] = report, explorer
            self.tables[explorer.name] = speed_table(explorer.name, report, repeats)
            if explorer is self._explorer:
                self._show(report)
            else:
                self.set_explorer(self._explorer)

        self.job.start(measure, done, f"Measuring <b>{html.escape(describe_spec(spec))}</b>, batch {batch_size}, "
                                      f"{backend}…{waiting}")

    # ------------------------------------------------------------------------------ drawing
    def _show(self, report: "SpeedReport") -> None:
        self.chart.show(report, f"{describe_spec(report.setting)} · {self._explorer.name} · "
                                f"batch {report.batch_size} · {report.backend}",
                        self.tables.get(self._explorer.name))
        self.export.set_enabled(True)
        self.mark()

    def is_stale(self, report: "SpeedReport") -> bool:
        """Whether ``report`` was measured for another setting, batch size or backend than now."""
        explorer = self._explorer
        return (report.setting, report.batch_size, report.backend) != (
            explorer.setting.weights, self.batch_size.value, self.backend.value)

    def mark(self) -> None:
        """Say whether the report on screen still describes the current setting (call on every change)."""
        explorer = self._explorer
        report = self._report(explorer)
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
