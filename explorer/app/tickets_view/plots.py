"""Bokeh charts of the Tickets tab, each drawing one registered figure's table
(:mod:`prunescope.explorer.lottery.figures`) and holding it for its Export control.

Drawing only: every number comes from the table. Each ``show(table)`` builds a fresh Bokeh figure
(the factors, series and legend follow the table) and keeps its ``ColumnDataSource`` objects in
``sources`` for tests.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import ColorBar, ColumnDataSource, FactorRange, HoverTool, LinearColorMapper, Range1d
from bokeh.palettes import Cividis256
from bokeh.plotting import figure

from prunescope.explorer.app.export_view import ExportMenu
from prunescope.explorer.figures.style import OKABE_ITO, bokeh_dash, series_style
from prunescope.explorer.lottery.figures import KIND_STYLE, OVERLAY_COLOURS, OVERLAY_STATUS, SPARSITY_LABEL

ErrorHandler = Callable[[BaseException], None]
_NOTE = {"font-size": "12px", "color": "#4b5563"}


def _style(fig) -> None:
    fig.toolbar.logo = None
    fig.title.text_font_size = "13px"
    fig.axis.axis_label_text_font_style = "normal"


class TableChart(pn.viewable.Viewer):
    """A chart of one figure's table, with an Export control of that table and a note line."""

    figure_name = ""
    empty_text = "Find or load a ticket run first."

    def __init__(self, on_error: ErrorHandler | None = None) -> None:
        super().__init__()
        self.table: pd.DataFrame | None = None
        self.sources: dict[str, ColumnDataSource] = {}
        self.export = ExportMenu(self.figure_name, self._table, on_error=on_error, enabled=False)
        self.note = pn.pane.HTML(self.empty_text, styles=_NOTE, margin=(0, 10), sizing_mode="stretch_width")
        self.pane = pn.pane.Bokeh(None, sizing_mode="stretch_width")

    def _table(self) -> pd.DataFrame:
        if self.table is None:
            raise ValueError(f"nothing to export for {self.figure_name!r} yet")
        return self.table

    def show(self, table: pd.DataFrame) -> None:
        """Draw ``table`` (the figure's data) and offer it for export."""
        self.table = table
        self.sources = {}
        self.pane.object = self.draw(table)
        self.export.set_enabled(True)

    def clear(self, text: str | None = None) -> None:
        self.table, self.sources = None, {}
        self.pane.object = None
        self.export.set_enabled(False)
        self.note.object = text or self.empty_text

    def draw(self, table: pd.DataFrame):  # pragma: no cover - every chart overrides it
        raise NotImplementedError

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(pn.Row(self.note, pn.HSpacer(), self.export, sizing_mode="stretch_width"), self.pane,
                         sizing_mode="stretch_width")


class AccuracyChart(TableChart):
    """Accuracy vs sparsity of the ticket, random re-init and random mask (band: min to max over seeds)."""

    figure_name = "ticket_accuracy"

    def draw(self, table: pd.DataFrame):
        fig = figure(title="Test accuracy vs sparsity", height=300, sizing_mode="stretch_width",
                     x_range=Range1d(-2, 102), y_range=Range1d(0, 102), tools="save,reset",
                     x_axis_label=SPARSITY_LABEL, y_axis_label="Test accuracy (%)")
        for kind, group in table.groupby("kind", sort=False):
            style = KIND_STYLE.get(str(kind), series_style(3))
            group = group.sort_values("sparsity_pct")
            source = ColumnDataSource({c: group[c].tolist() for c in group.columns})
            self.sources[str(kind)] = source
            label = str(group["kind_label"].iloc[0])
            fig.varea(x="sparsity_pct", y1="accuracy_min_pct", y2="accuracy_max_pct", source=source,
                      fill_color=style.colour, fill_alpha=0.18)
            fig.line(x="sparsity_pct", y="accuracy_pct", source=source, color=style.colour, line_width=2,
                     line_dash=bokeh_dash(style), legend_label=label)
            fig.scatter(x="sparsity_pct", y="accuracy_pct", source=source, color=style.colour, size=8,
                        marker=style.bokeh_marker, legend_label=label)
        fig.add_tools(HoverTool(tooltips=[("", "@kind_label, level @level"), ("sparsity", "@sparsity_pct{0.0}%"),
                                          ("accuracy", "@accuracy_pct{0.0}% (@accuracy_min_pct{0.0} to "
                                                       "@accuracy_max_pct{0.0}, @seeds seeds)")]))
        fig.legend.location = "bottom_left"
        _style(fig)
        self.note.object = (f"Mean over {int(table['seeds'].max()) if len(table) else 0} seed(s); the band spans "
                            "their minimum and maximum.")
        return fig


