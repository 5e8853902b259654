"""Bokeh figures of the Tokens tab: the picture with the token map per block, CLS-attention heatmaps
per block and head, attention rollout, retention maps, attributions and accuracy-vs-keep curves.

Drawing only: every array comes from :mod:`prunescope.explorer.app.tokens_data`. Images are drawn
in pixel coordinates with row 0 at the top (Bokeh's y axis points up, so arrays are flipped);
heatmaps of the patch grid are stretched over the picture.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from bokeh.models import ColorBar, ColumnDataSource, Legend, LinearColorMapper, Range1d
from bokeh.palettes import Cividis256, PuOr11
from bokeh.plotting import figure

from prunescope.explorer.app.palette import CYCLE, OKABE_ITO
from prunescope.explorer.tokens import DROPPED, KEPT, MERGED, RECYCLED, STATUS_NAMES

#: Fill colour and alpha of each token status over the picture (Okabe-Ito; kept is clear).
STATUS_STYLE = {
    KEPT: (OKABE_ITO["blue"], 0.0),
    MERGED: (OKABE_ITO["orange"], 0.6),
    RECYCLED: (OKABE_ITO["reddish_purple"], 0.6),
    DROPPED: ("#222222", 0.78),
}
#: One colour and marker per token strategy, in every figure.
STRATEGY_STYLE = {
    "cls_attention": (OKABE_ITO["blue"], "circle"),
    "random": (OKABE_ITO["black"], "inverted_triangle"),
    "row": (OKABE_ITO["vermillion"], "triangle"),
    "feather": (OKABE_ITO["bluish_green"], "diamond"),
    "entropy_recycle": (OKABE_ITO["reddish_purple"], "hex"),
    "merge": (OKABE_ITO["orange"], "square"),
    "adaptive": (OKABE_ITO["sky_blue"], "square_pin"),
}
TRANSPARENT = (0, 0, 0, 0)


def strategy_style(name: str, index: int = 0) -> tuple[str, str]:
    """``(colour, marker)`` of a token strategy (user-registered ones take from the cycle)."""
    return STRATEGY_STYLE.get(name, (CYCLE[index % len(CYCLE)], "circle"))


def rgba_image(image: torch.Tensor | None) -> np.ndarray | None:
    """(C, H, W) float image to a flipped (H, W) uint32 RGBA array for ``image_rgba``; values are
    min-max scaled when outside [0, 1]; one channel is drawn grey."""
    if image is None:
        return None
    x = image.detach().double().cpu()
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    x = x[:3]
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        x = (x - lo) / max(hi - lo, 1e-12)
    rgb = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return np.ascontiguousarray(rgba[::-1]).view(np.uint32)[..., 0]


def grid_image(values: torch.Tensor) -> np.ndarray:
    """(rows, cols) map to a flipped float array for ``image`` (NaN stays NaN: transparent)."""
    return np.ascontiguousarray(values.detach().double().cpu().numpy()[::-1])


def picture_figure(title: str, size: tuple[int, int], width: int = 170, height: int = 170,
                   x_label: str = "x (pixels)", y_label: str = "y (pixels)") -> figure:
    """An empty square figure in pixel coordinates (``size`` = (W, H))."""
    w, h = size
    fig = figure(title=title, width=width, height=height, x_range=Range1d(0, w), y_range=Range1d(0, h),
                 tools="save,hover", toolbar_location=None, x_axis_label=x_label, y_axis_label=y_label,
                 output_backend="canvas")
    fig.title.text_font_size = "11px"
    fig.axis.axis_label_text_font_size = "10px"
    fig.axis.axis_label_text_font_style = "normal"
    fig.axis.major_label_text_font_size = "9px"
    fig.grid.visible = False
    fig.min_border = 2
    return fig


class PictureWithMap:
    """The picture, a heatmap of the patch grid over it (``mapper``), an optional colour bar."""

    def __init__(self, title: str, size: tuple[int, int], mapper: LinearColorMapper, *, alpha: float = 0.7,
                 colour_bar: str | None = None, width: int = 170, height: int = 170, **labels: str) -> None:
        self.size, self.mapper = size, mapper
        self.figure = picture_figure(title, size, width, height, **labels)
        w, h = size
        self.picture = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        self.heat = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        self.figure.image_rgba("image", x="x", y="y", dw="dw", dh="dh", source=self.picture)
        heat = self.figure.image("image", x="x", y="y", dw="dw", dh="dh", source=self.heat, color_mapper=mapper,
                                 global_alpha=alpha)
        self.figure.hover.renderers = [heat]
        self.figure.hover.tooltips = [("value", "@image{0.000}")]
        if colour_bar:
            self.figure.add_layout(ColorBar(color_mapper=mapper, title=colour_bar, width=8,
                                            title_text_font_size="9px", major_label_text_font_size="9px",
                                            title_text_font_style="normal"), "right")

    def show(self, picture: np.ndarray | None, values: torch.Tensor | None) -> None:
        w, h = self.size
        place = {"x": [0], "y": [0], "dw": [w], "dh": [h]}
        self.picture.data = {"image": [picture], **place} if picture is not None else {k: [] for k in self.picture.data}
        self.heat.data = {"image": [grid_image(values)], **place} if values is not None else {k: [] for k in self.heat.data}


def heat_mapper(palette: Sequence[str] = Cividis256, low: float = 0.0, high: float = 1.0) -> LinearColorMapper:
    return LinearColorMapper(palette=list(palette), low=low, high=high, nan_color=TRANSPARENT)


def diverging_mapper() -> LinearColorMapper:
    """Purple (negative) to orange (positive), colour-blind safe (ColorBrewer PuOr)."""
    return LinearColorMapper(palette=list(PuOr11)[::-1], low=-1.0, high=1.0, nan_color=TRANSPARENT)


class TokenMapFigure:
    """The picture with every patch's status at one block's input drawn over it, with a legend of counts."""

    def __init__(self, block: int, size: tuple[int, int], grid: tuple[int, int]) -> None:
        self.size, self.grid = size, grid
        self.figure = picture_figure(f"block {block}", size, width=170, height=230)
        self.picture = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        self.cells = ColumnDataSource({"x": [], "y": [], "fill": [], "alpha": [], "label": [], "line": []})
        self.figure.image_rgba("image", x="x", y="y", dw="dw", dh="dh", source=self.picture)
        w, h = size
        rows, cols = grid
        cells = self.figure.rect("x", "y", width=w / cols, height=h / rows, source=self.cells, fill_color="fill",
                                 fill_alpha="alpha", line_color="line", line_alpha=0.9, line_width=0.8,
                                 legend_field="label")
        self.figure.hover.renderers = [cells]
        self.figure.hover.tooltips = [("token", "@label")]
        legend = self.figure.legend[0]
        self.figure.center = [r for r in self.figure.center if not isinstance(r, Legend)]
        legend.update(location="center", orientation="vertical", label_text_font_size="9px", glyph_width=10,
                      glyph_height=10, spacing=4, padding=2, margin=0, label_standoff=2)
        self.figure.add_layout(legend, "below")

    def show(self, picture: np.ndarray | None, status: torch.Tensor) -> dict[str, int]:
        """Draw ``status`` (rows, cols); returns the count of patches per status name."""
        w, h = self.size
        rows, cols = self.grid
        self.picture.data = ({"image": [picture], "x": [0], "y": [0], "dw": [w], "dh": [h]} if picture is not None
                             else {k: [] for k in self.picture.data})
        flat = status.reshape(-1).tolist()
        counts = {name: flat.count(code) for code, name in enumerate(STATUS_NAMES)}
        xs, ys, fill, alpha, label, line = [], [], [], [], [], []
        for i, code in enumerate(flat):
            r, c = divmod(i, cols)
            xs.append((c + 0.5) * w / cols)
            ys.append(h - (r + 0.5) * h / rows)
            colour, a = STATUS_STYLE[code]
            fill.append(colour)
            alpha.append(a)
            line.append(OKABE_ITO["blue"] if code == KEPT else colour)
            label.append(f"{STATUS_NAMES[code]} {counts[STATUS_NAMES[code]]}")
        self.cells.data = {"x": xs, "y": ys, "fill": fill, "alpha": alpha, "label": label, "line": line}
        return counts


def curve_figure() -> figure:
    """Accuracy (%) against the keep ratio (%), legend bottom right."""
    fig = figure(title="Accuracy vs token budget (star: current setting)", height=320, sizing_mode="stretch_width",
                 x_range=Range1d(0, 102), y_range=Range1d(0, 102), tools="save,hover", output_backend="svg",
                 x_axis_label="Keep ratio (% of the patch tokens each pruned block keeps)",
                 y_axis_label="Top-1 accuracy on the test split (%)",
                 tooltips=[("strategy", "@label"), ("keep", "@x{0.0} %"), ("accuracy", "@y{0.0} %")])
    fig.toolbar.logo = None
    fig.title.text_font_size = "13px"
    fig.axis.axis_label_text_font_style = "normal"
    fig.add_layout(Legend(location="bottom_right", label_text_font_size="11px", glyph_height=14, label_height=14,
                          background_fill_alpha=0.75, spacing=0, padding=4))
    return fig
