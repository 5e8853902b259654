"""Draw functions of the built-in figures: a tidy table (from :mod:`.data`) onto a matplotlib figure.

Each takes ``(data, fig)`` and draws into the empty ``fig``; the renderer creates the figure at
the column width inside the paper style. matplotlib is imported inside the functions only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from prunescope.explorer.figures.style import ROLE_COLOURS, method_style, mpl_dash, series_style

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


def draw_layer_sensitivity(data: "pd.DataFrame", fig: "Figure") -> None:
    """Accuracy vs the sparsity of the one pruned layer, one curve per layer."""
    ax = _curves(fig, data, "layer", "layer", "layer_sparsity_pct", lambda name, i: series_style(i))
    ax.set_xlabel("Sparsity of the pruned layer (% removed)")


def _category_axis(ax: "Axes", labels: Sequence[str], width_in: float) -> None:
    """Layer names under the bars, turned when they would not fit side by side."""
    ax.set_xticks(range(len(labels)))
    room = width_in * 0.8 / max(len(labels), 1)  # inches per bar group
    turned = max((len(s) for s in labels), default=0) * 0.062 > room
    ax.set_xticklabels(labels, rotation=35 if turned else 0, ha="right" if turned else "center",
                       rotation_mode="anchor" if turned else "default")
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.grid(axis="x", visible=False)


def draw_allocation(data: "pd.DataFrame", fig: "Figure") -> None:
    """Bars per layer: its sparsity (%), or its kept weights beside the dense count (log axis)."""
    ax = fig.add_subplot()
    x = np.arange(len(data))
    if data.attrs.get("quantity", "sparsity") == "kept":
        ax.bar(x, data["params"], width=0.7, color="white", edgecolor=ROLE_COLOURS["reference"],
               linewidth=0.6, label="dense")
        ax.bar(x, data["kept_weights"], width=0.7, color=ROLE_COLOURS["global"], label="kept")
        _log_axis(ax)
        ax.set_ylabel("Weights (count)")
        _legend_above(fig, ax)
    else:
        bars = ax.bar(x, data["sparsity_pct"], width=0.7, color=ROLE_COLOURS["global"])
        ax.set_ylim(0, 112)
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("Sparsity (% removed)")
        if len(data) <= 12:
            ax.bar_label(bars, labels=[f"{v:.0f}" for v in data["sparsity_pct"]], padding=1.5, fontsize=8)
    _category_axis(ax, list(data["layer"]), fig.get_figwidth())
    ax.set_xlabel("Prunable layer (execution order)")


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


def draw_speed(data: "pd.DataFrame", fig: "Figure") -> None:
    """Grouped bars per layer and the whole model on a log axis: dense vs sparse latency, or the
    measured speed-up beside the theoretical one (1× = as fast as dense)."""
    ax = fig.add_subplot()
    latency = "latency_ms" in data.columns
    key, value = ("execution", "latency_ms") if latency else ("estimate", "speedup_x")
    layers = list(dict.fromkeys(data["layer"]))
    series = list(dict.fromkeys(data[key]))
    colours = ({"dense torch": ROLE_COLOURS["dense"], "sparse kernels": ROLE_COLOURS["sparse"]} if latency else
               {"measured": ROLE_COLOURS["measured"], "theoretical": ROLE_COLOURS["theoretical"]})
    labels = {"theoretical": "theoretical (FLOPs reduction)", "measured": "measured (sparse kernels)"}
    width = 0.8 / max(len(series), 1)
    for i, name in enumerate(series):
        rows = data[data[key] == name].set_index("layer").reindex(layers)
        offsets = np.arange(len(layers)) + (i - (len(series) - 1) / 2) * width
        heights = rows[value].to_numpy(dtype=float)
        # latency bars rise from the axis; speed-up bars from 1x (up: faster than dense, down: slower)
        ax.bar(offsets, heights if latency else heights - 1.0, bottom=None if latency else 1.0,
               width=width * 0.95, color=colours.get(name, series_style(i).colour),
               hatch="////" if i == 1 else None, edgecolor="white" if i == 1 else None, linewidth=0,
               label=labels.get(name, name))
    if latency:
        batch = data.attrs.get("batch_size")
        ax.set_ylabel(f"Latency per batch of {batch} (ms)" if batch else "Latency (ms)")
    else:
        ax.axhline(1.0, color=ROLE_COLOURS["reference"], linewidth=0.8, linestyle=(0, (3, 2)))
        ax.set_ylabel("Speed-up over dense (×)")
    if len(layers) > 1:
        ax.axvline(len(layers) - 1.5, color="#808080", linewidth=0.6, linestyle=(0, (1, 1.5)))
    _category_axis(ax, layers, fig.get_figwidth())
    ax.set_xlabel("Prunable layer")
    _log_axis(ax)
    _legend_above(fig, ax)


def _log_axis(ax: "Axes") -> None:
    """A log y axis with plain tick labels (0.05, 0.1, 20, 1,000), not powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    low, high = ax.get_ylim()
    subs = (1.0, 2.0, 5.0) if high / max(low, 1e-30) < 1e3 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1000 else f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
