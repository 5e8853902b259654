"""Draw functions of the built-in figures: a tidy table (from :mod:`.data`) onto a matplotlib figure.

Each takes ``(data, fig)`` and draws into the empty ``fig``; the renderer creates the figure at
the column width inside the paper style. matplotlib is imported inside the functions only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from prunescope.explorer.figures.style import ROLE_COLOURS, WIDTHS, method_style, mpl_dash, series_style

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SPARSITY_LABEL = "Weight sparsity (% removed)"
ACCURACY_LABEL = "Top-1 test accuracy (%)"


def _legend_above(fig: "Figure", ax: "Axes") -> None:
    """A legend above the axes in as many columns as fit the figure's width (measured)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    renderer = fig.canvas.get_renderer()
    for columns in range(min(len(labels), 6), 0, -1):
        legend = fig.legend(handles, labels, loc="outside upper center", ncols=columns)
        if columns == 1 or legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
            return
        legend.remove()


def _curves(fig: "Figure", data: "pd.DataFrame", key: str, label_key: str, x: str, styles) -> "Axes":
    ax = fig.add_subplot()
    for index, (name, group) in enumerate(data.groupby(key, sort=False)):
        style = styles(str(name), index)
        group = group.sort_values(x)
        ax.plot(group[x], group["accuracy_pct"], color=style.colour, linestyle=mpl_dash(style),
                marker=style.marker, markeredgecolor=style.edge or style.colour, markeredgewidth=0.6,
                markersize=5.5 if style.marker == "*" else 3.5, label=str(group[label_key].iloc[0]))
    ax.set_xlim(-2, 102)
    ax.set_ylim(0, 102)
    ax.set_xticks(range(0, 101, 20))
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(ACCURACY_LABEL)
    _legend_above(fig, ax)
    return ax


def draw_sensitivity(data: "pd.DataFrame", fig: "Figure") -> None:
    """Accuracy vs achieved weight sparsity, one curve per method in the method's fixed style."""
    ax = _curves(fig, data, "method", "method_label", "weight_sparsity_pct", method_style)
    ax.set_xlabel(SPARSITY_LABEL)


def layer_names(names: Sequence[str]) -> list[str]:
    """Layer names as drawn: a ``.weight`` suffix common to all weights is dropped (the module's
    name remains); the speed figure's ``whole model`` row is not a weight."""
    names = [str(n) for n in names]
    weights = [n for n in names if n != "whole model"]
    if weights and all(n.endswith(".weight") for n in weights):
        return [n[: -len(".weight")] if n.endswith(".weight") else n for n in names]
    return names


def many_layers(count: int, width: str | float) -> bool:
    """Whether ``count`` categories are too many to sit side by side at ``width``."""
    inches = WIDTHS[width] if isinstance(width, str) else float(width)
    return count > (8 if inches < 5 else 16)


def layer_sensitivity_height(data: "pd.DataFrame", width: str) -> float:
    """Curves for a few layers; a heatmap row per layer for many."""
    count = data["layer"].nunique()
    return 1.1 + 0.15 * count if many_layers(count, width) else (2.5 if width == "single" else 2.7)


def draw_layer_sensitivity(data: "pd.DataFrame", fig: "Figure") -> None:
    """Accuracy vs the sparsity of the one pruned layer: one curve per layer, or for many layers a
    heatmap (rows = layers in execution order, columns = sparsity, colour = accuracy)."""
    layers = list(dict.fromkeys(data["layer"]))
    if not many_layers(len(layers), fig.get_figwidth()):
        plotted = data.assign(layer=data["layer"].map(dict(zip(layers, layer_names(layers)))))
        ax = _curves(fig, plotted, "layer", "layer", "layer_sparsity_pct", lambda name, i: series_style(i))
        ax.set_xlabel("Sparsity of the pruned layer (% removed)")
        return
    grid = data.pivot_table(index="layer", columns="layer_sparsity_pct", values="accuracy_pct", sort=False)
    grid = grid.reindex(layers)
    ax = fig.add_subplot()
    image = ax.imshow(grid.to_numpy(), cmap="cividis", vmin=0, vmax=100, aspect="auto", interpolation="none")
    ax.grid(False)
    ax.set_yticks(range(len(layers)), layer_names(layers))
    columns = [f"{v:g}" for v in grid.columns]
    step = max(1, int(np.ceil(len(columns) * 0.3 / (fig.get_figwidth() * 0.55))))
    ax.set_xticks(range(0, len(columns), step), columns[::step])
    ax.set_xlabel("Sparsity of the pruned layer (% removed)")
    ax.set_ylabel("Pruned layer")
    bar = fig.colorbar(image, ax=ax, aspect=max(10, 4 * len(layers) ** 0.5), pad=0.02)
    bar.set_label(ACCURACY_LABEL)
    bar.outline.set_linewidth(0.5)


