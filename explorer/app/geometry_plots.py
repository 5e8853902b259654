"""Bokeh figures of the Geometry tab, drawing the tables of :mod:`prunescope.explorer.geometry.figures`
(the same tables the paper figures draw): the embedding scatter (dense -> pruned), CKA by layer,
the CKA matrix and the angle / norm / margin histograms. Drawing only; no numerics here.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from bokeh.models import ColorBar, ColumnDataSource, FactorRange, HoverTool, Legend, LinearColorMapper, Range1d, TapTool
from bokeh.palettes import Cividis256
from bokeh.plotting import figure

from prunescope.explorer.geometry.figures import QUANTITIES, series_style

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Columns of the scatter's source that change with the setting (thumbnails are sent once per model).
MOVING = ("x_dense", "y_dense", "x_pruned", "y_pruned", "dense_pred", "pruned_pred", "dense_name", "pruned_name",
          "flip", "dense_margin", "pruned_margin", "margin_drop", "group", "colour")
STATIC = ("sample", "label", "label_name", "thumb")
#: Histogram series slots: (model, clean?) in drawing order.
SLOTS = (("dense", True), ("pruned", True), ("dense", False), ("pruned", False))
_TOOLTIP = """
<div style="font:12px system-ui;max-width:220px">
  <img src="@thumb" style="width:64px;height:64px;image-rendering:pixelated;border:1px solid #ccc;float:left;margin-right:6px">
  <div><b>#@sample</b> true <b>@label_name</b></div>
  <div>dense: @dense_name (margin @dense_margin{0.00})</div>
  <div>pruned: @pruned_name (margin @pruned_margin{0.00})</div>
  <div>@group</div>
