"""The Geometry tab: how the current pruning (weights and tokens) moves the feature space.

An embedding scatter of the evaluation samples (dense positions, pruned positions in the same
frame, a line between them; coloured by class, flip or margin change; hover shows the input and
both predictions; a tap pins a sample), CKA per layer (and the layer x layer matrix), histograms
of angle / norm / margin (dense vs pruned, clean vs corrupted), the samples most fragile to the
pruning and a comparison of up to 4 methods under corruptions (Chen et al. 2022).

Every number comes from :mod:`prunescope.explorer.geometry.facade` through the figure tables of
:mod:`prunescope.explorer.geometry.figures` (what the Export menus download). Compute runs on the
tab's workers (the latest request wins; CKA on its own so the scatter never waits for it); the
first UMAP fit of a layer is a job with progress and cancel, PCA is instant.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import panel as pn

from prunescope.explorer.app.dispatch import SessionDispatcher
from prunescope.explorer.app.export_view import ExportMenu
from prunescope.explorer.app.geometry_compare import CompareSection
from prunescope.explorer.app.geometry_plots import CKAChart, CKAMatrixPlot, EmbeddingPlot, GeometryHistograms, png_uri
from prunescope.explorer.app.job_view import JobPanel
from prunescope.explorer.geometry.corruptions import CORRUPTIONS, SEVERITIES
from prunescope.explorer.geometry.facade import (
    dense_frame,
    embedding_ready,
    explorer_cka,
    explorer_fragile,
    geometry_layers,
    image_shape,
)
from prunescope.explorer.geometry.figures import (
    FLIP_LABELS,
    class_name,
    cka_table,
    embedding_table,
    hist_table,
)
from prunescope.explorer.worker import LatestWorker

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from prunescope.explorer.engine import Explorer

_NOTE = {"font-size": "12px", "color": "#4b5563"}
COLOURS = {"class": "class", "flip (dense vs pruned correctness)": "flip", "margin change": "margin"}
METHODS = {"PCA (instant)": "pca", "UMAP": "umap"}
NO_CORRUPTION = "none"
FRAGILE_K = 12


@dataclass
class Frame:
    """What one refresh computed (drawn on the session's loop)."""

    key: tuple
    hist: "pd.DataFrame"
    fragile: "pd.DataFrame"
    seconds: float


def thumbnails(ex: "Explorer") -> list[str]:
    """PNG data URIs of every evaluation input as its image (empty for non-image inputs); memoised."""
    shape = image_shape(ex)
    if shape is None:
        return []

    def make() -> list[str]:
        inputs = ex.eval_data[0].cpu()
        return [png_uri(x.reshape(shape)) for x in inputs]

    return ex.cache.get_or(("geometry", "thumbs"), make)


def _note() -> pn.pane.HTML:
    return pn.pane.HTML("", styles=_NOTE, sizing_mode="stretch_width", margin=(4, 10))


def _row(*objects: Any) -> pn.Row:
    return pn.Row(pn.HSpacer(), *objects, sizing_mode="stretch_width")


class GeometryView(pn.viewable.Viewer):
    """The Geometry tab of one session (see the module doc).

    ``set_explorer(explorer)`` switches model; ``refresh()`` (the app calls it while the tab is
    visible, after every state change) recomputes for the current setting on the tab's worker.
    Public for tests: the widgets below, ``embedding`` / ``hist`` / ``cka`` / ``fragile`` (the
    tables drawn), ``compare`` (the comparison section), ``pinned`` and :meth:`wait_idle`.
    """

    def __init__(self, dispatch: SessionDispatcher, on_error: Callable[[BaseException], None],
                 clear_error: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._dispatch = dispatch
        self._on_error = on_error
        self._clear_error = clear_error or (lambda: None)
        self._explorer: Explorer | None = None
        self._worker = LatestWorker(name="prunescope-geometry")
        self._cka_worker = LatestWorker(name="prunescope-cka")
        self._requested: tuple | None = None
        self._cka_requested: tuple | None = None
        self.embedding: pd.DataFrame | None = None
        self.hist: pd.DataFrame | None = None
        self.fragile: pd.DataFrame | None = None
        self.cka: pd.DataFrame | None = None
        self.cka_grid: pd.DataFrame | None = None
        self.pinned: int | None = None
        #: Seconds from refresh() to the scatter's data, and to the histograms and fragile samples.
        self.scatter_seconds: float | None = None
        self.last_seconds: float | None = None
        self._fit_note = ""
        self._syncing = False

        self.layer = pn.widgets.AutocompleteInput(label="Feature point (module, or NAME:input)", options=[],
                                                  restrict=False, min_characters=0, case_sensitive=False, width=300)
        self.method = pn.widgets.RadioButtonGroup(label="Embedding", options=METHODS, value="pca", width=220,
                                                  margin=(28, 10, 5, 10))
        self.colour = pn.widgets.Select(label="Colour by", options=COLOURS, value="flip", width=240)
        self.corruption = pn.widgets.Select(label="Corruption (histograms, fragile samples)",
                                            options=[NO_CORRUPTION, *CORRUPTIONS], value=NO_CORRUPTION, width=260)
        self.severity = pn.widgets.IntSlider(label="Severity", start=min(SEVERITIES), end=max(SEVERITIES), value=3,
                                             width=180)
        self.pin_input = pn.widgets.IntInput(label="Pinned sample (-1: none)", value=-1, start=-1, width=170)
        self.show_matrix = pn.widgets.Checkbox(label="Layer x layer CKA matrix", value=False, margin=(10, 10))
        self.message = _note()
        self.scatter_note = _note()
        self.pin_card = pn.pane.HTML("", sizing_mode="stretch_width", margin=(4, 10), styles={"font-size": "12px"})
        self.fragile_html = pn.pane.HTML("", sizing_mode="stretch_width", margin=(4, 10))
        self.cka_note = _note()

        self.scatter = EmbeddingPlot()
        self.cka_chart = CKAChart()
        self.cka_matrix = CKAMatrixPlot()
        self.histograms = GeometryHistograms()
        self.fit_job = JobPanel(dispatch, on_error, run_label="Fit UMAP", name="umap-fit",
                                on_run=lambda: self._start_fit())
        self.embedding_export = ExportMenu("embedding", lambda: self._held(self.embedding), on_error=on_error,
                                           enabled=False)
        self.cka_export = ExportMenu("cka", lambda: self._held(self.cka), on_error=on_error, enabled=False)
        self.hist_export = ExportMenu("geometry_hist", lambda: self._held(self.hist), on_error=on_error, enabled=False)
        self.compare = CompareSection(dispatch, on_error)

        self._layout = self._build()
        self._wire()

    # ------------------------------------------------------------------ layout
    def _build(self) -> pn.Column:
        hist = pn.Column(_row(self.hist_export), pn.Row(*[pn.pane.Bokeh(f, sizing_mode="stretch_width")
                                                         for f in self.histograms.figures],
                                                         sizing_mode="stretch_width"), sizing_mode="stretch_width")
        sections = pn.Tabs(
            ("Histograms", hist),
            ("CKA", pn.Column(pn.Row(self.show_matrix, pn.HSpacer(), self.cka_export, sizing_mode="stretch_width"),
                              self.cka_note, pn.pane.Bokeh(self.cka_chart.figure, sizing_mode="stretch_width"),
                              pn.pane.Bokeh(self.cka_matrix.figure), sizing_mode="stretch_width")),
            ("Fragile samples", self.fragile_html),
            ("Compare methods", self.compare),
            dynamic=False, sizing_mode="stretch_width")
        self.sections = sections
        return pn.Column(
            self.message,
            pn.FlexBox(self.layer, self.method, self.colour, self.corruption, self.severity, self.pin_input,
                       sizing_mode="stretch_width"),
            self.fit_job, self.scatter_note, _row(self.embedding_export),
            pn.Row(pn.pane.Bokeh(self.scatter.figure, sizing_mode="stretch_width"),
                   pn.Column(self.pin_card, width=260), sizing_mode="stretch_width"),
            sections, sizing_mode="stretch_width")

    def _wire(self) -> None:
        for widget in (self.layer, self.method, self.colour, self.corruption, self.severity):
            widget.param.watch(self._guarded(lambda e: self.refresh()), "value")
        self.show_matrix.param.watch(self._guarded(lambda e: self._request_cka()), "value")
        self.pin_input.param.watch(self._guarded(lambda e: self.pin(None if e.new < 0 else int(e.new))), "value")
        self.scatter.source.selected.on_change("indices", self._on_tap)

    def _guarded(self, callback: Callable[[Any], None]):
        def run(event: Any) -> None:
            if not self._syncing:
                callback(event)
        return run

    def _held(self, table: "pd.DataFrame | None") -> "pd.DataFrame":
        if table is None:
            raise ValueError("nothing drawn yet: open the Geometry tab once the model is loaded")
        return table

    # ------------------------------------------------------------------ explorer
    def set_explorer(self, explorer: "Explorer") -> None:
        """Show ``explorer``: the layer picker lists its modules; its tables are drawn on refresh."""
        if explorer is self._explorer:
            return
        self.fit_job.cancel()
        self.compare.set_explorer(explorer)
        self._explorer = explorer
        self._requested = self._cka_requested = None
        self.embedding = self.hist = self.fragile = self.cka = self.cka_grid = None
        self.pinned = None
        self._fit_note = ""
        self.scatter.clear()
        for menu in (self.embedding_export, self.cka_export, self.hist_export):
            menu.set_enabled(False)
        self._syncing = True
        try:
            try:
                layers = geometry_layers(explorer)
            except ValueError as err:  # e.g. a model without a linear classifier: pick a layer by hand
                layers = [name for name, _ in explorer.model.named_modules() if name]
                self.message.object = html.escape(f"{explorer.name}: {err}")
            self.layer.param.update(options=layers, value=layers[0] if layers else "")
            self.pin_input.value = -1
        finally:
            self._syncing = False
        shape = image_shape(explorer)
        self.message.object = (f"<b>{html.escape(explorer.name)}</b>: {len(explorer.eval_data[1])} test samples"
                               f"{'' if shape is None else ' shown as ' + 'x'.join(map(str, shape)) + ' images'}; "
                               f"features at the classifier's input unless another point is picked.")

    @property
    def layer_spec(self) -> str | None:
        value = (self.layer.value or "").strip()
        return value or None

    def _key(self) -> tuple:
        ex = self._explorer
        corruption = None if self.corruption.value == NO_CORRUPTION else self.corruption.value
        return (id(ex), ex.setting, self.layer_spec, self.method.value, self.colour.value, corruption,
                int(self.severity.value))

    # ------------------------------------------------------------------ refresh
    def refresh(self) -> None:
        """Recompute for the current setting and controls on the tab's worker (latest wins); a
        UMAP frame not fitted yet starts the fit job first and is drawn when it is done."""
        ex = self._explorer
        if ex is None:
            return
        key = self._key()
        if key == self._requested:
            return
        _, setting, layer, method, colour, corruption, severity = key
        try:
            ready = embedding_ready(ex, layer, method)
        except ValueError as err:  # an unknown layer: the error lists the known ones
            self._on_error(err)
            return
        self._requested = key
        if not ready:
            self.scatter_note.object = "Fitting UMAP on the dense features (once per layer; cached on disk)…"
            self._start_fit()
        started = time.perf_counter()

        def job() -> Frame:
            table = embedding_table(ex, layer, method, colour, setting) if ready else None
            if table is not None:  # the scatter first; the corrupted forward for the histograms after
                self._dispatch(lambda: self._show_scatter(key, table, started))
            hist = hist_table(ex, corruption, severity, setting=setting)
            fragile = explorer_fragile(ex, setting, FRAGILE_K, corruption, severity if corruption else 0)
            return Frame(key, hist, fragile, time.perf_counter() - started)

        self._dispatch.submit(self._worker, job, on_done=self._show, on_error=lambda err: self._failed(key, err))
        self._request_cka()

    def _failed(self, key: tuple, err: BaseException) -> None:
        if key == self._requested:
            self._requested = None
        self._on_error(err)

    def _start_fit(self) -> None:
        ex, layer = self._explorer, self.layer_spec
        if ex is None:
            return
        self.fit_job.start(lambda progress, cancel: dense_frame(ex, layer, "umap", progress, cancel),
                           on_done=lambda frame: self._fitted(ex, frame),
                           running_text=f"Fitting UMAP on the dense features of {html.escape(layer or 'the feature layer')}…")

    def _fitted(self, ex: "Explorer", frame: Any) -> None:
        if ex is not self._explorer:
            return
        self._fit_note = ("UMAP frame " + ("read from the disk cache" if frame.cache_hit else "fitted")
                          + (f" ({html.escape(frame.note)})" if frame.note else "") + ".")
        self.scatter_note.object = self._fit_note
        self._requested = None
        self.refresh()

    def _show_scatter(self, key: tuple, table: "pd.DataFrame", started: float) -> None:
        if key != self._requested or self._explorer is None:
            return  # a newer request is on its way
        ex = self._explorer
        self._clear_error()
        self.embedding = table
        names = [class_name(ex, c) for c in range(int(table["label"].max()) + 1)]
        self.scatter.show(table, names, thumbnails(ex), (id(ex), len(table)))
        self.embedding_export.set_enabled(True)
        counts = table["flip"].value_counts()
        moved = ((table["x_pruned"] - table["x_dense"]) ** 2 + (table["y_pruned"] - table["y_dense"]) ** 2) ** 0.5
        self.scatter_note.object = (
            ", ".join(f"{FLIP_LABELS[k]}: {int(counts.get(k, 0))}" for k in FLIP_LABELS)
            + f"; mean displacement {moved.mean():.3g} (dense frame units)"
            + (f". {self._fit_note}" if table.attrs.get("method") == "umap" and self._fit_note else ""))
        self.scatter.pin(self.embedding, self.pinned)
        self._show_pin()
        self.scatter_seconds = time.perf_counter() - started

    def _show(self, frame: Frame) -> None:
        if frame.key != self._requested or self._explorer is None:
            return  # a newer request is on its way
        ex = self._explorer
        self._clear_error()
        self.hist, self.fragile = frame.hist, frame.fragile
        self.histograms.show(frame.hist)
        self.hist_export.set_enabled(True)
        self._show_fragile(ex, frame.fragile)
        self.last_seconds = frame.seconds

    # ------------------------------------------------------------------ CKA
    def _request_cka(self) -> None:
        ex = self._explorer
        if ex is None:
            return
        matrix = bool(self.show_matrix.value)
        key = (id(ex), ex.setting, matrix)
        if key == self._cka_requested:
            return
        self._cka_requested = key
        self.cka_note.object = "Computing CKA…"
        setting = ex.setting

        def job() -> tuple:
            table = cka_table(ex, setting)
            grid = explorer_cka(ex, setting, matrix=True).matrix if matrix else None
            return key, table, grid

        def failed(err: BaseException) -> None:
            if key == self._cka_requested:
                self._cka_requested = None
            self._on_error(err)

        self._dispatch.submit(self._cka_worker, job, on_done=lambda r: self._show_cka(*r), on_error=failed)

    def _show_cka(self, key: tuple, table: "pd.DataFrame", grid: "pd.DataFrame | None") -> None:
        if key != self._cka_requested:
            return
        self.cka, self.cka_grid = table, grid
        self.cka_chart.show(table)
        self.cka_export.set_enabled(True)
        self.cka_matrix.figure.visible = grid is not None
        if grid is not None:
            self.cka_matrix.show(grid)
        self.cka_note.object = (f"{len(table)} layers (module outputs; token sequences averaged over tokens). "
                                f"Lowest: {html.escape(str(table.loc[table['cka'].idxmin(), 'layer']))} "
                                f"at {table['cka'].min():.3f}." if len(table) and table["cka"].notna().any()
                                else "No layer to compare.")

    # ------------------------------------------------------------------ pinning and fragile samples
    def _on_tap(self, attr: str, old: Any, new: Any) -> None:
        if new:
            self.pin(int(self.scatter.source.data["sample"][new[0]]))

    def pin(self, sample: int | None) -> None:
        """Pin ``sample`` (or none): its card shows the image, both predictions and its geometry."""
        n = 0 if self._explorer is None else len(self._explorer.eval_data[1])
        if sample is not None and not 0 <= sample < n:
            self._on_error(ValueError(f"sample must be in 0..{n - 1} (or -1 for none), got {sample}"))
            return
        self.pinned = sample
        self._syncing = True
        try:
            self.pin_input.value = -1 if sample is None else sample
        finally:
            self._syncing = False
        self.scatter.pin(self.embedding, sample)
        self._show_pin()

    def _show_pin(self) -> None:
        ex, sample, table = self._explorer, self.pinned, self.embedding
        if ex is None or sample is None or table is None or sample >= len(table):
            self.pin_card.object = "<i>Tap a point (or type its number) to pin a sample.</i>"
            return
        row = table.iloc[sample]
        thumbs = thumbnails(ex)
        image = (f'<img src="{thumbs[sample]}" style="width:128px;height:128px;image-rendering:pixelated;'
                 f'border:1px solid #ccc">' if thumbs else "")
        self.pin_card.object = (
            f"<b>Sample #{sample}</b><br>{image}<br>true class <b>{html.escape(class_name(ex, int(row['label'])))}</b>"
            f"<br>dense: {html.escape(class_name(ex, int(row['dense_pred'])))} (margin {row['dense_margin']:.3f})"
            f"<br>pruned: {html.escape(class_name(ex, int(row['pruned_pred'])))} (margin {row['pruned_margin']:.3f})"
            f"<br>{FLIP_LABELS[row['flip']]}")

    def _show_fragile(self, ex: "Explorer", table: "pd.DataFrame") -> None:
        thumbs = thumbnails(ex)
        cards = []
        for row in table.itertuples():
            image = (f'<img src="{thumbs[row.sample]}" style="width:72px;height:72px;image-rendering:pixelated">'
                     if thumbs else "")
            cards.append(
                f'<div style="display:inline-block;width:150px;margin:4px;font:11px system-ui;vertical-align:top">'
                f'{image}<br><b>#{row.sample}</b> true {html.escape(class_name(ex, int(row.label)))}<br>'
                f'{html.escape(class_name(ex, int(row.dense_pred)))} &rarr; '
                f'{html.escape(class_name(ex, int(row.pruned_pred)))}<br>'
                f'margin {row.dense_margin:.2f} &rarr; {row.pruned_margin:.2f}</div>')
        corruption = self.corruption.value
        on = "clean inputs" if corruption == NO_CORRUPTION else f"{corruption} at severity {self.severity.value}"
        self.fragile_html.object = (
            f'<div style="font-size:12px;color:#4b5563">The {len(table)} samples most fragile to this pruning on '
            f'the {html.escape(on)}: correct dense and wrong pruned first, then the largest margin drop.</div>'
            + "".join(cards))

    # ------------------------------------------------------------------ lifecycle
    def wait_idle(self, timeout: float = 120.0) -> bool:
        """Block until the workers and jobs are idle (tests and scripts); a finished fit submits a
        refresh, so the check repeats until one pass finds everything idle at once."""
        deadline = time.monotonic() + timeout
        workers = (self.fit_job, self._worker, self._cka_worker, self.compare)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not all(w.wait_idle(left) for w in workers):
                return False
            if all(w.wait_idle(0.05) for w in workers) and not self.fit_job.running:
                return True

    def close(self) -> None:
        """Stop the workers and jobs (session ended)."""
        for closable in (self.fit_job, self.compare, self._worker, self._cka_worker):
            closable.close()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout


__all__ = ["GeometryView", "thumbnails"]