def _category_axis(ax: "Axes", labels: Sequence[str], width_in: float, horizontal: bool = False) -> None:
    """Layer names beside the bars: under them (turned when they would not fit), or on the left of
    horizontal bars, first at the top."""
    positions = range(len(labels))
    if horizontal:
        ax.set_yticks(positions, labels)
        ax.set_ylim(len(labels) - 0.4, -0.6)
        ax.grid(axis="y", visible=False)
        return
    room = width_in * 0.8 / max(len(labels), 1)  # inches per bar group
    turned = max((len(s) for s in labels), default=0) * 0.056 > room
    ax.set_xticks(positions, labels, rotation=35 if turned else 0, ha="right" if turned else "center",
                  rotation_mode="anchor" if turned else "default")
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.grid(axis="x", visible=False)


def _bars(ax: "Axes", positions: np.ndarray, values: np.ndarray, horizontal: bool, size: float,
          base: float | None = None, **style):
    """Bars at ``positions`` from ``base`` (default the axis) to ``values``, upright or horizontal."""
    lengths = values if base is None else values - base
    if horizontal:
        return ax.barh(positions, lengths, left=base, height=size, **style)
    return ax.bar(positions, lengths, bottom=base, width=size, **style)


def allocation_height(data: "pd.DataFrame", width: str) -> float:
    """Upright bars for a few layers; a horizontal bar per layer for many."""
    count = len(data)
    if many_layers(count, width):
        return 0.75 + 0.16 * count + (0.25 if data.attrs.get("quantity") == "kept" else 0.0)
    return 2.3 if width == "single" else 2.5


def draw_allocation(data: "pd.DataFrame", fig: "Figure") -> None:
    """Bars per layer: its sparsity (%), or its kept weights beside the dense count (log axis);
    horizontal bars when there are many layers."""
    ax = fig.add_subplot()
    horizontal = many_layers(len(data), fig.get_figwidth())
    where = np.arange(len(data))
    value_axis = ax.xaxis if horizontal else ax.yaxis
    if data.attrs.get("quantity", "sparsity") == "kept":
        _bars(ax, where, data["params"].to_numpy(float), horizontal, 0.7, color="white",
              edgecolor=ROLE_COLOURS["reference"], linewidth=0.6, label="dense")
        _bars(ax, where, data["kept_weights"].to_numpy(float), horizontal, 0.7, color=ROLE_COLOURS["global"],
              label="kept")
        _log_axis(ax, "x" if horizontal else "y")
        value_axis.set_label_text("Weights (count)")
        _legend_above(fig, ax)
    else:
        bars = _bars(ax, where, data["sparsity_pct"].to_numpy(float), horizontal, 0.7, color=ROLE_COLOURS["global"])
        (ax.set_xlim if horizontal else ax.set_ylim)(0, 112)
        value_axis.set_ticks(range(0, 101, 20))
        value_axis.set_label_text("Sparsity (% removed)")
        ax.bar_label(bars, labels=[f"{v:.0f}" for v in data["sparsity_pct"]], padding=1.5, fontsize=8)
    _category_axis(ax, layer_names(data["layer"]), fig.get_figwidth(), horizontal)
    (ax.yaxis if horizontal else ax.xaxis).set_label_text("Prunable layer (execution order)")