</div>
"""


def _style(fig) -> None:
    fig.toolbar.logo = None
    fig.title.text_font_size = "13px"
    fig.axis.axis_label_text_font_style = "normal"


def png_uri(image: torch.Tensor) -> str:
    """A ``(C, H, W)`` image as a PNG data URI (one channel grey, three RGB; min-max scaled into
    [0, 1] when outside it)."""
    from PIL import Image

    x = image.detach().double().cpu()
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        x = (x - lo) / max(hi - lo, 1e-12)
    array = (x.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(array[0], "L") if array.shape[0] == 1 else Image.fromarray(
        np.ascontiguousarray(array[:3].transpose(1, 2, 0)), "RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class EmbeddingPlot:
    """Dense points (hollow), pruned points (filled, coloured by group) and a segment from each
    dense point to its pruned point; hover shows the thumbnail and both predictions, a tap pins."""

    def __init__(self) -> None:
        self.source = ColumnDataSource({k: [] for k in STATIC + MOVING})
        self.pinned = ColumnDataSource({"x": [], "y": []})
        self.figure = figure(title="Embedding", height=460, sizing_mode="stretch_width", output_backend="webgl",
                             tools="pan,wheel_zoom,box_zoom,reset,save", match_aspect=True,
                             x_axis_label="dimension 1 (dense frame)", y_axis_label="dimension 2")
        _style(self.figure)
        self.segments = self.figure.segment("x_dense", "y_dense", "x_pruned", "y_pruned", source=self.source,
                                            line_color="colour", line_alpha=0.45, line_width=1)
        self.dense = self.figure.scatter("x_dense", "y_dense", source=self.source, size=6, fill_alpha=0,
                                         line_color="colour", line_alpha=0.8)
        self.pruned = self.figure.scatter("x_pruned", "y_pruned", source=self.source, size=5, color="colour",
                                          legend_field="group", nonselection_alpha=0.35)
        self.figure.scatter("x", "y", source=self.pinned, size=16, fill_alpha=0, line_color="#000000", line_width=2)
        self.figure.add_tools(HoverTool(renderers=[self.pruned], tooltips=_TOOLTIP),
                              TapTool(renderers=[self.pruned]))
        legend = self.figure.legend[0]
        self.figure.center = [r for r in self.figure.center if not isinstance(r, Legend)]
        legend.update(label_text_font_size="11px", spacing=0, padding=4, border_line_color=None,
                      click_policy="hide")
        self.figure.add_layout(legend, "right")
        self._static_key: object = None

    def show(self, table: "pd.DataFrame", names: Sequence[str], thumbs: Sequence[str], static_key: object) -> None:
        """Draw an ``embedding`` figure table; ``names[label]`` are class names, ``thumbs`` the
        per-sample thumbnails (sent again only when ``static_key`` changes: a new model or data)."""
        def name(v: int) -> str:
            return names[v] if 0 <= v < len(names) else str(v)

        moving = {
            "x_dense": table["x_dense"].to_numpy(), "y_dense": table["y_dense"].to_numpy(),
            "x_pruned": table["x_pruned"].to_numpy(), "y_pruned": table["y_pruned"].to_numpy(),
            "dense_pred": table["dense_pred"].to_numpy(), "pruned_pred": table["pruned_pred"].to_numpy(),
            "dense_name": [name(int(v)) for v in table["dense_pred"]],
            "pruned_name": [name(int(v)) for v in table["pruned_pred"]],
            "flip": list(table["flip"]), "dense_margin": table["dense_margin"].to_numpy(),
            "pruned_margin": table["pruned_margin"].to_numpy(), "margin_drop": table["margin_drop"].to_numpy(),
            "group": list(table["group"]), "colour": list(table["colour"]),
        }
        if static_key != self._static_key or len(self.source.data["sample"]) != len(table):
            static = {"sample": table["sample"].to_numpy(), "label": table["label"].to_numpy(),
                      "label_name": [name(int(v)) for v in table["label"]],
                      "thumb": list(thumbs) if thumbs else [""] * len(table)}
            self.source.data = {**static, **moving}
            self._static_key = static_key
        else:
            self.source.data.update(moving)
        method = str(table.attrs.get("method", "")).upper()
        self.figure.xaxis.axis_label = f"{method} 1 (dense frame)"
        self.figure.yaxis.axis_label = f"{method} 2"
        self.figure.title.text = (f"{method} of {table.attrs.get('layer', '')}: hollow = dense, filled = pruned, "
                                  f"lines join each sample's two positions")

    def pin(self, table: "pd.DataFrame | None", sample: int | None) -> None:
        """Ring the pinned sample's dense and pruned positions (none when ``sample`` is None)."""
        if table is None or sample is None or not 0 <= sample < len(table):
            self.pinned.data = {"x": [], "y": []}
            return
        row = table.iloc[sample]
        self.pinned.data = {"x": [row["x_dense"], row["x_pruned"]], "y": [row["y_dense"], row["y_pruned"]]}

    def clear(self) -> None:
        self.source.data = {k: [] for k in STATIC + MOVING}
        self.pinned.data = {"x": [], "y": []}
        self._static_key = None


class CKAChart:
    """Horizontal bars of CKA per layer (first layer at the top) from a ``cka`` figure table."""

    def __init__(self) -> None:
        self.source = ColumnDataSource({"layer": [], "cka": [], "dims": [], "label": []})
        self.figure = figure(title="Linear CKA, dense vs pruned, per layer", height=300, sizing_mode="stretch_width",
                             y_range=FactorRange(), x_range=Range1d(0, 1.05), tools="save", output_backend="svg",
                             x_axis_label="Linear CKA (1 = the dense representation)", y_axis_label="Layer")
        _style(self.figure)
        self.figure.hbar(y="layer", right="cka", height=0.7, source=self.source, color=series_style("pruned", "clean")[0])
        self.figure.add_tools(HoverTool(tooltips=[("layer", "@layer"), ("CKA", "@label"), ("dims", "@dims")]))
        self.figure.ygrid.grid_line_color = None

    def show(self, table: "pd.DataFrame") -> None:
        layers = list(table["layer"])
        self.figure.y_range.factors = layers[::-1]
        self.figure.height = max(220, 60 + 22 * len(layers))
        self.source.data = {"layer": layers, "cka": table["cka"].to_numpy(), "dims": table["dims"].to_numpy(),
                            "label": [f"{v:.4f}" for v in table["cka"]]}