class OverlapHeatmap(TableChart):
    """Jaccard overlap of every pair of masks; each cell also shows the random-mask expectation."""

    figure_name = "mask_overlap_matrix"

    def draw(self, table: pd.DataFrame):
        labels = list(dict.fromkeys(table["a"]))
        jaccard = table["jaccard"].astype(float).to_numpy()
        source = ColumnDataSource({
            "a": table["a"].tolist(), "b": table["b"].tolist(), "jaccard": jaccard.tolist(),
            "random_jaccard": table["random_jaccard"].astype(float).tolist(),
            "density_a": table["density_a"].tolist(), "density_b": table["density_b"].tolist(),
            "text": [f"{j:.2f}\n({r:.2f})" for j, r in zip(jaccard, table["random_jaccard"])],
            "text_colour": ["black" if j > 0.55 else "white" for j in jaccard],
        })
        self.sources["cells"] = source
        side = max(300, 90 + 62 * len(labels))
        fig = figure(title="Jaccard overlap (in brackets: two random masks of the same densities)",
                     x_range=FactorRange(*labels), y_range=FactorRange(*reversed(labels)), height=side,
                     width=side + 150, tools="save", x_axis_location="above")
        mapper = LinearColorMapper(palette=Cividis256, low=0, high=1)
        fig.rect(x="b", y="a", width=1, height=1, source=source, fill_color={"field": "jaccard", "transform": mapper},
                 line_color="white")
        fig.text(x="b", y="a", text="text", source=source, text_align="center", text_baseline="middle",
                 text_font_size="11px", text_color="text_colour")
        fig.add_layout(ColorBar(color_mapper=mapper, title="Jaccard", width=12), "right")
        fig.add_tools(HoverTool(tooltips=[("A", "@a (density @density_a{0.000})"), ("B", "@b (density @density_b{0.000})"),
                                          ("Jaccard", "@jaccard{0.000}"), ("random masks", "@random_jaccard{0.000}")]))
        fig.xaxis.major_label_orientation = 0.7
        fig.grid.visible = False
        _style(fig)
        layer = table.attrs.get("layer", "overall")
        self.note.object = (f"Overlap of the kept weights ({'all prunable weights' if layer == 'overall' else layer}): "
                            "|A∩B| / |A∪B|; random masks: d<sub>a</sub>d<sub>b</sub> / (d<sub>a</sub>+d<sub>b</sub>−"
                            "d<sub>a</sub>d<sub>b</sub>) per layer.")
        return fig


