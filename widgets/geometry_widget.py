"""``GeometryBox``: the feature-geometry view of :class:`~prunescope.widgets.ExplorerWidget`.

A small embedding plot (dense points, pruned points in the same frame, a line between them) and
the CKA per layer, dense vs pruned, for the explorer's current setting. It draws the same tables
as the Panel app's Geometry tab (:mod:`prunescope.explorer.geometry.figures`), the plot as a PNG
by the paper renderer, inline on the kernel's thread. It sits in a collapsed accordion and only
computes while it is open; a watcher on ``explorer.state`` redraws it after every change.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from prunescope.explorer.geometry.figures import COLOUR_BY, FLIP_LABELS, cka_table, embedding_table
from prunescope.widgets._html import error_line

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from prunescope.explorer.engine import Explorer

_STYLE = {"description_width": "120px"}
TITLE = "Feature geometry (embedding, CKA)"


class GeometryBox(widgets.VBox):
    """Embedding method (PCA instant, UMAP fitted once and cached on disk), colouring, the PNG of
    the ``embedding`` figure and an HTML table of CKA per layer.

    Public for scripts and tests: ``method``, ``colour``, outputs ``picture`` (PNG), ``cka_html``,
    ``note``, ``error_html``; the drawn tables ``table`` (embedding) and ``cka`` (CKA per layer).
    ``active`` says whether it draws on state changes (the accordion sets it when opened).
    """

    def __init__(self, explorer: "Explorer", active: bool = True, **kwargs: Any) -> None:
        self.explorer = explorer
        self.error: str | None = None
        self.table: pd.DataFrame | None = None
        self.cka: pd.DataFrame | None = None
        self._active = active
        self.method = widgets.Dropdown(options=[("PCA (instant)", "pca"), ("UMAP (first fit: up to a minute)", "umap")],
                                       value="pca", description="Embedding", style=_STYLE)
        self.colour = widgets.Dropdown(options=[(c, c) for c in COLOUR_BY], value="flip", description="Colour by",
                                       style=_STYLE)
        self.picture = widgets.Image(format="png", layout=widgets.Layout(max_width="520px"))
        self.cka_html = widgets.HTML()
        self.note = widgets.HTML()
        self.error_html = widgets.HTML()
        super().__init__(children=[widgets.HBox([self.method, self.colour]), self.error_html, self.note,
                                   widgets.HBox([self.picture, self.cka_html])], **kwargs)
        self.method.observe(lambda c: self.draw(), "value")
        self.colour.observe(lambda c: self.draw(), "value")
        self._watcher = explorer.state.param.watch(lambda *e: self.draw(), ["setting"])
        if active:
            self.draw()

    @property
    def active(self) -> bool:
        return self._active

    @active.setter
    def active(self, value: bool) -> None:
        self._active = bool(value)
        if self._active:
            self.draw()

    def draw(self) -> None:
        """Recompute and redraw for the current setting (no-op while inactive)."""
        if not self._active:
            return
        from prunescope.explorer.figures import figure_bytes, render_data

        self._set_error(None)
        ex = self.explorer
        try:
            table = embedding_table(ex, method=self.method.value, colour=self.colour.value)
            cka = cka_table(ex)
            fig = render_data("embedding", table, width="single")
            self.picture.value = figure_bytes(fig, "png", dpi=110)
        except ValueError as err:
            self._set_error(str(err))
            return
        self.table, self.cka = table, cka
        counts = table["flip"].value_counts()
        self.note.value = ('<span style="font-size:12px">'
                           + ", ".join(f"{FLIP_LABELS[k]}: {int(counts.get(k, 0))}" for k in FLIP_LABELS)
                           + f" &middot; {html.escape(str(table.attrs.get('layer', '')))}</span>")
        rows = "".join(f"<tr><td>{html.escape(str(r.layer))}</td><td style='text-align:right'>{r.cka:.4f}</td></tr>"
                       for r in cka.itertuples())
        self.cka_html.value = ("<table style='font-size:12px'><tr><th>layer</th><th>CKA dense vs pruned</th></tr>"
                               f"{rows}</table>")

    def _set_error(self, message: str | None) -> None:
        self.error = message
        self.error_html.value = error_line(message)

    def close(self) -> None:
        """Stop following the state and close the controls."""
        if getattr(self, "_watcher", None) is not None:
            self.explorer.state.param.unwatch(self._watcher)
            self._watcher = None
        for child in (self.method, self.colour, self.picture, self.cka_html, self.note, self.error_html):
            child.close()
        super().close()


def geometry_box(explorer: "Explorer") -> widgets.Accordion:
    """A collapsed accordion holding a :class:`GeometryBox`; opening it draws (and keeps drawing)."""
    box = GeometryBox(explorer, active=False)
    accordion = widgets.Accordion(children=[box], titles=(TITLE,), selected_index=None)

    def opened(change: dict) -> None:
        box.active = change["new"] is not None

    accordion.observe(opened, "selected_index")
    return accordion


__all__ = ["GeometryBox", "geometry_box"]
