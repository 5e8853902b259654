"""Measured vs theoretical speed-up per layer and whole model: a Bokeh bar chart and a small table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd
import panel as pn
from bokeh.models import (
    ColumnDataSource,
    FactorRange,
    FixedTicker,
    HoverTool,
    Legend,
    NumeralTickFormatter,
    Range1d,
    Span,
)
from bokeh.plotting import figure
from bokeh.transform import dodge

from prunescope.explorer.app.palette import OKABE_ITO

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.sparse_exec import SpeedReport

MEASURED = OKABE_ITO["blue"]
THEORETICAL = OKABE_ITO["orange"]
WHOLE_MODEL = "whole model"
#: The table's columns: (title, column of ``SpeedReport.table``).
TABLE_COLUMNS = {
    "layer": "layer", "format": "format", "dense ms": "dense_ms", "sparse ms": "sparse_ms",
    "measured ×": "measured_speedup", "theoretical ×": "theoretical_speedup",
}
_EMPTY = {"factor": [], "layer": [], "format": [], "measured": [], "theoretical": [], "dense_ms": [], "sparse_ms": []}


def _log_ticks(start: float, end: float) -> list[float]:
    """1-2-5 ticks between ``start`` and ``end`` (a log axis of a few decades)."""
    return [m * 10.0**e for e in range(-4, 6) for m in (1, 2, 5) if start <= m * 10.0**e <= end]


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


class SpeedChart(pn.viewable.Viewer):
    """Two bars per layer and for the whole forward: the measured speed-up of the sparse kernels
    over dense torch and the theoretical one (the FLOPs reduction), on a log axis from 1×.

    ``source`` holds what is drawn, ``frame`` the table shown (numbers unrounded).
    """

    def __init__(self) -> None:
        super().__init__()
        self.source = ColumnDataSource(dict(_EMPTY))
        self.figure = figure(
            title="Not measured yet", x_range=FactorRange(), y_axis_type="log", y_range=Range1d(0.5, 2),
            height=300, sizing_mode="stretch_width", tools="save", output_backend="svg",
            x_axis_label="Prunable layer (execution order), then the whole forward pass",
            y_axis_label="speed-up over dense torch (x)",
        )
        fig = self.figure
        fig.toolbar.logo = None
        fig.title.text_font_size = "13px"
        fig.xgrid.grid_line_color = None
        fig.axis.axis_label_text_font_style = "normal"
        fig.yaxis.ticker = FixedTicker(ticks=_log_ticks(0.5, 2))
        fig.yaxis.formatter = NumeralTickFormatter(format="0.[00]")  # 0.5, 1, 20: not 10^1
        # bars start at 1x: above the line the sparse model is faster, below it slower
        self.measured = fig.vbar(x=dodge("factor", -0.19, range=fig.x_range), bottom=1, top="measured", width=0.36,
                                 source=self.source, fill_color=MEASURED, line_color=MEASURED)
        self.theoretical = fig.vbar(x=dodge("factor", 0.19, range=fig.x_range), bottom=1, top="theoretical",
                                    width=0.36, source=self.source, fill_color=THEORETICAL, line_color=THEORETICAL)
        fig.add_layout(Span(location=1, dimension="width", line_color="black", line_width=1.2, line_dash="dashed"))
        fig.add_layout(Legend(items=[("measured (sparse kernels)", [self.measured]),
                                     ("theoretical (FLOPs reduction)", [self.theoretical])],
                              location="top_left", orientation="horizontal", label_text_font_size="11px",
                              border_line_color=None, padding=2, spacing=12, margin=4))  # inside: see plots.py
        fig.add_tools(HoverTool(renderers=[self.measured, self.theoretical], tooltips=[
            ("layer", "@factor (@format)"), ("measured", "@measured{0.00}×"),
            ("theoretical", "@theoretical{0.00}×"), ("dense / sparse", "@dense_ms{0.000} / @sparse_ms{0.000} ms"),
        ]))
        self.frame = pd.DataFrame(columns=list(TABLE_COLUMNS))
        self.table = pn.pane.DataFrame(self.frame, index=False, float_format=_number, border=0,
                                       margin=(4, 10, 10, 10), sizing_mode="stretch_width",
                                       styles={"font-size": "12px", "overflow-x": "auto"})
        self._layout = pn.Column(pn.pane.Bokeh(fig, sizing_mode="stretch_width"), self.table,
                                 sizing_mode="stretch_width")

    def show(self, report: "SpeedReport", title: str, figure_table: "pd.DataFrame | None" = None) -> None:
        """Draw ``report`` under ``title``; the bars come from ``figure_table`` when given (the
        ``speed`` figure's table of this report, ``quantity='speedup'``: what Export saves)."""
        table = report.table
        factors = [WHOLE_MODEL if name == "model" else name for name in table["layer"]]
        if figure_table is not None:
            bars = figure_table.pivot(index="layer", columns="estimate", values="speedup_x").loc[factors]
            measured = [float(v) for v in bars["measured"]]
            theoretical = [float(v) for v in bars["theoretical"]]
        else:
            measured = [float(v) for v in table["measured_speedup"]]
            theoretical = [float(v) for v in table["theoretical_speedup"]]
        self.figure.x_range.factors = factors
        values = [v for v in measured + theoretical if v > 0 and math.isfinite(v)] + [1.0]
        start, end = min(values) / 1.5, max(values) * 4  # headroom for the legend
        self.figure.y_range.update(start=start, end=end)
        self.figure.yaxis.ticker.ticks = _log_ticks(start, end)
        self.source.data = {
            "factor": factors, "layer": list(table["layer"]), "format": list(table["format"]),
            "measured": measured, "theoretical": theoretical,
            "dense_ms": [float(v) for v in table["dense_ms"]], "sparse_ms": [float(v) for v in table["sparse_ms"]],
        }
        self.figure.title.text = title
        self.frame = table[list(TABLE_COLUMNS.values())].set_axis(list(TABLE_COLUMNS), axis=1)
        self.table.object = self.frame
        self.set_stale(False)

    def set_stale(self, stale: bool) -> None:
        """Fade the bars when they no longer describe the current setting."""
        alpha = 0.3 if stale else 1.0
        for renderer in (self.measured, self.theoretical):
            renderer.glyph.fill_alpha = renderer.glyph.line_alpha = alpha

    def clear(self, title: str = "Not measured yet") -> None:
        """Nothing drawn."""
        self.source.data = dict(_EMPTY)
        self.figure.x_range.factors = []
        self.figure.title.text = title
        self.frame = pd.DataFrame(columns=list(TABLE_COLUMNS))
        self.table.object = self.frame

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout
