"""Figures of the feature-space geometry: the embedding scatter (dense to pruned), CKA by layer,
histograms of angle / norm / margin (dense vs pruned, clean vs corrupted) and the comparison of
settings under corruptions. Each data function returns the tidy table the Geometry tab draws and
the paper renderer draws (Chen et al. 2022 for the geometry; Kornblith et al. 2019 for CKA).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from prunescope.explorer.figures.registry import Option, register_figure
from prunescope.explorer.figures.style import OKABE_ITO, ROLE_COLOURS, method_style, mpl_dash
from prunescope.explorer.geometry.corruptions import CORRUPTIONS, SEVERITIES
from prunescope.explorer.geometry.facade import (
    CLEAN,
    check_condition,
    explorer_cka,
    explorer_compare,
    explorer_embedding,
    explorer_geometry,
    method_settings,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from prunescope.explorer.core.setting import Setting
    from prunescope.explorer.engine import Explorer

Progress = Callable[[int, int], None]
COLOUR_BY = ("class", "flip", "margin")
#: Flip categories in legend order, with their colours (Okabe & Ito 2008).
FLIP_COLOURS = {
    "stayed_correct": OKABE_ITO["sky_blue"],
    "became_wrong": OKABE_ITO["vermillion"],
    "became_right": OKABE_ITO["bluish_green"],
    "stayed_wrong": OKABE_ITO["black"],
}
FLIP_LABELS = {"stayed_correct": "stayed correct", "became_wrong": "became wrong",
               "became_right": "became right", "stayed_wrong": "stayed wrong"}
#: Up to 10 classes: Paul Tol's colour-blind-safe "muted" scheme (then it wraps around).
CLASS_COLOURS = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255",
                 "#AA4499", "#7F7F7F")
#: Margin change, widened (purple) to shrunk (orange): ColorBrewer PuOr with a visible middle grey.
MARGIN_COLOURS = ("#5e3c99", "#b2abd2", "#a0a0a0", "#fdb863", "#e66101")
QUANTITIES = {"angle": "Angle to the true class weight (degrees)", "norm": "Feature norm (L2)",
              "margin": "Logit margin (true minus best other)"}
#: Short axis labels of the paper panels.
SHORT_LABELS = {"angle": "Angle (degrees)", "norm": "Feature norm", "margin": "Logit margin"}
DEFAULT_METHODS = ("magnitude", "lamp", "random")


def _setting_text(ex: "Explorer") -> str:
    w = ex.setting.weights
    tokens = "" if ex.setting.tokens is None else f", tokens {ex.setting.tokens.strategy}"
    return f"{ex.name}, {w.method} at sparsity {w.sparsity:g}{tokens}"


def class_name(ex: "Explorer", label: int) -> str:
    """The sample model's name of class ``label`` (else the number)."""
    names = getattr(getattr(ex, "sample", None), "class_names", ()) or ()
    return str(names[label]) if 0 <= label < len(names) else str(label)


def _fmt(value: float) -> str:
    return f"{value:.2g}" if abs(value) < 10 else f"{value:.0f}"


