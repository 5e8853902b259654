"""The four sections of the Tokens tab: the image inspector and three jobs (retention maps,
attributions, accuracy vs budget), each drawing what :class:`~prunescope.explorer.app.tokens_data.TokenData`
computed. Jobs run through :class:`~prunescope.explorer.app.job_view.JobPanel` (progress, cancel)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import panel as pn
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, LegendItem

from prunescope.explorer.app.dispatch import SessionDispatcher, session_callback
from prunescope.explorer.app.job_view import JobOwner, JobPanel
from prunescope.explorer.app.palette import OKABE_ITO
from prunescope.explorer.app.tokens_figures import (
    PictureWithMap, TokenMapFigure, curve_figure, diverging_mapper, heat_mapper, rgba_image, strategy_style,
)
from prunescope.explorer.tokens import STRATEGIES, make_token_setting
from prunescope.explorer.tokens.analysis import ATTRIBUTION_METHODS
from prunescope.explorer.viewmodel import percent
from prunescope.explorer.worker import LatestWorker

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.app.tokens_data import Attribution, Curves, Inspection, Retention, TokenData
    from prunescope.explorer.core.setting import Setting

_NOTE = {"font-size": "12px", "color": "#374151"}
#: Keep ratios of the accuracy-vs-budget curves (the current one is added).
CURVE_KEEPS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
METHOD_NAMES = {"Integrated Gradients": "integrated_gradients", "Saliency": "saliency", "Occlusion": "occlusion"}


def _note() -> pn.pane.HTML:
    return pn.pane.HTML("", styles=_NOTE, sizing_mode="stretch_width", margin=(4, 10))


def _class(data: "TokenData", label: int) -> str:
    names = getattr(data.explorer.sample, "class_names", ()) or ()
    return html.escape(names[label]) if 0 <= label < len(names) else str(label)


def _size(data: "TokenData") -> tuple[tuple[int, int], dict[str, str]]:
    """(W, H) drawing size and axis labels: pixels for images, patches otherwise."""
    image = data.image(0)
    if image is not None:
        return (int(image.shape[2]), int(image.shape[1])), {}
    rows, cols = data.grid
    return (cols, rows), {"x_label": "patch column", "y_label": "patch row"}


class ImageSection(pn.viewable.Viewer):
    """Token map per block, CLS attention per block and head, and rollout, for one test image."""

    def __init__(self, dispatch: SessionDispatcher, on_error: Callable[[BaseException], None]) -> None:
        super().__init__()
        self._dispatch, self._on_error = dispatch, on_error
        self._worker = LatestWorker(name="prunescope-tokens-image")
        self.data: TokenData | None = None
        self.inspection: Inspection | None = None
        self.counts: list[dict[str, int]] = []
        self.index = pn.widgets.IntSlider(label="Test image (index in the test split)", start=0, end=1, value=0,
                                          width=320)
        self.head = pn.widgets.Select(label="CLS attention of", options={"mean over heads": "mean"}, value="mean",
                                      width=200)
        self.head_fusion = pn.widgets.Select(label="Rollout: fuse heads by", options=["mean", "max"], value="mean",
                                             width=200)
        self.note = _note()
        self.maps_pane = pn.pane.Bokeh(None)
        self.rollout_pane = pn.pane.Bokeh(None)
        self.attention_pane = pn.pane.Bokeh(None)
        self._setting: Setting | None = None
        self.index.param.watch(session_callback(lambda e: self._request()), "value")
        self.head_fusion.param.watch(session_callback(lambda e: self._draw_rollout()), "value")
        self.head.param.watch(session_callback(lambda e: self._draw_attention()), "value")
        self._layout = pn.Column(
            pn.Row(self.index, self.head, self.head_fusion), self.note,
            pn.pane.HTML("<b>Tokens at each block's input</b> (clear: kept; dark: dropped; orange: merged into a "
                         "kept token; purple: recycled into one token)", styles=_NOTE, margin=(4, 10)),
            self.maps_pane,
            pn.pane.HTML("<b>Attention rollout</b> (Abnar &amp; Zuidema 2020): relevance of each patch for the "
                         "CLS token after the last block", styles=_NOTE, margin=(4, 10)),
            self.rollout_pane,
            pn.pane.HTML("<b>CLS attention at each block</b> (pick a head above; no colour: token not present)",
                         styles=_NOTE, margin=(4, 10)),
            self.attention_pane,
            sizing_mode="stretch_width",
        )

    def set_data(self, data: "TokenData") -> None:
        self.data, self.inspection = data, None
        self.index.param.update(end=max(data.num_images - 1, 1), value=0, disabled=data.num_images < 2)
        size, labels = _size(data)
        self.token_maps = [TokenMapFigure(b, size, data.grid) for b in range(data.num_blocks)]
        for m in self.token_maps:
            if labels:
                m.figure.xaxis.axis_label, m.figure.yaxis.axis_label = labels["x_label"], labels["y_label"]
        self.maps_pane.object = row(*[m.figure for m in self.token_maps])
        self.rollout = PictureWithMap("rollout relevance", size, heat_mapper(), colour_bar="relevance",
                                      width=230, height=200, **labels)
        self.rollout_pane.object = self.rollout.figure
        self.head.options = {"mean over heads": "mean", **{f"head {h}": h for h in range(data.heads)}}
        self.head.value = "mean"
        self.heatmaps: list[PictureWithMap] = []
        for b in range(data.num_blocks):
            self.heatmaps.append(PictureWithMap(f"block {b}", size, heat_mapper(), colour_bar="attention",
                                                width=200, height=170, **labels))
        self.attention_pane.object = row(*[c.figure for c in self.heatmaps])
        if not data.adapter.has_attention:
            self.attention_pane.visible = self.rollout_pane.visible = False

    def show(self, setting: "Setting") -> None:
        """Inspect the picked image under ``setting`` (on this section's worker)."""
        self._setting = setting
        self._request()

    def _request(self) -> None:
        data, setting, index = self.data, self._setting, int(self.index.value)
        if data is None or setting is None:
            return
        self._dispatch.submit(self._worker, lambda: data.inspect(setting, index),
                              on_done=lambda result: self._draw(data, result), on_error=self._on_error)

    def _draw(self, data: "TokenData", inspection: "Inspection") -> None:
        if data is not self.data:
            return
        self.inspection = inspection
        picture = rgba_image(inspection.image)
        self.counts = [m.show(picture, inspection.status[b]) for b, m in enumerate(self.token_maps)]
        for b, (m, counts) in enumerate(zip(self.token_maps, self.counts)):
            m.figure.title.text = f"block {b}: {inspection.tokens[b]} tokens"
        truth = _class(data, inspection.label)
        self.note.object = (
            f"Image {inspection.index}: true class <b>{truth}</b>; dense model: <b>{_class(data, inspection.dense_prediction)}</b> "
            f"({percent(inspection.dense_probability)}); this setting: <b>{_class(data, inspection.prediction)}</b> "
            f"({percent(inspection.probability)}).")
        if inspection.attention is None:
            return
        self._draw_attention()
        self._draw_rollout()

    def _draw_attention(self) -> None:
        """CLS attention of the picked head (or the head mean) at every block, over the picture."""
        if self.inspection is None or self.inspection.attention is None:
            return
        head = self.head.value
        picture = rgba_image(self.inspection.image)
        for b, cell in enumerate(self.heatmaps):
            maps = self.inspection.attention[b]  # (heads, rows, cols)
            values = maps.nanmean(0) if head == "mean" else maps[int(head)]
            high = float(np.nanmax(values.numpy()))
            cell.mapper.update(low=0.0, high=high if high > 0 else 1.0)
            cell.figure.title.text = f"block {b}, {'head mean' if head == 'mean' else f'head {head}'}"
            cell.show(picture, values)

    def _draw_rollout(self) -> None:
        if self.inspection is None or self.inspection.rollout is None:
            return
        values = self.data.rollout(self.inspection, self.head_fusion.value)
        self.rollout.mapper.update(low=0.0, high=float(values.max()) or 1.0)
        self.rollout.show(rgba_image(self.inspection.image), values)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        return self._worker.wait_idle(timeout)

    def close(self) -> None:
        self._worker.close()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout


class _JobSection(JobOwner, pn.viewable.Viewer):
    """A section whose result comes from one JobPanel job for one setting."""

    run_label = ""
    job_name = ""

    def __init__(self, dispatch: SessionDispatcher, on_error: Callable[[BaseException], None],
                 current: Callable[[], tuple[Any, "TokenData | None"]]) -> None:
        super().__init__()
        self._current = current
        self._own_job(JobPanel(dispatch, on_error, run_label=self.run_label, name=f"tokens-{self.job_name}",
                               on_run=self.run))
        self.data: TokenData | None = None
        self.result: Any = None
        self.stale = _note()

    def set_data(self, data: "TokenData") -> None:
        if data is not self.data:
            self.job.cancel()
            self.result = None
        self.data = data

    def run(self) -> None:
        explorer, data = self._current()
        if data is None:
            return
        setting = explorer.setting
        fn = self.job_fn(data, setting)
        if fn is None:
            return
        self.job.start(fn, lambda result: self._finished(data, result), f"Computing for <b>{explorer.name}</b>…")

    def _finished(self, data: "TokenData", result: Any) -> None:
        if data is not self.data:
            return
        self.result = result
        self.draw(result)
        self.mark(data.explorer.setting)

    def mark(self, setting: "Setting") -> None:
        """Say whether the drawn result belongs to ``setting``."""
        if self.result is None:
            self.stale.object = ""
            return
        self.stale.object = ("" if self.result.setting == setting else
                             "⚠ Computed for an earlier setting; press the button to compute this one.")

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    def job_fn(self, data: "TokenData", setting: "Setting"):  # pragma: no cover - abstract
        raise NotImplementedError

    def draw(self, result: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class RetentionSection(_JobSection):
    """How often each patch position survives, per strategy and block, over the test split."""

    run_label = "Compute retention maps"
    job_name = "retention"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.note = _note()
        self.grid_pane = pn.pane.Bokeh(None)
        self.table = pn.pane.DataFrame(None, index=False, sizing_mode="stretch_width", max_height=260)
        self._layout = pn.Column(
            pn.pane.HTML("Every strategy at the current per-block budget, over the test split: the share of images "
                         "in which each patch keeps its own token at each block's input (FEATHER, Endo et al. 2025).",
                         styles=_NOTE, margin=(4, 10)),
            self.job, self.stale, self.note, self.grid_pane, self.table, sizing_mode="stretch_width")

    def job_fn(self, data, setting):
        return lambda progress, cancel: data.retention(setting, progress=progress, cancel=cancel)

    def draw(self, result: "Retention") -> None:
        data = self.data
        mapper = heat_mapper(low=0.0, high=1.0)
        rows = []
        self.figures: dict[tuple[str, int], PictureWithMap] = {}
        cov = result.table.set_index(["strategy", "block"])
        keep = result.keep
        shown = [b for b in range(len(keep)) if keep[b] < (keep[b - 1] if b else 1.0)]
        for name, maps in result.maps.items():
            cells = []
            for b in shown:
                last = b == shown[-1]
                c = cov.loc[(name, b), "coverage"]
                title = f"{STRATEGIES[name].display_name.split(' (')[0]} · block {b}: {percent(c, 0)} covered"
                cell = PictureWithMap(title, (data.grid[1], data.grid[0]), mapper, alpha=1.0,
                                      colour_bar="share of images" if last else None, width=160 + (80 if last else 0),
                                      height=160, x_label="patch column", y_label="patch row")
                cell.show(None, maps[b])
                self.figures[(name, b)] = cell
                cells.append(cell.figure)
            rows.append(cells)
        self.grid_pane.object = column(*[row(*cells) for cells in rows])  # gridplot collapses inside Panel
        table = result.table.assign(keep=[percent(k) for k in result.table["keep"]],
                                    coverage=[percent(c) for c in result.table["coverage"]],
                                    patches_mean=result.table["patches_mean"].round(2),
                                    patches_std=result.table["patches_std"].round(2))
        self.table.object = table.rename(columns={
            "coverage": "regions covered (2x2, % of image-region pairs)", "patches_mean": "patch tokens (mean)",
            "patches_std": "patch tokens (std)"})
        self.note.object = (coverage_sentence(result) + f" Drawn: the blocks that prune ({', '.join(map(str, shown))});"
                            " a block keeping as many tokens as the one before keeps the same ones.")
        self.job.status.object = f"Measured over {result.images} test images."


def coverage_sentence(result: "Retention") -> str:
    """What the retention table shows for FEATHER against CLS attention at the last block (computed)."""
    table = result.table
    last = int(table["block"].max())
    at = table[table["block"] == last].set_index("strategy")["coverage"]
    parts = [f"{STRATEGIES[n].display_name}: {percent(at[n])}" for n in ("feather", "cls_attention") if n in at]
    if not parts:
        return ""
    text = (f"At block {last} (keep {percent(result.keep[last])}), the share of (image, quadrant) pairs that keep "
            f"at least one token: " + "; ".join(parts) + ".")
    if "feather" in at and "cls_attention" in at:
        f, c = float(at["feather"]), float(at["cls_attention"])
        text += (" FEATHER covers more of the image than CLS attention here." if f > c + 1e-9 else
                 " CLS attention covers as much as FEATHER here." if abs(f - c) <= 1e-9 else
                 " CLS attention covers more of the image than FEATHER here.")
    return text


class AttributionSection(_JobSection):
    """Captum attributions of the dense and the pruned model on the picked image, side by side."""

    run_label = "Compute attributions"
    job_name = "attribution"

    def __init__(self, dispatch, on_error, current, index: Callable[[], int]) -> None:
        super().__init__(dispatch, on_error, current)
        self._index = index
        self.method = pn.widgets.Select(label="Method", options=METHOD_NAMES, value="integrated_gradients", width=220)
        self.steps = pn.widgets.IntInput(label="IG steps", value=32, start=4, end=512, width=120)
        self.note = _note()
        self.pane = pn.pane.Bokeh(None)
        self._layout = pn.Column(
            pn.pane.HTML("Attribution of the dense model's predicted class, summed over colour channels "
                         "(orange: raises the class score, purple: lowers it).", styles=_NOTE, margin=(4, 10)),
            pn.Row(self.method, self.steps), self.job, self.stale, self.note, self.pane, sizing_mode="stretch_width")

    def job_fn(self, data, setting):
        method, index, steps = self.method.value, int(self._index()), int(self.steps.value)
        if method not in ATTRIBUTION_METHODS:
            raise ValueError(f"unknown attribution method {method!r}")
        return lambda progress, cancel: data.attribution(setting, index, method, n_steps=steps, progress=progress,
                                                         cancel=cancel)

    def draw(self, result: "Attribution") -> None:
        data = self.data
        size, labels = _size(data)
        mapper = diverging_mapper()
        maps = [result.dense["attribution"].sum(0), result.pruned["attribution"].sum(0)]
        bound = max(float(m.abs().max()) for m in maps) or 1.0
        mapper.update(low=-bound, high=bound)
        picture = rgba_image(data.image(result.index))
        self.figures = []
        for title, out, values, last in (("dense", result.dense, maps[0], False), ("this setting", result.pruned, maps[1], True)):
            cell = PictureWithMap(f"{title}: predicts {_class(data, out['prediction'])} ({percent(out['probability'])})",
                                  size, mapper, alpha=0.8, colour_bar="attribution" if last else None,
                                  width=260 + (70 if last else 0), height=260, **labels)
            cell.show(picture, values)
            self.figures.append(cell)
        self.pane.object = row(*[c.figure for c in self.figures])
        name = next(k for k, v in METHOD_NAMES.items() if v == result.method)
        text = f"{name} for class <b>{_class(data, result.dense['target'])}</b> on image {result.index}."
        if result.method == "integrated_gradients":
            text += (f" Convergence delta (completeness error): dense {result.dense['delta']:.2e}, "
                     f"this setting {result.pruned['delta']:.2e}.")
        self.note.object = text
        self.job.status.object = "Done."

    def mark(self, setting) -> None:
        super().mark(setting)
        if self.result is not None and self.result.index != int(self._index()):
            self.stale.object = f"Drawn for image {self.result.index}; press the button for the picked image."


class CurvesSection(_JobSection):
    """Accuracy against the keep ratio per strategy, the current setting starred."""

    run_label = "Run accuracy vs budget"
    job_name = "curves"

    def __init__(self, dispatch, on_error, current, schedule: Callable[[], tuple[int, dict]]) -> None:
        super().__init__(dispatch, on_error, current)
        self._schedule = schedule
        self._star_worker = LatestWorker(name="prunescope-tokens-star")
        self._dispatch, self._on_error = dispatch, on_error
        self.strategies = pn.widgets.MultiChoice(label="Strategies", options={}, sizing_mode="stretch_width")
        self.lines = ColumnDataSource({"xs": [], "ys": [], "label": [], "color": []})
        self.points = ColumnDataSource({"x": [], "y": [], "label": [], "color": [], "marker": []})
        self.star = ColumnDataSource({"x": [], "y": [], "label": []})
        self.figure = curve_figure()
        self.figure.multi_line("xs", "ys", source=self.lines, color="color", line_width=2, legend_field="label")
        self.figure.scatter("x", "y", source=self.points, color="color", marker="marker", size=7)
        star = self.figure.scatter("x", "y", source=self.star, marker="star", size=20, fill_color=OKABE_ITO["yellow"],
                                   line_color="black", line_width=1.5)
        self.figure.legend[0].items.append(LegendItem(label="current setting", renderers=[star]))
        self._layout = pn.Column(
            pn.pane.HTML("Accuracy on the test split at the current weights, per strategy, keep ratios from "
                         f"{percent(CURVE_KEEPS[0], 0)} to 100% under the schedule chosen above.",
                         styles=_NOTE, margin=(4, 10)),
            self.strategies, self.job, self.stale, pn.pane.Bokeh(self.figure, sizing_mode="stretch_width"),
            sizing_mode="stretch_width")

    def set_data(self, data) -> None:
        super().set_data(data)
        names = {STRATEGIES[n].display_name: n for n in data.strategies()}
        self.strategies.param.update(options=names, value=list(names.values()))
        for source in (self.lines, self.points, self.star):
            source.data = {k: [] for k in source.data}

    def keeps(self, setting) -> list[float]:
        """The curve's keep ratios, with the current single ratio added when the budget has one."""
        keeps = set(CURVE_KEEPS)
        if setting.tokens is not None and len(set(k for k in setting.tokens.keep if k < 1)) == 1:
            keeps.add(min(setting.tokens.keep))
        return sorted(keeps)

    def job_fn(self, data, setting):
        start, schedule = self._schedule()
        strategies, keeps = list(self.strategies.value), self.keeps(setting)
        if not strategies:
            raise ValueError("pick at least one strategy for the curves")
        self._made_with = (start, schedule)
        return lambda progress, cancel: data.curves(setting, strategies, keeps, start_block=start, schedule=schedule,
                                                    progress=progress, cancel=cancel)

    def _final_keep(self, strategy: str, keep: float) -> float:
        """The keep ratio the last block has for this curve point (the x axis)."""
        start, schedule = self._made_with
        tokens = make_token_setting(strategy, keep, self.data.num_blocks, start_block=start, **schedule)
        return min(tokens.keep)

    def draw(self, result: "Curves") -> None:
        table = result.table
        names = list(dict.fromkeys(table["strategy"])) if len(table) else []
        xs, ys, labels, colours, markers = [], [], [], [], []
        for i, name in enumerate(names):
            part = table[table["strategy"] == name]
            xs.append([100 * self._final_keep(name, k) for k in part["keep"]])
            ys.append([100 * float(a) for a in part["accuracy"]])
            labels.append(STRATEGIES[name].display_name)
            colour, marker = strategy_style(name, i)
            colours.append(colour)
            markers.append(marker)
        self.lines.data = {"xs": xs, "ys": ys, "label": labels, "color": colours}
        self.points.data = {"x": [v for x in xs for v in x], "y": [v for y in ys for v in y],
                            "label": [lab for lab, x in zip(labels, xs) for _ in x],
                            "color": [c for c, x in zip(colours, xs) for _ in x],
                            "marker": [m for m, x in zip(markers, xs) for _ in x]}
        self._star(result.setting, result.current)
        done = len(table)
        self.job.status.object = (f"Cancelled: {done} points measured." if result.cancelled else
                                  f"Measured: {done} points on {self.data.num_images} test images.")

    def _star(self, setting, metrics) -> None:
        x = 100 * (min(setting.tokens.keep) if setting.tokens is not None else 1.0)
        self.star.data = {"x": [x], "y": [100 * metrics.accuracy], "label": ["current setting"]}

    def mark(self, setting) -> None:
        """Move the star to ``setting`` (measured on a worker); curves of other weights are stale."""
        if self.result is None:
            self.stale.object = ""
            return
        same_weights = setting.weights == self.result.setting.weights
        self.stale.object = "" if same_weights else ("⚠ The curves are for earlier weights; press the button to "
                                                     "measure the current ones.")
        data = self.data
        self._dispatch.submit(self._star_worker, lambda: data.explorer.evaluate(setting=setting),
                              on_done=lambda m: self._star(setting, m) if data is self.data else None,
                              on_error=self._on_error)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        return self.job.wait_idle(timeout) and self._star_worker.wait_idle(timeout)

    def close(self) -> None:
        super().close()
        self._star_worker.close()
