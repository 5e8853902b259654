"""Bokeh views of one setting: the per-layer sparsity bars and the selected layer's mask."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import panel as pn
from bokeh.models import (
    ColumnDataSource,
    FactorRange,
    FixedTicker,
    HoverTool,
    LabelSet,
    Legend,
    LinearColorMapper,
    Range1d,
)
from bokeh.plotting import figure

from prunescope.explorer.app.export_view import ExportMenu
from prunescope.explorer.app.palette import GLOBAL_BAR, HAND_BAR, KEPT, PRUNED
from prunescope.explorer.figures import figure_data
from prunescope.explorer.viewmodel import percent

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from prunescope.explorer.core.weights import WeightInfo as LayerInfo
    from prunescope.explorer.engine import Explorer

ExplorerGetter = Callable[[], "Explorer | None"]
ErrorHandler = Callable[[BaseException], None]

GLOBAL_LABEL = "from the global setting"
HAND_LABEL = "set by hand"


def _style(fig) -> None:
    fig.toolbar.logo = None
    fig.title.text_font_size = "13px"
    fig.xgrid.grid_line_color = None
    fig.axis.axis_label_text_font_style = "normal"


class LayerSparsityChart(pn.viewable.Viewer):
    """Bars of the achieved sparsity of every prunable layer; hand-set layers in their own colour.

    With ``explorer`` (a getter of the explorer shown), an Export control gives the paper figure
    ``allocation`` of the same setting (the same ``cost().per_layer`` table these bars draw)."""

    def __init__(self, explorer: ExplorerGetter | None = None, on_error: ErrorHandler | None = None) -> None:
        super().__init__()
        self.export = ExportMenu(
            "allocation", None if explorer is None else lambda: figure_data("allocation", explorer(), quantity="sparsity"),
            on_error=on_error)
        self.source = ColumnDataSource(self._empty())
        self.figure = figure(
            title="Per-layer sparsity", x_range=FactorRange(), y_range=Range1d(0, 130),
            height=270, sizing_mode="stretch_width", tools="save", output_backend="svg",
            x_axis_label="Prunable layer (execution order)",
            y_axis_label="Sparsity (% of weights removed)",
        )
        # inside the frame above 100 % (the axis stops there), clear of every value label; a legend
        # in the "above" panel is laid out ~200 px off the frame by Bokeh on the first draw
        self.figure.add_layout(Legend(orientation="horizontal", location="top_left", label_text_font_size="11px",
                                      background_fill_alpha=0.8, padding=3, spacing=12))
        self.figure.vbar(
            x="layer", top="sparsity_pct", width=0.7, source=self.source,
            color="color", legend_field="origin",
        )
        self.figure.add_layout(LabelSet(
            x="layer", y="sparsity_pct", text="label", source=self.source,
            text_align="center", y_offset=3, text_font_size="11px",
        ))
        self.figure.add_tools(HoverTool(tooltips=[
            ("layer", "@layer (@kind @shape)"), ("sparsity", "@label"),
            ("weights kept", "@kept{0,0} of @params{0,0}"),
            ("FLOPs / sample", "@flops_effective{0,0} of @flops_dense{0,0}"),
        ]))
        self.figure.yaxis.ticker = FixedTicker(ticks=[0, 20, 40, 60, 80, 100])  # the value labels sit above 100
        _style(self.figure)
        self._pane = pn.pane.Bokeh(self.figure, sizing_mode="stretch_width")

    @staticmethod
    def _empty() -> dict[str, list]:
        keys = ("layer", "kind", "shape", "params", "kept", "sparsity", "sparsity_pct",
                "flops_dense", "flops_effective", "label", "origin", "color")
        return {k: [] for k in keys}

    def update(self, per_layer: "pd.DataFrame", hand_set: set[str]) -> None:
        """Show ``Cost.per_layer``; ``hand_set`` names the layers whose sparsity was set by hand."""
        layers = list(per_layer["layer"])
        if list(self.figure.x_range.factors) != layers:
            self.figure.x_range.factors = layers
        hand = [name in hand_set for name in layers]
        sparsity = [float(s) for s in per_layer["sparsity"]]
        self.source.data = {
            "layer": layers,
            "kind": list(per_layer["kind"]),
            "shape": list(per_layer["shape"]),
            "params": [int(v) for v in per_layer["params"]],
            "kept": [int(v) for v in per_layer["kept"]],
            "sparsity": sparsity,
            "sparsity_pct": [100 * s for s in sparsity],
            "flops_dense": [int(v) for v in per_layer["flops_dense"]],
            "flops_effective": [int(v) for v in per_layer["flops_effective"]],
            "label": [percent(s) for s in sparsity],
            "origin": [HAND_LABEL if h else GLOBAL_LABEL for h in hand],
            "color": [HAND_BAR if h else GLOBAL_BAR for h in hand],
        }

    def __panel__(self) -> pn.viewable.Viewable:
        if self.export.data is None:
            return self._pane
        return pn.Column(pn.Row(pn.HSpacer(), self.export, sizing_mode="stretch_width"), self._pane,
                         sizing_mode="stretch_width")


def mask_as_matrix(mask: "torch.Tensor") -> np.ndarray:
    """A weight mask as a 2-D uint8 image (1 = kept): conv (out, in, *k) becomes (out, in*prod(k))."""
    return mask.reshape(mask.shape[0], -1).numpy().astype(np.uint8)


class MaskView(pn.viewable.Viewer):
    """The selected layer's mask as an image: a pixel per weight, rows = output channels.

    With ``explorer``, an Export control gives the paper figure ``mask`` of the layer shown."""

    def __init__(self, explorer: ExplorerGetter | None = None, on_error: ErrorHandler | None = None) -> None:
        super().__init__()
        self.export = ExportMenu(
            "mask", None if explorer is None else lambda: figure_data("mask", explorer(), layer=self.layer),
            on_error=on_error)
        self.layer_select = pn.widgets.Select(label="Layer shown", options=[], width=200, margin=(0, 10))
        self.source = ColumnDataSource({"image": [], "dw": [], "dh": []})
        self.figure = figure(
            title="Mask", height=270, sizing_mode="stretch_width", tools="pan,wheel_zoom,reset,save",
            x_range=Range1d(0, 1), y_range=Range1d(1, 0),
            x_axis_label="Input weight index", y_axis_label="Output channel",
        )
        mapper = LinearColorMapper(palette=[PRUNED, KEPT], low=0, high=1)
        self.figure.image(image="image", x=0, y=0, dw="dw", dh="dh", source=self.source,
                          color_mapper=mapper)  # row 0 at the top: the y range runs rows -> 0
        _style(self.figure)
        self.figure.ygrid.grid_line_color = None
        self.layer: str | None = None
        self._pane = pn.pane.Bokeh(self.figure, sizing_mode="stretch_width")
        self._legend = pn.pane.HTML(
            f'<span style="font:12px system-ui;color:#374151">'
            f'<span style="display:inline-block;width:11px;height:11px;background:{KEPT}"></span> kept '
            f'&nbsp;<span style="display:inline-block;width:11px;height:11px;background:{PRUNED};'
            f'border:1px solid #bbb"></span> pruned</span>', margin=(18, 5, 0, 5),
        )

    def update(self, mask: "torch.Tensor", info: "LayerInfo", kept: int) -> None:
        """Draw ``mask`` (True = kept) of layer ``info``, of which ``kept`` weights remain."""
        image = mask_as_matrix(mask)
        rows, cols = image.shape
        self.layer = info.name
        self.source.data = {"image": [image], "dw": [cols], "dh": [rows]}
        self.figure.x_range.update(start=0, end=cols)
        self.figure.y_range.update(start=rows, end=0)
        shape = "×".join(map(str, info.weight_shape))
        self.figure.title.text = f"Mask of {info.name} ({info.kind}, {shape}): {kept:,} of {info.numel:,} weights kept"
        if len(info.weight_shape) > 2:
            kernel = "×".join(map(str, info.weight_shape[2:]))
            self.figure.xaxis.axis_label = f"Input weight index (input channel × {kernel} kernel)"
            self.figure.yaxis.axis_label = "Output channel"
        else:
            self.figure.xaxis.axis_label = "Input feature"
            self.figure.yaxis.axis_label = "Output neuron"

    def __panel__(self) -> pn.viewable.Viewable:
        # wraps: inline in a notebook output the export menu goes below the layer picker, not past the edge
        pick = pn.Row(self.layer_select, self._legend, margin=0)
        top = pn.FlexBox(pick, *([self.export] if self.export.data is not None else []), flex_wrap="wrap",
                         justify_content="space-between", align_items="flex-end", sizing_mode="stretch_width")
        return pn.Column(top, self._pane, sizing_mode="stretch_width")