def margin_bins(drop: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Bin index 0..4 of each margin drop (dense minus pruned margin) and the bins' labels: widened
    a lot, widened, about the same, shrank, shrank a lot; the scale is the 95th percentile of |drop|."""
    drop = np.asarray(drop, dtype=np.float64)
    finite = np.abs(drop[np.isfinite(drop)])
    scale = float(np.percentile(finite, 95)) if finite.size else 0.0
    scale = scale if scale > 0 else 1.0
    edges = np.array([-scale, -scale / 3, scale / 3, scale])
    index = np.searchsorted(edges, drop, side="left")
    a, b = _fmt(scale / 3), _fmt(scale)
    labels = [f"margin widened > {b}", f"widened {a}..{b}", f"changed < {a}", f"shrank {a}..{b}", f"margin shrank > {b}"]
    return np.clip(index, 0, 4), labels


def point_colours(table: pd.DataFrame, by: str, ex: "Explorer | None" = None) -> tuple[list[str], list[str]]:
    """``(group label, colour)`` of each sample of an :func:`explorer_geometry` table, coloured by
    ``class`` (true label), ``flip`` (dense vs pruned correctness) or ``margin`` (margin change)."""
    if by not in COLOUR_BY:
        raise ValueError(f"colour must be one of {', '.join(COLOUR_BY)}, got {by!r}")
    if by == "flip":
        return [FLIP_LABELS[f] for f in table["flip"]], [FLIP_COLOURS[f] for f in table["flip"]]
    if by == "class":
        labels = [int(v) for v in table["label"]]
        names = [f"class {class_name(ex, v) if ex is not None else v}" for v in labels]
        return names, [CLASS_COLOURS[v % len(CLASS_COLOURS)] for v in labels]
    index, labels = margin_bins(table["margin_drop"].to_numpy())
    return [labels[i] for i in index], [MARGIN_COLOURS[i] for i in index]


def embedding_table(ex: "Explorer", layer: str | None = None, method: str = "umap", colour: str = "flip",
                    setting: "Setting | None" = None, progress: Progress | None = None,
                    cancel: Any = None) -> pd.DataFrame:
    """One row per evaluation sample: dense and pruned positions, predictions, flip, margin drop
    and the colour group (what the Geometry tab's scatter draws)."""
    emb = explorer_embedding(ex, layer, method, setting, progress=progress, cancel=cancel)
    geo = explorer_geometry(ex, setting)
    groups, colours = point_colours(geo, colour, ex)
    frame = pd.DataFrame({
        "sample": geo["sample"].to_numpy(), "label": geo["label"].to_numpy(),
        "dense_pred": geo["dense_pred"].to_numpy(), "pruned_pred": geo["pruned_pred"].to_numpy(),
        "flip": geo["flip"].to_numpy(), "dense_margin": geo["dense_margin"].to_numpy(),
        "pruned_margin": geo["pruned_margin"].to_numpy(), "margin_drop": geo["margin_drop"].to_numpy(),
        "x_dense": emb.dense[:, 0], "y_dense": emb.dense[:, 1],
        "x_pruned": emb.pruned[:, 0], "y_pruned": emb.pruned[:, 1],
        "group": groups, "colour": colours,
    })
    frame.attrs.update(model=ex.name, setting=_setting_text(ex), method=method, layer=emb.layer, colour_by=colour,
                       cache_hit=emb.cache_hit)
    return frame


def draw_embedding(data: pd.DataFrame, fig: "Figure") -> None:
    """Dense points (hollow), pruned points (filled) and a line from each dense to its pruned point."""
    from matplotlib.collections import LineCollection

    ax = fig.add_subplot()
    segments = np.stack([data[["x_dense", "y_dense"]].to_numpy(), data[["x_pruned", "y_pruned"]].to_numpy()], 1)
    ax.add_collection(LineCollection(segments, colors=list(data["colour"]), linewidths=0.3, alpha=0.5))
    ax.scatter(data["x_dense"], data["y_dense"], s=5, facecolors="none", edgecolors=list(data["colour"]),
               linewidths=0.4, alpha=0.7)
    for group, part in data.groupby("group", sort=False):
        ax.scatter(part["x_pruned"], part["y_pruned"], s=4, color=part["colour"].iloc[0], label=str(group),
                   linewidths=0)
    method = str(data.attrs.get("method", "umap")).upper()
    ax.set_xlabel(f"{method} 1 (dense frame)")
    ax.set_ylabel(f"{method} 2")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", markerscale=2.0, handletextpad=0.2, fontsize=6)


@register_figure(
    "embedding", "2-D embedding of the feature layer: dense points, pruned points in the same frame, and the "
    "path between them (UMAP, McInnes et al. 2018, or PCA)", draw=draw_embedding, long=True,
    height={"single": 3.0, "double": 4.2},
    options=(Option("layer", "str", None, "Feature point (module name or NAME:input; default the classifier's input)"),
             Option("method", "str", "umap", "Embedding", choices=("umap", "pca")),
             Option("colour", "str", "flip", "Colour by", choices=COLOUR_BY)),
)
def embedding_data(ex: "Explorer", *, layer: str | None, method: str, colour: str,
                   progress: Progress | None = None) -> pd.DataFrame:
    return embedding_table(ex, layer, method, colour, progress=progress)


# ------------------------------------------------------------------------------ CKA
def cka_table(ex: "Explorer", setting: "Setting | None" = None, debiased: bool = False) -> pd.DataFrame:
    """``layer, cka, dims`` (dense vs pruned per layer, execution order), as the tab's chart draws it."""
    frame = explorer_cka(ex, setting, debiased=debiased, matrix=False).by_layer.copy()
    frame.attrs.update(model=ex.name, setting=_setting_text(ex), debiased=debiased)
    return frame


def cka_height(data: pd.DataFrame, width: str) -> float:
    return 1.4 + 0.13 * len(data) if len(data) > 8 else 2.3


def draw_cka(data: pd.DataFrame, fig: "Figure") -> None:
    """Horizontal bars of CKA per layer, first layer at the top, 1 = the dense representation."""
    ax = fig.add_subplot()
    layers = list(data["layer"])
    ax.barh(range(len(layers)), data["cka"], color=ROLE_COLOURS["sparse"], height=0.7)
    ax.set_yticks(range(len(layers)), layers)
    ax.set_ylim(len(layers) - 0.4, -0.6)
    ax.set_xlim(0, 1.02)
    ax.axvline(1.0, color=ROLE_COLOURS["reference"], linewidth=0.6)
    ax.set_xlabel(("Debiased l" if data.attrs.get("debiased") else "L") + "inear CKA, dense vs pruned")
    ax.set_ylabel("Layer (input at the top)")
    ax.grid(axis="y", visible=False)


@register_figure("cka", "Linear CKA between the dense and the pruned activations of every layer "
                 "(Kornblith et al. 2019)", draw=draw_cka, height=cka_height,
                 options=(Option("debiased", "bool", False, "Debiased HSIC estimator (Song et al. 2012)"),))
def cka_data(ex: "Explorer", *, debiased: bool) -> pd.DataFrame:
    return cka_table(ex, debiased=debiased)


# ------------------------------------------------------------------------------ histograms
def hist_table(ex: "Explorer", corruption: str | None = None, severity: int = 3, bins: int = 20,
               setting: "Setting | None" = None) -> pd.DataFrame:
    """Histograms of angle, norm and margin: dense and pruned, on the clean inputs and (unless
    ``corruption`` is None) the corrupted ones; the bins of a quantity are shared by all series."""
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 2 <= bins <= 200:
        raise ValueError(f"bins must be an integer in 2..200, got {bins!r}")
    conditions = [(CLEAN, 0)] + ([check_condition(corruption, severity)] if corruption not in (None, CLEAN) else [])
    tables = {cond: explorer_geometry(ex, setting, *cond) for cond in conditions}
    rows = []
    for quantity in QUANTITIES:
        values = {(model, cond): t[f"{model}_{quantity}"].to_numpy(dtype=np.float64)
                  for cond, t in tables.items() for model in ("dense", "pruned")}
        every = np.concatenate([v[np.isfinite(v)] for v in values.values()])
        low, high = (float(every.min()), float(every.max())) if every.size else (0.0, 1.0)
        edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
        for (model, (corr, sev)), v in values.items():
            counts, _ = np.histogram(v[np.isfinite(v)], edges)
            condition = "clean" if corr == CLEAN else f"{corr} {sev}"
            for i, count in enumerate(counts):
                rows.append({"quantity": quantity, "model": model, "condition": condition,
                             "series": f"{model}, {condition}", "bin_left": edges[i], "bin_right": edges[i + 1],
                             "count": int(count), "fraction": count / max(len(v), 1)})
    frame = pd.DataFrame(rows, columns=["quantity", "model", "condition", "series", "bin_left", "bin_right",
                                        "count", "fraction"])
    frame.attrs.update(model=ex.name, setting=_setting_text(ex))
    return frame


def series_style(model: str, condition: str) -> tuple[str, str]:
    """``(colour, dash)`` of a histogram series: dense orange, pruned blue; corrupted dashed."""
    return ROLE_COLOURS["dense" if model == "dense" else "sparse"], "solid" if condition == "clean" else "dashed"


def draw_geometry_hist(data: pd.DataFrame, fig: "Figure") -> None:
    """Three panels (angle, norm, margin), one step histogram per series."""
    axes = fig.subplots(1, 3, sharey=True)
    for ax, (quantity, label) in zip(axes, SHORT_LABELS.items()):
        part = data[data["quantity"] == quantity]
        for series, group in part.groupby("series", sort=False):
            colour, dash = series_style(group["model"].iloc[0], group["condition"].iloc[0])
            edges = np.append(group["bin_left"].to_numpy(), group["bin_right"].iloc[-1])
            ax.stairs(100 * group["fraction"].to_numpy(), edges, color=colour,
                      linestyle="-" if dash == "solid" else (0, (3.0, 1.5)), label=str(series))
        ax.set_xlabel(label)
    axes[0].set_ylabel("Samples (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=2)


@register_figure("geometry_hist", "Angle, feature norm and logit margin per sample, dense vs pruned, clean vs "
                 "corrupted (Chen et al. 2022)", draw=draw_geometry_hist, height={"single": 2.5, "double": 2.5},
                 options=(Option("corruption", "str", "gaussian_noise", "Corruption compared with the clean inputs",
                                 choices=("none",) + CORRUPTIONS),
                          Option("severity", "int", 3, "Severity of the corruption", bounds=(1, 5)),
                          Option("bins", "int", 20, "Bins per histogram", bounds=(2, 200))))
def geometry_hist_data(ex: "Explorer", *, corruption: str, severity: int, bins: int) -> pd.DataFrame:
    return hist_table(ex, None if corruption == "none" else corruption, severity, bins)


# ------------------------------------------------------------------------------ comparison
def compare_table(ex: "Explorer", settings: Mapping[str, "Setting"], corruptions: Sequence[str] = CORRUPTIONS,
                  severities: Sequence[int] = SEVERITIES, progress: Progress | None = None,
                  cancel: Any = None) -> pd.DataFrame:
    """:func:`explorer_compare`'s summary with ``method``, ``weight_sparsity`` and ``accuracy_pct``
    columns: what the tab's comparison table shows and the figure draws."""
    summary, _ = explorer_compare(ex, settings, corruptions, severities, progress=progress, cancel=cancel)
    method = {str(k): s.weights.method for k, s in settings.items()}
    sparsity = {str(k): ex.cost(s).sparsity for k, s in settings.items()}
    summary.insert(1, "method", summary["setting"].map(method))
    summary.insert(2, "weight_sparsity", summary["setting"].map(sparsity))
    summary["accuracy_pct"] = 100 * summary["accuracy"]
    summary.attrs.update(model=ex.name, setting=_setting_text(ex))
    return summary


def draw_geometry_compare(data: pd.DataFrame, fig: "Figure") -> None:
    """Accuracy against severity, one panel per corruption (severity 0 = clean), one line per setting."""
    kinds = [c for c in dict.fromkeys(data["corruption"]) if c != CLEAN] or [CLEAN]
    axes = np.atleast_1d(fig.subplots(1, len(kinds), sharey=True))
    clean = data[data["corruption"] == CLEAN]
    for ax, kind in zip(axes, kinds):
        for index, (label, group) in enumerate(data.groupby("setting", sort=False)):
            style = method_style(str(group["method"].iloc[0]), index)
            part = pd.concat([clean[clean["setting"] == label], group[group["corruption"] == kind]])
            part = part.sort_values("severity")
            ax.plot(part["severity"], part["accuracy_pct"], color=style.colour, linestyle=mpl_dash(style),
                    marker=style.marker, markersize=3, label=str(label))
        ax.set_title(kind.replace("_", " "), fontsize=7)
        ax.set_xticks(range(0, 6))
        ax.set_ylim(0, 102)
    fig.supxlabel("Corruption severity (0 = clean)", fontsize=8)
    axes[0].set_ylabel("Top-1 accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 4))


@register_figure("geometry_compare", "Accuracy under corruptions of several pruning methods at the current "
                 "sparsity (Chen et al. 2022)", draw=draw_geometry_compare, long=True,
                 height={"single": 2.2, "double": 2.4},
                 options=(Option("methods", "strs", DEFAULT_METHODS, "Pruning methods compared (up to 4)"),
                          Option("corruptions", "strs", CORRUPTIONS, "Corruptions (each at every severity)"),
                          Option("severities", "floats", tuple(float(s) for s in SEVERITIES), "Severities 1-5",
                                 bounds=(1, 5))))
def geometry_compare_data(ex: "Explorer", *, methods: tuple[str, ...], corruptions: tuple[str, ...],
                          severities: tuple[float, ...], progress: Progress | None = None) -> pd.DataFrame:
    settings, skipped = method_settings(ex, methods)
    if not settings:
        raise ValueError(f"none of the methods {list(methods)} can run here: {'; '.join(skipped)}")
    bad = [s for s in severities if float(s) != int(s)]
    if bad:
        raise ValueError(f"severities must be integers in 1..5, got {bad}")
    table = compare_table(ex, settings, corruptions, [int(s) for s in severities], progress=progress)
    table.attrs["skipped"] = skipped
    return table