class CKAMatrixPlot:
    """The layer x layer CKA matrix: dense layers (rows, top first) against pruned layers (columns)."""

    def __init__(self) -> None:
        self.mapper = LinearColorMapper(palette=list(Cividis256), low=0.0, high=1.0)
        self.source = ColumnDataSource({"row": [], "col": [], "cka": []})
        self.figure = figure(title="CKA: dense layer (row) vs pruned layer (column)", height=360, width=420,
                             x_range=FactorRange(), y_range=FactorRange(), tools="save,hover",
                             tooltips=[("dense", "@row"), ("pruned", "@col"), ("CKA", "@cka{0.000}")],
                             x_axis_label="Pruned layer", y_axis_label="Dense layer")
        _style(self.figure)
        self.figure.rect("col", "row", width=1, height=1, source=self.source,
                         fill_color={"field": "cka", "transform": self.mapper}, line_color=None)
        self.figure.add_layout(ColorBar(color_mapper=self.mapper, width=8, title="CKA"), "right")
        self.figure.xaxis.major_label_orientation = 0.8
        self.figure.grid.visible = False

    def show(self, matrix: "pd.DataFrame") -> None:
        rows, cols = [str(r) for r in matrix.index], [str(c) for c in matrix.columns]
        self.figure.x_range.factors = cols
        self.figure.y_range.factors = rows[::-1]
        r, c = np.meshgrid(np.arange(len(rows)), np.arange(len(cols)), indexing="ij")
        self.source.data = {"row": [rows[i] for i in r.ravel()], "col": [cols[j] for j in c.ravel()],
                            "cka": matrix.to_numpy(dtype=float).ravel()}


def _staircase(left: np.ndarray, right: np.ndarray, values: np.ndarray) -> tuple[list[float], list[float]]:
    xs = [float(left[0])] if len(left) else []
    ys = [0.0] if len(left) else []
    for lo, hi, v in zip(left, right, values):
        xs += [float(lo), float(hi)]
        ys += [float(v), float(v)]
    if len(left):
        xs.append(float(right[-1]))
        ys.append(0.0)
    return xs, ys


class GeometryHistograms:
    """Three panels (angle, norm, margin) with up to four step histograms each: dense and pruned,
    clean (solid) and corrupted (dashed), from a ``geometry_hist`` figure table."""

    def __init__(self) -> None:
        self.sources: dict[tuple[str, int], ColumnDataSource] = {}
        self.renderers: dict[tuple[str, int], object] = {}
        self.figures = []
        for quantity, label in QUANTITIES.items():
            fig = figure(title=label, height=260, sizing_mode="stretch_width", tools="save,hover",
                         x_axis_label=label, y_axis_label="Samples (%)", output_backend="svg",
                         tooltips=[("series", "@series"), ("x", "$x{0.00}"), ("samples", "$y{0.0} %")])
            _style(fig)
            for slot, (model, clean) in enumerate(SLOTS):
                source = ColumnDataSource({"x": [], "y": [], "series": []})
                colour, dash = series_style(model, "clean" if clean else "corrupted")
                self.renderers[(quantity, slot)] = fig.line("x", "y", source=source, line_color=colour,
                                                            line_dash=dash, line_width=2 if clean else 1.6,
                                                            legend_label=f"{model}, {'clean' if clean else 'corrupted'}")
                self.sources[(quantity, slot)] = source
            fig.legend.update(label_text_font_size="10px", spacing=0, padding=2, location="top_right",
                              background_fill_alpha=0.7, click_policy="hide")
            self.figures.append(fig)

    def show(self, table: "pd.DataFrame") -> None:
        for quantity in QUANTITIES:
            part = table[table["quantity"] == quantity]
            for slot, (model, clean) in enumerate(SLOTS):
                rows = part[(part["model"] == model) & ((part["condition"] == "clean") == clean)]
                source = self.sources[(quantity, slot)]
                if rows.empty:
                    source.data = {"x": [], "y": [], "series": []}
                    self.renderers[(quantity, slot)].visible = False
                    continue
                xs, ys = _staircase(rows["bin_left"].to_numpy(), rows["bin_right"].to_numpy(),
                                    100 * rows["fraction"].to_numpy())
                source.data = {"x": xs, "y": ys, "series": [rows["series"].iloc[0]] * len(xs)}
                self.renderers[(quantity, slot)].visible = True
