"""Figures of lottery-ticket runs: tidy tables (one row per plotted value) and their paper drawings.

Registered figures (``prunescope figure NAME``, ``ex.figure(NAME, run=...)``, the Tickets tab):

- ``ticket_accuracy``: test accuracy vs sparsity of the rewound ticket, the same mask from a
  random re-initialisation and a random mask at the same layer densities (Frankle & Carbin, 2019;
  Liu et al., "Rethinking the Value of Network Pruning", 2019).
- ``mask_overlap_matrix``: Jaccard overlap of every pair of masks (tickets of several seeds and
  levels, one-shot criteria at the ticket's sparsity, the current setting) beside the overlap two
  random masks of the same densities have; Lottery Jackpots (Zhang et al.) found magnitude masks
  the closest to searched ones.
- ``overlap_by_layer``: per-layer Jaccard vs sparsity (seeds against each other, or the ticket
  against a one-shot criterion) with the random expectation d_a d_b / (d_a + d_b - d_a d_b).
- ``mask_overlay``: one layer's weights kept by A only, by B only, by both.

Masks come from :func:`mask_sources` / :func:`resolve_masks`; the app and the widget call the same
functions, so what they draw is what a figure exports.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import torch

from prunescope.explorer.figures.data import method_label
from prunescope.explorer.figures.registry import Option, register_figure
from prunescope.explorer.figures.style import OKABE_ITO, ROLE_COLOURS, SeriesStyle, mpl_dash, series_style
from prunescope.explorer.lottery.overlap import mask_overlap, mask_overlay, overlap_table
from prunescope.explorer.lottery.prune import sparsity_of
from prunescope.explorer.lottery.runs import TicketRun, load_run
from prunescope.explorer.lottery.tables import accuracy_vs_sparsity, seed_overlap_by_level

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from prunescope.explorer.engine import Explorer

Masks = dict[str, torch.Tensor]
#: One-shot criteria compared with a ticket by default (Lottery Jackpots: magnitude is closest).
CRITERIA = ("global_magnitude", "magnitude", "lamp", "snip", "random")
CURRENT = "current setting"
#: Overlay codes of :func:`~prunescope.explorer.lottery.overlap.mask_overlay` and their colours
#: (Okabe-Ito: distinct under the common colour-vision deficiencies; "both" is the app's kept colour).
OVERLAY_STATUS = ("kept by neither", "A only", "B only", "both")
OVERLAY_COLOURS = (ROLE_COLOURS["pruned"], OKABE_ITO["vermillion"], OKABE_ITO["sky_blue"], ROLE_COLOURS["kept"])
KIND_STYLE = {
    "ticket": SeriesStyle(OKABE_ITO["blue"], "o", "circle", ()),
    "reinit": SeriesStyle(OKABE_ITO["reddish_purple"], "^", "triangle", (1.2, 1.2)),
    "random": SeriesStyle(OKABE_ITO["orange"], "v", "inverted_triangle", (2.5, 1.5)),
}
_REWOUND = {"init": "Ticket (rewound to θ0)", "early": "Ticket (rewound to θk)", "none": "IMP, no rewinding"}
SPARSITY_LABEL = "Weight sparsity (% removed)"


# ------------------------------------------------------------------------------ runs and masks
def run_for(ex: "Explorer", run: "TicketRun | str | os.PathLike | None") -> TicketRun:
    """``run`` (a run or its directory; None: the ticket of the explorer's current setting),
    checked to be a run of ``ex``'s model; a ValueError says what does not fit."""
    if run is None:
        from prunescope.explorer.pruning.ticket import ticket_reference

        ref = ticket_reference(ex.setting.weights)
        if ref is None:
            raise ValueError("give run=<directory of a ticket search> (the current setting is not a ticket)")
        run = ref[0]
    if not isinstance(run, TicketRun):
        run = load_run(run)
    model = run.config["model"]["name"]
    where = run.path or "(memory)"
    if model != ex.name:
        raise ValueError(f"the run at {where} is of model {model!r}, not {ex.name!r}: load a run of {ex.name}")
    if not any(run.completed_levels(s) for s in run.seeds):
        raise ValueError(f"the run at {where} has no completed level yet")
    seed = next(s for s in run.seeds if run.completed_levels(s))
    masks = run.masks(0 if 0 in run.completed_levels(seed) else -1, seed)
    params = ex.dense_weights
    wrong = sorted(set(masks) ^ set(params)) + [n for n in masks if n in params and
                                                 tuple(masks[n].shape) != tuple(params[n].shape)]
    if wrong:
        raise ValueError(f"the run at {where} does not fit {ex.name}'s prunable weights: {wrong}")
    return run


def ticket_label(seed: int, level: int) -> str:
    """The label of a ticket in the overlap views (as in :func:`~.tables.labelled_masks`)."""
    return f"seed {seed}, level {level}"


def criterion_label(method: str) -> str:
    """The label of a one-shot criterion's mask at the ticket's sparsity."""
    return f"{method_label(method)} (one-shot)"


def mask_sources(run: TicketRun, criteria: Sequence[str] = CRITERIA, current: bool = True) -> dict[str, tuple]:
    """Every mask the overlap views offer, by label: ``('ticket', seed, level)`` for each completed
    level, ``('criterion', method)`` and ``('current',)``."""
    out: dict[str, tuple] = {ticket_label(s, lv): ("ticket", s, lv) for s in run.seeds for lv in run.completed_levels(s)}
    out.update({criterion_label(m): ("criterion", m) for m in criteria})
    if current:
        out[CURRENT] = ("current",)
    return out


def resolve_level(run: TicketRun, level: int, seed: int | None = None) -> tuple[int, int]:
    """``(seed, level)`` with the defaults filled in (seed: the run's first; level -1: its last)."""
    rec = run.record(level, seed)
    return rec.seed, rec.level


def default_selection(run: TicketRun, level: int = -1, criteria: Sequence[str] = CRITERIA,
                      current: bool = True) -> list[str]:
    """Labels shown by default: each seed's ticket at ``level``, the criteria, the current setting."""
    labels = []
    for s in run.seeds:
        done = run.completed_levels(s)
        if done:
            lv = done[level] if level < 0 and -level <= len(done) else level
            if lv in done:
                labels.append(ticket_label(s, lv))
    return labels + [criterion_label(m) for m in criteria] + ([CURRENT] if current else [])


def resolve_masks(ex: "Explorer", run: TicketRun, labels: Sequence[str], level: int = -1,
                  seed: int | None = None) -> dict[str, Masks]:
    """The masks named by ``labels`` (see :func:`mask_sources`), on the CPU; one-shot criteria
    prune ``ex``'s dense weights to the sparsity of the ticket at (``seed``, ``level``)."""
    tickets = mask_sources(run, (), current=False)
    sources = {lb: tickets.get(lb) or (("current",) if lb == CURRENT else criterion_of(lb)) for lb in labels}
    unknown = [lb for lb, src in sources.items() if src is None]
    if unknown:
        raise ValueError(f"unknown mask(s) {unknown}; available: {', '.join(mask_sources(run))} "
                         "(or '<criterion> (one-shot)' for any registered criterion)")
    sparsity = sparsity_of(run.masks(level, seed))
    out = {}
    for label, source in sources.items():
        if source[0] == "ticket":
            out[label] = run.masks(source[2], source[1])
        elif source[0] == "criterion":
            out[label] = {n: m.cpu() for n, m in ex.masks_for(ex.weight_setting(source[1], sparsity)).items()}
        else:
            out[label] = {n: m.cpu() for n, m in ex.masks.items()}
    return out


def criterion_of(label: str) -> tuple[str, str] | None:
    """``('criterion', method)`` for a label made by :func:`criterion_label`, else None."""
    from prunescope.explorer.pruning import METHODS

    return next((("criterion", name) for name in METHODS if criterion_label(name) == label), None)


def jackpots(ex: "Explorer", run: TicketRun, level: int = -1, seed: int | None = None,
             criteria: Sequence[str] = CRITERIA) -> pd.DataFrame:
    """Which one-shot criterion's mask overlaps the ticket most (Lottery Jackpots' check).

    One row per criterion, best first: criterion, label, sparsity, jaccard (overall),
    random_jaccard (two random masks of the same layer densities), ratio (jaccard / random)."""
    seed, level = resolve_level(run, level, seed)
    ticket = run.masks(level, seed)
    rows = []
    for method in criteria:
        masks = resolve_masks(ex, run, [criterion_label(method)], level, seed)[criterion_label(method)]
        overall = mask_overlap(ticket, masks).set_index("layer").loc["overall"]
        rows.append({"criterion": method, "label": method_label(method), "sparsity": sparsity_of(ticket),
                     "jaccard": float(overall["jaccard"]), "random_jaccard": float(overall["random_jaccard"]),
                     "ratio": float(overall["jaccard"]) / max(float(overall["random_jaccard"]), 1e-12)})
    frame = pd.DataFrame(rows, columns=["criterion", "label", "sparsity", "jaccard", "random_jaccard", "ratio"])
    frame = frame.sort_values("jaccard", ascending=False, kind="stable", ignore_index=True)
    frame.attrs.update(seed=seed, level=level)
    return frame


def run_attrs(frame: pd.DataFrame, run: TicketRun, **extra: Any) -> pd.DataFrame:
    """``frame`` with the run's model name and directory in its ``attrs`` (export file names)."""
    frame.attrs.update({"model": run.config["model"]["name"], "run": str(run.path or ""), **extra})
    return frame


# ------------------------------------------------------------------------------ tables
def ticket_accuracy_table(run: TicketRun) -> pd.DataFrame:
    """One row per (kind, level): kind, kind_label, level, sparsity_pct, accuracy_pct (mean over
    seeds), accuracy_std_pct, accuracy_min_pct, accuracy_max_pct, seeds (how many)."""
    table = accuracy_vs_sparsity(run)
    labels = {"ticket": _REWOUND.get(run.config.get("rewind"), "Ticket"), "reinit": "Random re-init",
              "random": "Random mask"}
    order = {k: i for i, k in enumerate(labels)}
    table = table.assign(o=table["kind"].map(order)).sort_values(["o", "level"], ignore_index=True)
    frame = pd.DataFrame({
        "kind": table["kind"].astype(str), "kind_label": table["kind"].map(labels).astype(str),
        "level": table["level"].astype(int), "sparsity_pct": 100 * table["sparsity"].astype(float),
        "accuracy_pct": 100 * table["accuracy_mean"].astype(float),
        "accuracy_std_pct": 100 * table["accuracy_std"].astype(float).fillna(0.0),
        "accuracy_min_pct": 100 * table["accuracy_min"].astype(float),
        "accuracy_max_pct": 100 * table["accuracy_max"].astype(float), "seeds": table["n"].astype(int),
    })
    return run_attrs(frame, run, rewind=run.config.get("rewind"), criterion=run.config.get("criterion"))


def overlap_matrix_table(masks: dict[str, Masks], layer: str = "overall") -> pd.DataFrame:
    """One row per ordered pair of labelled masks (row-major in label order): a, b, jaccard,
    random_jaccard, density_a, density_b (``layer`` one weight or 'overall')."""
    frame = overlap_table(masks, layer)
    frame.attrs.update(layer=layer, labels=list(masks))
    return frame


def overlap_by_layer_table(ex: "Explorer", run: TicketRun, versus: str = "seeds",
                           seed: int | None = None) -> pd.DataFrame:
    """Per level >= 1 and layer (and 'overall'): level, sparsity_pct, layer, versus, jaccard,
    random_jaccard, pairs. ``versus='seeds'``: the tickets of every pair of seeds, averaged over the
    pairs; a criterion name: the ticket of ``seed`` against that criterion's one-shot mask at the
    ticket's sparsity of each level."""
    cols = ["level", "sparsity_pct", "layer", "versus", "jaccard", "random_jaccard", "pairs"]
    if versus == "seeds":
        if len(run.seeds) < 2:
            raise ValueError(f"the run has one seed ({run.seeds[0]}): compare seeds needs two; pick a criterion")
        t = seed_overlap_by_level(run)
        t = t[t["level"] > 0]
        g = t.groupby(["level", "layer"], sort=False).agg(sparsity=("sparsity", "mean"), jaccard=("jaccard", "mean"),
                                                          random_jaccard=("random_jaccard", "mean"),
                                                          pairs=("jaccard", "size")).reset_index()
        frame = pd.DataFrame({"level": g["level"].astype(int), "sparsity_pct": 100 * g["sparsity"],
                              "layer": g["layer"].astype(str), "versus": "seeds", "jaccard": g["jaccard"],
                              "random_jaccard": g["random_jaccard"], "pairs": g["pairs"].astype(int)}, columns=cols)
    else:
        seed = resolve_level(run, -1, seed)[0]
        rows = []
        for level in (lv for lv in run.completed_levels(seed) if lv > 0):
            ticket = run.masks(level, seed)
            other = resolve_masks(ex, run, [criterion_label(versus)], level, seed)[criterion_label(versus)]
            for r in mask_overlap(ticket, other).itertuples():
                rows.append({"level": level, "sparsity_pct": 100 * sparsity_of(ticket), "layer": r.layer,
                             "versus": versus, "jaccard": r.jaccard, "random_jaccard": r.random_jaccard, "pairs": 1})
        frame = pd.DataFrame(rows, columns=cols)
    return run_attrs(frame, run, versus=versus, seed=seed)


def mask_overlay_table(a: Masks, b: Masks, layer: str, label_a: str = "A", label_b: str = "B") -> pd.DataFrame:
    """One row per weight of ``layer``: row, column (conv: in*kh*kw), code (0 neither, 1 A only,
    2 B only, 3 both) and status; ``attrs['counts']`` = weights per status."""
    code = mask_overlay(a, b, layer)
    rows, cols = code.shape
    frame = pd.DataFrame({"row": np.repeat(np.arange(rows), cols), "column": np.tile(np.arange(cols), rows),
                          "code": code.reshape(-1).astype("int8")})
    frame["status"] = np.asarray(OVERLAY_STATUS)[frame["code"].to_numpy()]
    counts = np.bincount(code.reshape(-1), minlength=4)
    frame.attrs.update(layer=layer, label_a=label_a, label_b=label_b, rows=rows, columns=cols,
                       weight_shape=tuple(a[layer].shape), counts=dict(zip(OVERLAY_STATUS, map(int, counts))))
    return frame


# ------------------------------------------------------------------------------ drawing
def _legend_above(fig: "Figure", ax) -> None:
    from prunescope.explorer.figures.draw import _legend_above as legend

    legend(fig, ax)


def draw_ticket_accuracy(data: pd.DataFrame, fig: "Figure") -> None:
    """Mean accuracy vs sparsity per kind; the band spans the seeds' min and max."""
    ax = fig.add_subplot()
    for kind, group in data.groupby("kind", sort=False):
        style = KIND_STYLE.get(str(kind), series_style(len(KIND_STYLE)))
        ax.fill_between(group["sparsity_pct"], group["accuracy_min_pct"], group["accuracy_max_pct"],
                        color=style.colour, alpha=0.18, linewidth=0)
        ax.plot(group["sparsity_pct"], group["accuracy_pct"], color=style.colour, linestyle=mpl_dash(style),
                marker=style.marker, label=str(group["kind_label"].iloc[0]))
    ax.set_xlim(-2, 102)
    ax.set_ylim(0, 102)
    ax.set_xlabel(SPARSITY_LABEL)
    seeds = int(data["seeds"].max()) if len(data) else 0
    ax.set_ylabel("Test accuracy (%)" + (f", {seeds} seeds" if seeds > 1 else ""))
    _legend_above(fig, ax)


def _short(label: str) -> str:
    return label.replace("seed ", "s").replace(", level ", " L").replace(" (one-shot)", "")


def draw_overlap_matrix(data: pd.DataFrame, fig: "Figure") -> None:
    """Heatmap of Jaccard overlaps; each cell also gives the random expectation in brackets."""
    labels = list(dict.fromkeys(data["a"]))
    grid = data.pivot(index="a", columns="b", values="jaccard").loc[labels, labels].to_numpy(float)
    rand = data.pivot(index="a", columns="b", values="random_jaccard").loc[labels, labels].to_numpy(float)
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="cividis", vmin=0, vmax=1, interpolation="none")
    ax.grid(False)
    names = [_short(lb) for lb in labels]
    ax.set_xticks(range(len(labels)), names, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(labels)), names)
    cell_in = min(0.55 * fig.get_figwidth(), 0.75 * fig.get_figheight()) / max(len(labels), 1)
    size = min(7.0, cell_in * 72 / 5.5)  # two lines of about five characters per cell
    if size >= 5.5:  # smaller is unreadable in print: the colour and its bar then carry the values
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, f"{grid[i, j]:.2f}\n({rand[i, j]:.2f})", ha="center", va="center", fontsize=size,
                        linespacing=0.95, color="black" if grid[i, j] > 0.55 else "white")
    layer = data.attrs.get("layer", "overall")
    if layer != "overall":
        ax.set_title(f"{str(layer).removesuffix('.weight')} only", fontsize=8)
    bar = fig.colorbar(image, ax=ax, pad=0.02, shrink=0.75)
    bar.set_label("Jaccard index (random masks)", fontsize=8)
    bar.outline.set_linewidth(0.5)


def matrix_height(data: pd.DataFrame, width: str) -> float:
    count = data["a"].nunique()
    return max(2.4, 1.1 + 0.3 * count) if width == "single" else max(3.0, 1.3 + 0.35 * count)


def draw_overlap_by_layer(data: pd.DataFrame, fig: "Figure") -> None:
    """Jaccard vs sparsity per layer (solid) and the random expectation (dotted, same colour)."""
    from matplotlib.lines import Line2D

    ax = fig.add_subplot()
    layers = list(dict.fromkeys(data["layer"]))
    for index, layer in enumerate(layers):
        group = data[data["layer"] == layer].sort_values("sparsity_pct")
        style = (SeriesStyle(OKABE_ITO["black"], "s", "square", ()) if layer == "overall"
                 else series_style(index))
        ax.plot(group["sparsity_pct"], group["jaccard"], color=style.colour, marker=style.marker,
                linewidth=1.6 if layer == "overall" else 1.0, label=str(layer).removesuffix(".weight"))
        ax.plot(group["sparsity_pct"], group["random_jaccard"], color=style.colour, linestyle=(0, (1, 1.5)),
                linewidth=0.9)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="#555555", linestyle=(0, (1, 1.5))))
    labels.append("random masks")
    ax.legend(handles, labels, loc="lower left", fontsize=7, ncols=2)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(SPARSITY_LABEL)
    versus = data.attrs.get("versus", "seeds")
    ax.set_ylabel("Jaccard, " + ("seed vs seed" if versus == "seeds" else f"ticket vs {method_label(versus)}"))


def draw_mask_overlay(data: pd.DataFrame, fig: "Figure") -> None:
    """One layer, one pixel per weight: kept by A only, B only, both, or neither."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    rows, cols = int(data.attrs.get("rows", data["row"].max() + 1)), int(data.attrs.get("columns", data["column"].max() + 1))
    image = np.zeros((rows, cols), dtype=np.int8)
    image[data["row"].to_numpy(), data["column"].to_numpy()] = data["code"].to_numpy()
    ax = fig.add_subplot()
    ax.imshow(image, cmap=ListedColormap(list(OVERLAY_COLOURS)), vmin=0, vmax=3, interpolation="none",
              aspect="auto", extent=(-0.5, cols - 0.5, rows - 0.5, -0.5))
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(True)
    ax.set_xlabel("Input index" + (" (input channel × kernel)" if len(data.attrs.get("weight_shape", ())) > 2 else ""))
    ax.set_ylabel("Output index")
    ax.set_title(str(data.attrs.get("layer", "")), fontsize=8)
    counts = np.bincount(data["code"].to_numpy(), minlength=4)
    names = ("neither", f"A only: {_short(str(data.attrs.get('label_a', 'A')))}",
             f"B only: {_short(str(data.attrs.get('label_b', 'B')))}", "both")
    fig.legend(handles=[Patch(facecolor=c, edgecolor="#808080" if i == 0 else c, label=f"{n} ({counts[i]:,})")
                        for i, (c, n) in enumerate(zip(OVERLAY_COLOURS, names))],
               loc="outside lower center", ncols=2, handlelength=1.2, fontsize=7)


# ------------------------------------------------------------------------------ registrations
_RUN = Option("run", "str", None, "Ticket run directory (default: the ticket of the current setting)")
_LEVEL = Option("level", "int", -1, "Ticket level (-1: the last completed); criteria prune to its sparsity",
                bounds=(-1000, 1000))
_SEED = Option("seed", "int", -1, "Seed of the reference ticket (-1: the run's first)", bounds=(-1, None))


def _seed(seed: int) -> int | None:
    return None if seed < 0 else seed


@register_figure("ticket_accuracy", "Test accuracy vs sparsity: ticket, random re-init, random mask",
                 draw=draw_ticket_accuracy, options=(_RUN,), shows_setting=False,
                 height={"single": 2.5, "double": 2.7})
def ticket_accuracy_data(ex: "Explorer", *, run: str | None) -> pd.DataFrame:
    """:func:`ticket_accuracy_table` of the run."""
    return ticket_accuracy_table(run_for(ex, run))


@register_figure(
    "mask_overlap_matrix", "Jaccard overlap of tickets, one-shot criteria and the current setting",
    draw=draw_overlap_matrix, height=matrix_height,
    options=(_RUN, _LEVEL, _SEED,
             Option("masks", "strs", None, "Mask labels (default: each seed's ticket at level, the criteria, "
                    "the current setting)"),
             Option("layer", "str", "overall", "One prunable weight, or 'overall'")),
)
def mask_overlap_matrix_data(ex: "Explorer", *, run: str | None, level: int, seed: int,
                             masks: tuple[str, ...] | None, layer: str) -> pd.DataFrame:
    """:func:`overlap_matrix_table` of the labelled masks."""
    r = run_for(ex, run)
    labels = list(masks) if masks else default_selection(r, level)
    return run_attrs(overlap_matrix_table(resolve_masks(ex, r, labels, level, _seed(seed)), layer), r)


@register_figure(
    "overlap_by_layer", "Per-layer Jaccard overlap vs sparsity with the random-mask expectation",
    draw=draw_overlap_by_layer, height={"single": 2.5, "double": 2.7},
    options=(_RUN, _SEED, Option("versus", "str", "seeds", "'seeds' (tickets of different seeds) or a criterion")),
)
def overlap_by_layer_data(ex: "Explorer", *, run: str | None, seed: int, versus: str) -> pd.DataFrame:
    """:func:`overlap_by_layer_table` of the run."""
    return overlap_by_layer_table(ex, run_for(ex, run), versus, _seed(seed))


@register_figure(
    "mask_overlay", "One layer's weights kept by mask A only, B only or both",
    draw=draw_mask_overlay, height={"single": 2.8, "double": 3.4},
    options=(_RUN, _LEVEL, _SEED, Option("a", "str", None, "Mask A (default: the reference ticket)"),
             Option("b", "str", None, "Mask B (default: global magnitude one-shot)"),
             Option("layer", "str", None, "Prunable weight (default: the largest)")),
)
def mask_overlay_data(ex: "Explorer", *, run: str | None, level: int, seed: int, a: str | None, b: str | None,
                      layer: str | None) -> pd.DataFrame:
    """:func:`mask_overlay_table` of masks ``a`` and ``b``."""
    r = run_for(ex, run)
    s, lv = resolve_level(r, level, _seed(seed))
    a = a or ticket_label(s, lv)
    b = b or criterion_label("global_magnitude")
    masks = resolve_masks(ex, r, [a, b], lv, s)
    layer = layer or max(masks[a], key=lambda n: masks[a][n].numel())
    return run_attrs(mask_overlay_table(masks[a], masks[b], layer, a, b), r)