class OverlapByLayerChart(TableChart):
    """Per-layer Jaccard vs sparsity (solid) and the random expectation (dotted, same colour)."""

    figure_name = "overlap_by_layer"

    def draw(self, table: pd.DataFrame):
        fig = figure(title="Per-layer overlap vs sparsity", height=300, sizing_mode="stretch_width",
                     y_range=Range1d(0, 1.02), tools="save,reset", x_axis_label=SPARSITY_LABEL,
                     y_axis_label="Jaccard index")
        for index, layer in enumerate(dict.fromkeys(table["layer"])):
            group = table[table["layer"] == layer].sort_values("sparsity_pct")
            colour = OKABE_ITO["black"] if layer == "overall" else series_style(index).colour
            source = ColumnDataSource({c: group[c].tolist() for c in group.columns})
            self.sources[str(layer)] = source
            fig.line(x="sparsity_pct", y="jaccard", source=source, color=colour, line_width=3 if layer == "overall" else 2,
                     legend_label=str(layer))
            fig.scatter(x="sparsity_pct", y="jaccard", source=source, color=colour, size=7, legend_label=str(layer))
            fig.line(x="sparsity_pct", y="random_jaccard", source=source, color=colour, line_dash="dotted",
                     line_width=1.5, legend_label="random masks (dotted)")
        fig.add_tools(HoverTool(tooltips=[("layer", "@layer, level @level"), ("sparsity", "@sparsity_pct{0.0}%"),
                                          ("Jaccard", "@jaccard{0.000}"), ("random masks", "@random_jaccard{0.000}")]))
        fig.legend.location = "bottom_left"
        fig.legend.click_policy = "hide"
        _style(fig)
        versus = table.attrs.get("versus", "seeds")
        self.note.object = ("Tickets of different seeds at the same level (mean over seed pairs)" if versus == "seeds"
                            else f"The ticket against the one-shot <b>{versus}</b> mask at each level's sparsity")
        return fig


class OverlayImage(TableChart):
    """One layer, one pixel per weight: kept by A only, B only, both, neither."""

    figure_name = "mask_overlay"

    def __init__(self, on_error: ErrorHandler | None = None) -> None:
        super().__init__(on_error)
        self.legend = pn.pane.HTML("", margin=(4, 10), styles={"font-size": "12px"})
        self.counts: dict[str, int] = {}

    def draw(self, table: pd.DataFrame):
        rows, cols = int(table.attrs["rows"]), int(table.attrs["columns"])
        image = np.zeros((rows, cols), dtype=np.int8)
        image[table["row"].to_numpy(), table["column"].to_numpy()] = table["code"].to_numpy()
        source = ColumnDataSource({"image": [image], "dw": [cols], "dh": [rows]})
        self.sources["image"] = source
        fig = figure(title=f"{table.attrs['layer']}: A = {table.attrs['label_a']}, B = {table.attrs['label_b']}",
                     height=320, sizing_mode="stretch_width", x_range=Range1d(0, cols), y_range=Range1d(rows, 0),
                     tools="pan,wheel_zoom,reset,save", x_axis_label="Input index", y_axis_label="Output index")
        mapper = LinearColorMapper(palette=list(OVERLAY_COLOURS), low=0, high=3)
        fig.image(image="image", x=0, y=0, dw="dw", dh="dh", source=source, color_mapper=mapper)
        fig.grid.visible = False
        _style(fig)
        codes = np.bincount(image.reshape(-1), minlength=4)
        self.counts = dict(zip(OVERLAY_STATUS, map(int, codes)))
        names = ("kept by neither", f"A only ({table.attrs['label_a']})", f"B only ({table.attrs['label_b']})", "both")
        swatch = '<span style="display:inline-block;width:11px;height:11px;background:{};border:1px solid {}"></span>'
        self.legend.object = " &nbsp; ".join(
            f'<span data-status="{status}" data-count="{count}">{swatch.format(colour, "#999" if i == 0 else colour)} '
            f"{name}: {count:,}</span>"
            for i, (status, colour, name, count) in enumerate(zip(OVERLAY_STATUS, OVERLAY_COLOURS, names, codes)))
        a, b, both = int(codes[1]), int(codes[2]), int(codes[3])
        self.note.object = (f"{both:,} weights kept by both, {a:,} by A only, {b:,} by B only "
                            f"(Jaccard {both / max(a + b + both, 1):.3f}).")
        return fig

    def clear(self, text: str | None = None) -> None:
        super().clear(text)
        self.legend.object, self.counts = "", {}

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(pn.Row(self.note, pn.HSpacer(), self.export, sizing_mode="stretch_width"), self.legend,
                         self.pane, sizing_mode="stretch_width")