def draw_mask(data: "pd.DataFrame", fig: "Figure") -> None:
    """The mask as an image, one pixel per weight: rows = outputs, columns = inputs."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    rows, cols = int(data["row"].max()) + 1, int(data["column"].max()) + 1
    image = np.zeros((rows, cols), dtype=np.int8)
    image[data["row"].to_numpy(), data["column"].to_numpy()] = data["kept"].to_numpy()
    ax = fig.add_subplot()
    cmap = ListedColormap([ROLE_COLOURS["pruned"], ROLE_COLOURS["kept"]])
    ax.imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="none", aspect="auto",
              extent=(-0.5, cols - 0.5, rows - 0.5, -0.5))
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(True)
    shape = tuple(data.attrs.get("weight_shape", (rows, cols)))
    if len(shape) > 2:
        kernel = "×".join(map(str, shape[2:]))
        ax.set_xlabel(f"Input index (input channel × {kernel} kernel)")
        ax.set_ylabel("Output channel (index)")
    else:
        ax.set_xlabel("Input feature (index)")
        ax.set_ylabel("Output neuron (index)")
    kept = int(data["kept"].sum())
    layer = str(data["layer"].iloc[0]) if len(data) else ""
    title = f"{layer} ({'×'.join(map(str, shape))}): {kept:,} of {rows * cols:,} weights kept"
    if len(title) * 0.061 > 0.9 * fig.get_figwidth():  # inches at 8 pt: break before the count
        title = title.replace(": ", ":\n", 1)
    ax.set_title(title, fontsize=8)
    fig.legend(handles=[Patch(facecolor=ROLE_COLOURS["kept"], label="kept"),
                        Patch(facecolor=ROLE_COLOURS["pruned"], edgecolor="#808080", label="pruned")],
               loc="outside lower center", ncols=2, handlelength=1.2)


def speed_height(data: "pd.DataFrame", width: str) -> float:
    """Upright bar groups for a few layers; horizontal ones for many."""
    count = data["layer"].nunique()
    return 0.9 + 0.26 * count if many_layers(count, width) else (2.4 if width == "single" else 2.6)


def draw_speed(data: "pd.DataFrame", fig: "Figure") -> None:
    """Grouped bars per layer and the whole model on a log axis: dense vs sparse latency, or the
    measured speed-up beside the theoretical one (bars from 1×: longer is faster than dense)."""
    ax = fig.add_subplot()
    latency = "latency_ms" in data.columns
    key, value = ("execution", "latency_ms") if latency else ("estimate", "speedup_x")
    layers = list(dict.fromkeys(data["layer"]))
    horizontal = many_layers(len(layers), fig.get_figwidth())
    series = list(dict.fromkeys(data[key]))
    colours = ({"dense torch": ROLE_COLOURS["dense"], "sparse kernels": ROLE_COLOURS["sparse"]} if latency else
               {"measured": ROLE_COLOURS["measured"], "theoretical": ROLE_COLOURS["theoretical"]})
    labels = {"theoretical": "theoretical (FLOPs reduction)", "measured": "measured (sparse kernels)"}
    size = 0.8 / max(len(series), 1)
    for i, name in enumerate(series):
        rows = data[data[key] == name].set_index("layer").reindex(layers)
        offsets = np.arange(len(layers)) + (i - (len(series) - 1) / 2) * size
        _bars(ax, offsets, rows[value].to_numpy(dtype=float), horizontal, size * 0.95,
              base=None if latency else 1.0, color=colours.get(name, series_style(i).colour),
              hatch="////" if i == 1 else None, edgecolor="white" if i == 1 else None, linewidth=0,
              label=labels.get(name, name))
    value_axis = ax.xaxis if horizontal else ax.yaxis
    if latency:
        batch = data.attrs.get("batch_size")
        value_axis.set_label_text(f"Latency per batch of {batch} (ms)" if batch else "Latency (ms)")
    else:
        (ax.axvline if horizontal else ax.axhline)(1.0, color=ROLE_COLOURS["reference"], linewidth=0.8,
                                                   linestyle=(0, (3, 2)))
        value_axis.set_label_text("Speed-up over dense (×)")
    if len(layers) > 1:  # the whole forward pass is set apart from the layers
        (ax.axhline if horizontal else ax.axvline)(len(layers) - 1.5, color="#808080", linewidth=0.6,
                                                   linestyle=(0, (1, 1.5)))
    _category_axis(ax, layer_names(layers), fig.get_figwidth(), horizontal)
    (ax.yaxis if horizontal else ax.xaxis).set_label_text("Prunable layer")
    _log_axis(ax, "x" if horizontal else "y")
    _legend_above(fig, ax)


def _log_axis(ax: "Axes", which: str = "y") -> None:
    """A log axis with plain tick labels (0.05, 0.1, 20, 1,000), not powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    low, high = ax.get_ylim() if which == "y" else ax.get_xlim()
    subs = (1.0, 2.0, 5.0) if high / max(low, 1e-30) < 1e3 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1000 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
