"""Measured sensitivity curves, computed in the background with a progress bar and a Cancel button.

The curves are drawn from the tidy tables of the paper figures ``sensitivity`` and
``layer_sensitivity`` (:mod:`prunescope.explorer.figures`), computed from the very sweeps this
view ran (``Explorer.sensitivity`` is memoised, so the figure data are cache hits); each plot's
Export control downloads that same table or the figure drawn from it, without sweeping again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource, Legend, LegendItem, Range1d
from bokeh.plotting import figure

from prunescope.explorer.app.dispatch import SessionDispatcher
from prunescope.explorer.app.export_view import ExportMenu
from prunescope.explorer.app.job_view import JobOwner, JobPanel
from prunescope.explorer.app.palette import OKABE_ITO, method_style, series_colour
from prunescope.explorer.pruning import METHODS
from prunescope.explorer.figures import figure_data
from prunescope.explorer.sensitivity import DEFAULT_METHODS, DEFAULT_SPARSITIES, SensitivityResult

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer
    from prunescope.explorer.core.cost import Metrics

_CURRENT = {"x": [], "y": [], "label": []}


def measure_sensitivity(explorer: "Explorer", progress: Callable[[int, int], None] | None = None,
                        cancel=None, methods=DEFAULT_METHODS,
                        sparsities=DEFAULT_SPARSITIES) -> tuple[SensitivityResult, pd.DataFrame, pd.DataFrame]:
    """The app's sweep: the engine's result and the tables of the figures ``sensitivity`` and
    ``layer_sensitivity`` for the same sweeps (their data functions hit the sweeps' cache).

    ``progress(done, total)`` counts both sweeps; setting ``cancel`` stops after the current evaluation."""
    per_method = len(methods) * len(sparsities)
    total = per_method + len(explorer.layers) * len(sparsities)

    def part(offset: int) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, _total: progress(offset + done, total))

    by_method = explorer.sensitivity(methods=list(methods), sparsities=list(sparsities), per_layer=False,
                                     progress=part(0), cancel=cancel).by_method
    by_layer = explorer.sensitivity(methods=[], sparsities=list(sparsities), per_layer=True,
                                    progress=part(per_method), cancel=cancel).by_layer
    curves = figure_data("sensitivity", explorer, methods=tuple(methods), sparsities=tuple(sparsities))
    layers = figure_data("layer_sensitivity", explorer, sparsities=tuple(sparsities))
    return SensitivityResult(by_method=by_method, by_layer=by_layer), curves, layers


def _curve_figure(title: str, x_label: str) -> figure:
    fig = figure(
        title=title, height=300, sizing_mode="stretch_width", x_range=Range1d(-2, 102),
        y_range=Range1d(0, 102), tools="save,hover", output_backend="svg",
        x_axis_label=x_label, y_axis_label="Top-1 accuracy on the test split (%)",
        tooltips=[("series", "@label"), ("sparsity", "@x{0.0} %"), ("accuracy", "@y{0.0} %")],
    )
    fig.toolbar.logo = None
    fig.title.text_font_size = "13px"
    fig.axis.axis_label_text_font_style = "normal"
    # bottom left: accuracy falls at high sparsity, so the curves leave that corner empty
    fig.add_layout(Legend(location="bottom_left", label_text_font_size="11px", glyph_height=14,
                          label_height=14, background_fill_alpha=0.75, spacing=0, padding=4))
    return fig


class SensitivityView(JobOwner, pn.viewable.Viewer):
    """Accuracy vs sparsity per method and per layer, with the current setting marked.

    The sweep runs on this view's own worker thread, so live evaluation on the session's worker
    never queues behind it (the engine runs one forward pass at a time per model, so the two
    interleave evaluation by evaluation). Results are kept per model for the session and drawn
    again when its model comes back.
    """

    def __init__(self, dispatch: SessionDispatcher, on_error: Callable[[BaseException], None]) -> None:
        super().__init__()
        self._dispatch = dispatch
        self._on_error = on_error
        self._explorer: Explorer | None = None
        self.results: dict[str, SensitivityResult] = {}
        #: Per model: the tables of the figures 'sensitivity' and 'layer_sensitivity' drawn now.
        self.tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
        self._measured_on: dict[str, Explorer] = {}  # a result belongs to the explorer (weights) it measured
        self._method = ""
        self.method_export = ExportMenu("sensitivity", lambda: self._table(0), on_error=on_error, enabled=False)
        self.layer_export = ExportMenu("layer_sensitivity", lambda: self._table(1), on_error=on_error, enabled=False)

        self._own_job(JobPanel(dispatch, on_error, run_label="Run sensitivity sweep", name="sensitivity",
                               on_run=self.run))

        self.method_source = ColumnDataSource({"xs": [], "ys": [], "label": [], "color": [], "width": []})
        self.method_points = ColumnDataSource({"x": [], "y": [], "label": [], "color": [], "marker": []})
        self.current = ColumnDataSource(dict(_CURRENT))
        self.method_figure = _curve_figure(
            "Whole model, per method (star: current setting)",
            "Weight sparsity (% of prunable weights removed)",
        )
        self._draw_curves(self.method_figure, self.method_source, self.method_points)
        star = self.method_figure.scatter(
            "x", "y", source=self.current, marker="star", size=20,
            fill_color=OKABE_ITO["yellow"], line_color="black", line_width=1.5,
        )
        self.method_figure.legend[0].items.append(LegendItem(label="current setting", renderers=[star]))

        self.layer_source = ColumnDataSource({"xs": [], "ys": [], "label": [], "color": [], "width": []})
        self.layer_points = ColumnDataSource({"x": [], "y": [], "label": [], "color": [], "marker": []})
        self.layer_marks = ColumnDataSource({"x": [], "y0": [], "y1": [], "color": [], "label": []})
        self.layer_figure = _curve_figure(
            "One layer pruned alone by magnitude (dashed: each layer now)",
            "Sparsity of that layer (% of its weights removed)",
        )
        self._draw_curves(self.layer_figure, self.layer_source, self.layer_points)
        self.layer_figure.segment(
            x0="x", x1="x", y0="y0", y1="y1", source=self.layer_marks, color="color",
            line_dash="dashed", line_width=1.5, alpha=0.9,
        )
        self._layout = pn.Column(
            self.job,
            # Side by side where both titles fit (>= 2 x 440 px), one above the other on narrower screens.
            pn.FlexBox(*(pn.Column(pn.Row(pn.HSpacer(), export, sizing_mode="stretch_width"),
                                   pn.pane.Bokeh(fig, sizing_mode="stretch_width"),
                                   sizing_mode="stretch_width", styles={"flex": "1 1 440px", "min-width": "0"})
                         for export, fig in ((self.method_export, self.method_figure),
                                             (self.layer_export, self.layer_figure))),
                       flex_wrap="wrap", sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )

    @staticmethod
    def _draw_curves(fig: figure, lines: ColumnDataSource, points: ColumnDataSource) -> None:
        fig.multi_line("xs", "ys", source=lines, color="color", line_width="width",
                       legend_field="label")
        fig.scatter("x", "y", source=points, color="color", marker="marker", size=7)

    # ------------------------------------------------------------------------------ running
    def set_explorer(self, explorer: "Explorer") -> None:
        """Show ``explorer``'s curves if this session measured them; a sweep of another model stops."""
        if self._explorer is not explorer:
            self.job.cancel()
            self.mark_measured(None)
        self._explorer = explorer
        if not self._measured(explorer):
            self._clear()
            if not self.running:
                self.status.object = (f"Not measured for <b>{explorer.name}</b> yet: the sweep evaluates "
                                      f"{', '.join(DEFAULT_METHODS)} and every weight at {len(DEFAULT_SPARSITIES)} "
                                      "sparsities (N:M has one sparsity and is a single point).")
        else:
            self._show(explorer.name)

    def _measured(self, explorer: "Explorer | None") -> bool:
        """Whether this session measured ``explorer`` (its name and the very weights shown now:
        after a weight upload the old curves are dropped)."""
        if explorer is None or explorer.name not in self.results:
            return False
        if self._measured_on.get(explorer.name) is not explorer:
            for store in (self.results, self.tables, self._measured_on):
                store.pop(explorer.name, None)
            return False
        return True

    def _table(self, which: int) -> pd.DataFrame:
        explorer = self._explorer
        if not self._measured(explorer):
            raise ValueError("run the sensitivity sweep first: there is nothing to export yet")
        return self.tables[explorer.name][which]

    def run(self) -> None:
        """Start the sweep for the current model in the background (no-op while one runs)."""
        explorer = self._explorer
        if explorer is None:
            return
        if self._measured(explorer):
            self._show(explorer.name)
            return

        def done(measured: tuple[SensitivityResult, pd.DataFrame, pd.DataFrame]) -> None:
            if explorer is not self._explorer and explorer.name == self._explorer.name:
                return  # measured on weights this session no longer uses
            self.results[explorer.name], self.tables[explorer.name] = measured[0], measured[1:]
            self._measured_on[explorer.name] = explorer
            if explorer is self._explorer:
                self._show(explorer.name)

        self.job.start(lambda progress, cancel: measure_sensitivity(explorer, progress, cancel),
                       done, f"Measuring <b>{explorer.name}</b>…")

    # ------------------------------------------------------------------------------ drawing
    def _clear(self) -> None:
        for source in (self.method_source, self.method_points, self.layer_source, self.layer_points):
            source.data = {k: [] for k in source.data}
        self.layer_figure.legend.visible = False
        for menu in (self.method_export, self.layer_export):
            menu.set_enabled(False)

    def _show(self, name: str) -> None:
        """Draw the figure tables of model ``name`` (percentages, as in the paper figures)."""
        curves, per_layer = self.tables[name]
        methods = list(dict.fromkeys(curves["method"]))
        styles = [method_style(m, i) for i, m in enumerate(methods)]
        method_curves = [curves[curves["method"] == m] for m in methods]
        labels = [METHODS[m].display_name if m in METHODS else m for m in methods]
        self._set_curves(
            self.method_source, self.method_points, labels, [s[0] for s in styles],
            [s[1] for s in styles], [c["weight_sparsity_pct"] for c in method_curves],
            [c["accuracy_pct"] for c in method_curves],
        )
        self._widths(methods)
        layers = list(dict.fromkeys(per_layer["layer"]))
        layer_curves = [per_layer[per_layer["layer"] == layer] for layer in layers]
        self._set_curves(
            self.layer_source, self.layer_points, layers,
            [series_colour(i) for i in range(len(layers))], ["circle"] * len(layers),
            [c["layer_sparsity_pct"] for c in layer_curves], [c["accuracy_pct"] for c in layer_curves],
        )
        self.layer_figure.legend.visible = True
        for menu in (self.method_export, self.layer_export):
            menu.set_enabled(True)
        evaluations = len(curves) + len(per_layer)
        self.status.object = f"Measured: {evaluations} evaluations on the test split."

    @staticmethod
    def _set_curves(lines, points, labels, colours, markers, xs, ys) -> None:
        """Curves from per-series columns already in percent."""
        lines.data = {
            "xs": [[float(v) for v in x] for x in xs],
            "ys": [[float(v) for v in y] for y in ys],
            "label": labels, "color": colours, "width": [2.0] * len(labels),
        }
        points.data = {
            "x": [float(v) for x in xs for v in x],
            "y": [float(v) for y in ys for v in y],
            "label": [lab for lab, x in zip(labels, xs) for _ in range(len(x))],
            "color": [c for c, x in zip(colours, xs) for _ in range(len(x))],
            "marker": [m for m, x in zip(markers, xs) for _ in range(len(x))],
        }

    def _widths(self, methods: list[str]) -> None:
        if self.method_source.data["label"]:
            self.method_source.data["width"] = [4.0 if m == self._method else 1.6 for m in methods]
            self.method_source.data = dict(self.method_source.data)

    def mark(self, method: str, layer_sparsity: dict[str, float]) -> None:
        """Mark the current setting: its method's curve drawn thicker, a dashed line at each layer's sparsity."""
        self._method = method
        result = self.results.get(self._explorer.name) if self._measured(self._explorer) else None
        if result is not None:
            self._widths(list(dict.fromkeys(result.by_method["method"])))
        names = list(layer_sparsity)
        self.layer_marks.data = {
            "x": [100 * float(layer_sparsity[n]) for n in names], "y0": [0.0] * len(names),
            "y1": [102.0] * len(names), "color": [series_colour(i) for i in range(len(names))],
            "label": names,
        }

    def mark_measured(self, metrics: "Metrics | None") -> None:
        """A star at the measured (weight sparsity, accuracy) of the current setting; None hides it."""
        if metrics is None:
            self.current.data = dict(_CURRENT)
            return
        label = METHODS[self._method].display_name if self._method in METHODS else self._method
        self.current.data = {"x": [100 * metrics.sparsity], "y": [100 * metrics.accuracy],
                             "label": [f"current: {label}"]}

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout
