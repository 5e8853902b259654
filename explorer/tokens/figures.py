"""Paper figures of the token views: tidy tables (one row per plotted value) and their drawings.

Registered figures (``prunescope figure NAME``, ``ex.figure(NAME)``):

- ``token_map``: which patch tokens each block keeps, merges (ToMe, Bolya et al. 2023), recycles
  (VFlowOpt) or drops (EViT, Liang et al. 2022) for one test image under the current budget.
- ``attention_map``: attention from the CLS token to every patch, per block, averaged over the
  heads (the score EViT keeps tokens by).
- ``retention_map``: how often each patch position survives each block over the test set, for
  the current strategy (FEATHER, Endo et al. 2025, shows attention-only criteria keep one region).
- ``token_accuracy``: measured test accuracy vs the share of patch tokens kept, per strategy.

Every number comes from :mod:`prunescope.explorer.tokens.analysis` through the app's glue
(:class:`~prunescope.explorer.app.tokens_data.TokenData`, no Panel import), so a figure shows what
the Tokens tab shows.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from prunescope.explorer.figures.registry import Option, register_figure
from prunescope.explorer.figures.style import OKABE_ITO, ROLE_COLOURS, SeriesStyle, mpl_dash, series_style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from prunescope.explorer.app.tokens_data import TokenData
    from prunescope.explorer.engine import Explorer

Progress = Callable[[int, int], None]
#: Status names in code order (KEPT, MERGED, RECYCLED, DROPPED of :mod:`..tokens.intervention`).
STATUS_LABELS = ("kept", "merged", "recycled", "dropped")
#: Fill colour per status (Okabe-Ito; the Tokens tab's colours; dropped dark, distinct in greyscale).
STATUS_COLOURS = (OKABE_ITO["sky_blue"], OKABE_ITO["orange"], OKABE_ITO["reddish_purple"], "#333333")
#: One look per token strategy (the Tokens tab's colours and markers).
STRATEGY_STYLE: dict[str, SeriesStyle] = {
    "cls_attention": SeriesStyle(OKABE_ITO["blue"], "o", "circle", ()),
    "random": SeriesStyle(OKABE_ITO["black"], "v", "inverted_triangle", (2.5, 1.5)),
    "row": SeriesStyle(OKABE_ITO["vermillion"], "^", "triangle", (1.2, 1.2)),
    "feather": SeriesStyle(OKABE_ITO["bluish_green"], "D", "diamond", (4.0, 1.5, 1.2, 1.5)),
    "entropy_recycle": SeriesStyle(OKABE_ITO["reddish_purple"], "h", "hex", (5.0, 1.5)),
    "merge": SeriesStyle(OKABE_ITO["orange"], "s", "square", (3.0, 3.0)),
    "adaptive": SeriesStyle(OKABE_ITO["sky_blue"], "P", "plus", (1.5, 3.0)),
}
DEFAULT_KEEPS = (0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0)
ACCURACY_LABEL = "Top-1 test accuracy (%)"
KEEP_LABEL = "Patch tokens kept per pruned block (%)"


# ------------------------------------------------------------------------------ engine access
def token_data(ex: "Explorer") -> "TokenData":
    """The token views' glue for ``ex``; a ValueError when the model has no transformer blocks."""
    from prunescope.explorer.app.tokens_data import TokenData

    try:
        return TokenData(ex)
    except ValueError as err:
        raise ValueError(f"token figures need a model with transformer blocks: {err}") from None


def _needs_budget(ex: "Explorer", figure: str) -> None:
    tokens = ex.setting.tokens
    if tokens is None or tokens.is_dense:
        raise ValueError(f"figure {figure!r} needs a token budget below 1 at some block (got "
                         f"{'none' if tokens is None else 'keep=' + str(tuple(tokens.keep))}); set one with a "
                         "recipe (prunescope figure --recipe FILE)")


def _strategy_label(name: str) -> str:
    from prunescope.explorer.tokens import get_strategy

    return str(get_strategy(name).display_name or name)


def _attrs(frame: pd.DataFrame, ex: "Explorer", **extra: Any) -> pd.DataFrame:
    tokens = ex.setting.tokens
    frame.attrs.update({"model": getattr(ex, "name", ""),
                        "strategy": tokens.strategy if tokens is not None else "",
                        "keep": list(tokens.keep) if tokens is not None else [], **extra})
    return frame


def _grid_rows(maps: np.ndarray, column: str) -> pd.DataFrame:
    """(blocks, rows, cols) values as one row per (block, patch_row, patch_col)."""
    blocks, rows, cols = maps.shape
    b, r, c = np.meshgrid(np.arange(blocks), np.arange(rows), np.arange(cols), indexing="ij")
    return pd.DataFrame({"block": b.ravel(), "patch_row": r.ravel(), "patch_col": c.ravel(),
                         column: maps.reshape(-1)})


def _display_image(data: "TokenData", index: int) -> np.ndarray | None:
    """Test image ``index`` as (H, W, C) in [0, 1] (min-max over the image), or None."""
    image = data.image(index)
    if image is None:
        return None
    x = image.detach().double().cpu().numpy().transpose(1, 2, 0)
    span = x.max() - x.min()
    x = (x - x.min()) / (span if span > 0 else 1.0)
    return x[..., 0] if x.shape[2] == 1 else x


def _block_list(blocks: Sequence[float] | None, count: int) -> list[int]:
    if blocks is None:
        return list(range(count))
    out = []
    for b in blocks:
        if float(b) != int(b) or not 0 <= int(b) < count:
            raise ValueError(f"blocks must be integers in [0, {count - 1}], got {b!r}")
        out.append(int(b))
    return list(dict.fromkeys(out))


_IMAGE = Option("image", "int", 0, "Index of the test image shown", bounds=(0, None))


# ------------------------------------------------------------------------------ data functions
def token_map_table(ex: "Explorer", image: int) -> pd.DataFrame:
    """One row per (block, patch_row, patch_col): status code (0 kept, 1 merged, 2 recycled,
    3 dropped) and its name, at the block's input, for test image ``image`` under the current setting."""
    data = token_data(ex)
    _needs_budget(ex, "token_map")
    inspection = data.inspect(ex.setting, image)
    frame = _grid_rows(inspection.status.cpu().numpy().astype("int64"), "status_code")
    frame["status"] = np.asarray(STATUS_LABELS)[frame["status_code"].to_numpy()]
    return _attrs(frame, ex, image_index=image, label=inspection.label, prediction=inspection.prediction,
                  tokens=list(inspection.tokens), picture=_display_image(data, image))


def attention_table(ex: "Explorer", image: int, blocks: Sequence[float] | None) -> pd.DataFrame:
    """One row per (block, patch_row, patch_col): attention from the CLS token to the patch,
    averaged over the heads (NaN: the patch's token is gone at that block), for test image ``image``."""
    data = token_data(ex)
    if not data.adapter.has_attention:
        raise ValueError(f"figure 'attention_map' needs attention blocks; {ex.name}'s blocks have none")
    chosen = _block_list(blocks, data.num_blocks)
    inspection = data.inspect(ex.setting, image)
    maps = inspection.attention.double().mean(1).cpu().numpy()  # (blocks, rows, cols), head mean
    frame = _grid_rows(maps, "attention")
    frame = frame[frame["block"].isin(chosen)].reset_index(drop=True)
    return _attrs(frame, ex, image_index=image, heads=data.heads, label=inspection.label,
                  picture=_display_image(data, image))


def retention_table(ex: "Explorer", progress: Progress | None = None) -> pd.DataFrame:
    """One row per (block, patch_row, patch_col): retention_pct, the share of test images in
    which the patch's own token is still present at the block's input, for the current strategy."""
    data = token_data(ex)
    _needs_budget(ex, "retention_map")
    strategy = ex.setting.tokens.strategy
    result = data.retention(ex.setting, [strategy], progress=progress)
    frame = _grid_rows(100 * result.maps[strategy].double().cpu().numpy(), "retention_pct")
    return _attrs(frame, ex, images=result.images, strategy_label=_strategy_label(strategy))


def accuracy_table(ex: "Explorer", strategies: Sequence[str] | None, keeps: Sequence[float],
                   progress: Progress | None = None) -> pd.DataFrame:
    """One row per (strategy, keep): strategy, strategy_label, keep_pct, accuracy_pct, loss_nats,
    flops_reduction (dense / pruned FLOPs), at the current weight setting."""
    data = token_data(ex)
    names = list(strategies) if strategies else data.strategies()
    allowed = data.strategies()
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(f"unknown or unusable token strategies {bad} for {ex.name}; allowed: {', '.join(allowed)}")
    for k in keeps:
        if not 0.0 < float(k) <= 1.0:
            raise ValueError(f"keeps must be fractions in (0, 1], got {k!r}")
    curves = data.curves(ex.setting, names, [float(k) for k in keeps], progress=progress)
    table = curves.table
    frame = pd.DataFrame({
        "strategy": table["strategy"].astype(str),
        "strategy_label": [_strategy_label(n) for n in table["strategy"]],
        "keep_pct": 100 * table["keep"].astype(float),
        "accuracy_pct": 100 * table["accuracy"].astype(float),
        "loss_nats": table["loss"].astype(float),
        "flops_reduction": table["flops_reduction"].astype(float) if "flops_reduction" in table else math.nan,
    })
    return _attrs(frame, ex)


# ------------------------------------------------------------------------------ drawing
def _panels(fig: "Figure", count: int, columns: int) -> list:
    rows = math.ceil(count / columns)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    for ax in axes[:count]:
        ax.grid(False)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_linewidth(0.4)
    return list(axes[:count])


def _columns(panels: int, fig: "Figure") -> int:
    return min(panels, 5 if fig.get_figwidth() < 5 else 8)


def _grid(data: pd.DataFrame, block: int, column: str) -> np.ndarray:
    part = data[data["block"] == block]
    rows, cols = int(data["patch_row"].max()) + 1, int(data["patch_col"].max()) + 1
    out = np.full((rows, cols), np.nan)
    out[part["patch_row"].to_numpy(), part["patch_col"].to_numpy()] = part[column].to_numpy()
    return out


def _picture(ax, data: pd.DataFrame) -> None:
    picture = data.attrs.get("picture")
    if picture is not None:
        ax.imshow(picture, cmap="gray" if np.ndim(picture) == 2 else None, interpolation="nearest")
    ax.set_title("Input", pad=2)


def _grid_extent(data: pd.DataFrame) -> tuple[float, float, float, float] | None:
    picture = data.attrs.get("picture")
    if picture is None:
        return None
    h, w = np.shape(picture)[:2]
    return (-0.5, w - 0.5, h - 0.5, -0.5)


def _panel_height(data: pd.DataFrame, width: str, extra: int) -> float:
    from prunescope.explorer.figures.style import WIDTHS

    panels = data["block"].nunique() + extra
    columns = min(panels, 5 if WIDTHS[width] < 5 else 8)
    rows = math.ceil(panels / columns)
    return (0.55 if WIDTHS[width] < 5 else 0.85) + rows * (WIDTHS[width] / columns) * 0.95


def draw_token_map(data: pd.DataFrame, fig: "Figure") -> None:
    """The input picture, then per block its patch grid coloured by status (kept tokens clear)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    blocks = list(dict.fromkeys(data["block"]))
    axes = _panels(fig, len(blocks) + 1, _columns(len(blocks) + 1, fig))
    _picture(axes[0], data)
    extent = _grid_extent(data)
    cmap = ListedColormap(STATUS_COLOURS)
    for ax, block in zip(axes[1:], blocks):
        grid = _grid(data, block, "status_code")
        if extent is not None:
            ax.imshow(data.attrs["picture"], cmap="gray" if np.ndim(data.attrs["picture"]) == 2 else None,
                      interpolation="nearest")
            shown = np.ma.masked_where(grid == 0, grid)  # kept: the picture shows through
            ax.imshow(shown, cmap=cmap, vmin=-0.5, vmax=3.5, alpha=0.85, extent=extent, interpolation="nearest")
        else:
            ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=3.5, interpolation="nearest")
        kept = int((grid == 0).sum())
        ax.set_title(f"Block {block}", pad=2)
        ax.set_xlabel(f"{kept}/{grid.size} kept", labelpad=1, fontsize=7)
    present = sorted(set(data["status_code"]))
    handles = [Patch(facecolor="none" if extent is not None and c == 0 else STATUS_COLOURS[c],
                     edgecolor="#555555", linewidth=0.5, label=STATUS_LABELS[c] + (" (clear)" if extent is not None
                                                                                    and c == 0 else ""))
               for c in present]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), handlelength=1.2)


def _heatmaps(data: pd.DataFrame, fig: "Figure", column: str, label: str, vmax: float | None,
              picture: bool) -> None:
    from matplotlib import colormaps

    blocks = list(dict.fromkeys(data["block"]))
    extra = 1 if picture and data.attrs.get("picture") is not None else 0
    axes = _panels(fig, len(blocks) + extra, _columns(len(blocks) + extra, fig))
    if extra:
        _picture(axes[0], data)
    cmap = colormaps["cividis"].with_extremes(bad="#FFFFFF")
    top = vmax if vmax is not None else float(np.nanmax(data[column].to_numpy())) if data[column].notna().any() else 1.0
    image = None
    for ax, block in zip(axes[extra:], blocks):
        image = ax.imshow(_grid(data, block, column), cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
        ax.set_title(f"Block {block}", pad=2)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, location="bottom", shrink=0.7, aspect=30, pad=0.02)
        bar.set_label(label, labelpad=1)
        bar.outline.set_linewidth(0.4)


def draw_attention_map(data: pd.DataFrame, fig: "Figure") -> None:
    """The input picture, then per block the CLS attention to each patch (head mean; white: gone)."""
    heads = data.attrs.get("heads")
    label = f"CLS attention weight (mean of {heads} heads)" if heads else "CLS attention weight (mean over heads)"
    _heatmaps(data, fig, "attention", label, None, picture=True)


def draw_retention_map(data: pd.DataFrame, fig: "Figure") -> None:
    """Per block, the share of test images in which each patch position is kept."""
    images = data.attrs.get("images")
    label = f"Patch kept (% of {images} test images)" if images else "Patch kept (% of test images)"
    _heatmaps(data, fig, "retention_pct", label, 100.0, picture=False)


def draw_token_accuracy(data: pd.DataFrame, fig: "Figure") -> None:
    """Accuracy vs the share of patch tokens kept, one curve per strategy in its fixed style."""
    from prunescope.explorer.figures.draw import _legend_above

    ax = fig.add_subplot()
    for index, (name, group) in enumerate(data.groupby("strategy", sort=False)):
        style = STRATEGY_STYLE.get(str(name)) or series_style(index)
        group = group.sort_values("keep_pct")
        ax.plot(group["keep_pct"], group["accuracy_pct"], color=style.colour, linestyle=mpl_dash(style),
                marker=style.marker, markeredgecolor=style.edge or style.colour, markeredgewidth=0.6,
                label=str(group["strategy_label"].iloc[0]))
    dense = data[data["keep_pct"] >= 100]["accuracy_pct"]
    if len(dense):
        ax.axhline(float(dense.mean()), color=ROLE_COLOURS["reference"], linewidth=0.6, linestyle=":", zorder=0)
    ax.set_xlim(0, 102)
    ax.set_ylim(0, 102)
    ax.set_xticks(range(0, 101, 20))
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel(KEEP_LABEL)
    ax.set_ylabel(ACCURACY_LABEL)
    _legend_above(fig, ax)


def _accuracy_height(data: pd.DataFrame, width: str) -> float:
    lines = data["strategy"].nunique()
    per_row = 2 if width == "single" else 4
    return 2.2 + 0.16 * math.ceil(lines / per_row)


# ------------------------------------------------------------------------------ registrations
@register_figure("token_map", "Kept / merged / recycled / dropped patch tokens per block for one test image",
                 draw=draw_token_map, options=(_IMAGE,), height=lambda d, w: _panel_height(d, w, 1))
def token_map_data(ex: "Explorer", *, image: int) -> pd.DataFrame:
    """:func:`token_map_table` of test image ``image``."""
    return token_map_table(ex, image)


@register_figure("attention_map", "CLS attention to each patch per block (mean over heads) for one test image",
                 draw=draw_attention_map, height=lambda d, w: _panel_height(d, w, 1) + 0.1,
                 options=(_IMAGE, Option("blocks", "floats", None, "Blocks shown (default: all)", bounds=(0, None))))
def attention_map_data(ex: "Explorer", *, image: int, blocks: tuple[float, ...] | None) -> pd.DataFrame:
    """:func:`attention_table` of test image ``image`` at ``blocks``."""
    return attention_table(ex, image, blocks)


@register_figure("retention_map", "How often each patch position survives each block over the test set "
                 "(current strategy)", draw=draw_retention_map, long=True,
                 height=lambda d, w: _panel_height(d, w, 0) + 0.05)
def retention_map_data(ex: "Explorer", *, progress: Progress | None = None) -> pd.DataFrame:
    """:func:`retention_table` of the current setting."""
    return retention_table(ex, progress)


@register_figure("token_accuracy", "Measured top-1 accuracy vs patch tokens kept, one curve per token strategy",
                 draw=draw_token_accuracy, long=True, shows_setting=True, height=_accuracy_height,
                 options=(Option("strategies", "strs", None, "Token strategies (default: all usable)"),
                          Option("keeps", "floats", DEFAULT_KEEPS, "Kept fractions of patch tokens, in (0, 1]",
                                 bounds=(0.01, 1.0))))
def token_accuracy_data(ex: "Explorer", *, strategies: tuple[str, ...] | None, keeps: tuple[float, ...],
                        progress: Progress | None = None) -> pd.DataFrame:
    """:func:`accuracy_table` at the current weight setting."""
    return accuracy_table(ex, strategies, keeps, progress)


def with_token_budget(ex: "Explorer", strategy: str, keep: float, seed: int = 0) -> "Explorer":
    """``ex`` with a token budget: ``strategy`` keeping ``keep`` of the patches after the first block."""
    from prunescope.explorer.tokens import make_token_setting

    data = token_data(ex)
    if strategy not in data.strategies():
        raise ValueError(f"unknown token strategy {strategy!r}; allowed: {', '.join(data.strategies())}")
    if not 0.0 < float(keep) <= 1.0:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep!r}")
    return ex.set_setting(replace(ex.setting, tokens=make_token_setting(strategy, float(keep), data.num_blocks,
                                                                        seed=seed)))
