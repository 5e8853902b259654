"""``TicketsBox``: a small Jupyter view of a lottery-ticket run (the Tickets tab's overlap matrix).

Load a run directory (or pass a run), pick a reference level and see the Jaccard overlap of each
seed's ticket, the one-shot criteria at the ticket's sparsity and the current setting, each with
the overlap two random masks of the same densities would have; "Use this ticket" calls
``Explorer.prune('ticket', ...)``. The numbers are
:func:`~prunescope.explorer.lottery.figures.overlap_matrix_table`, the table the app draws and
the ``mask_overlap_matrix`` figure exports; computed inline on the kernel's thread.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from prunescope.explorer.lottery.figures import (
    default_selection, jackpots, overlap_matrix_table, resolve_masks, run_attrs, run_for,
)
from prunescope.explorer.viewmodel import percent
from prunescope.widgets._html import error_line

if TYPE_CHECKING:  # pragma: no cover
    import os

    import pandas as pd

    from prunescope.explorer.engine import Explorer
    from prunescope.explorer.lottery import TicketRun

_WIDE = widgets.Layout(width="520px")
_STYLE = {"description_width": "130px"}


def matrix_html(table: "pd.DataFrame") -> str:
    """The overlap table as an HTML matrix; each cell carries its exact values in data attributes."""
    labels = list(dict.fromkeys(table["a"]))
    cells = {(r.a, r.b): r for r in table.itertuples()}
    head = "".join(f'<th style="padding:2px 6px;font-weight:normal">{html.escape(b)}</th>' for b in labels)
    rows = []
    for a in labels:
        tds = []
        for b in labels:
            r = cells[(a, b)]
            shade = int(255 - 120 * float(r.jaccard))
            tds.append(f'<td data-a="{html.escape(a)}" data-b="{html.escape(b)}" data-jaccard="{r.jaccard!r}" '
                       f'data-random="{r.random_jaccard!r}" style="text-align:center;padding:2px 6px;'
                       f'background:rgb({shade},{shade},255);font-variant-numeric:tabular-nums">'
                       f"{r.jaccard:.2f}<br><small>({r.random_jaccard:.2f})</small></td>")
        rows.append(f'<tr><th style="text-align:left;padding:2px 6px;font-weight:normal">{html.escape(a)}</th>'
                    f'{"".join(tds)}</tr>')
    return (f'<table class="prunescope-overlap" style="border-collapse:collapse;font-size:12px">'
            f'<caption style="caption-side:bottom;font-size:85%">Jaccard overlap of the kept weights; in brackets: '
            f"two random masks of the same layer densities</caption><tr><th></th>{head}</tr>{''.join(rows)}</table>")


class TicketsBox(widgets.VBox):
    """Run directory, reference level, the overlap matrix and a "Use this ticket" button.

    Public for scripts and tests: ``path``, ``load_button``, ``level``, ``use_button``; outputs
    ``matrix`` (HTML), ``note``, ``error_html``; the drawn ``table`` and the ``run``.
    """

    def __init__(self, explorer: "Explorer", run: "TicketRun | str | os.PathLike | None" = None, **kwargs: Any) -> None:
        self.explorer = explorer
        self.run: TicketRun | None = None
        self.table: pd.DataFrame | None = None
        self.error: str | None = None
        self.path = widgets.Text(description="Run directory", style=_STYLE, layout=_WIDE,
                                 placeholder="directory of a ticket search")
        self.load_button = widgets.Button(description="Load run")
        self.level = widgets.Dropdown(description="Ticket level", options=[], style=_STYLE, layout=_WIDE)
        self.use_button = widgets.Button(description="Use this ticket", disabled=True,
                                         tooltip="Prune the explorer with this level's ticket (seed: the run's first)")
        self.matrix = widgets.HTML()
        self.note = widgets.HTML()
        self.error_html = widgets.HTML()
        super().__init__(children=[
            widgets.HTML("<b>Lottery tickets</b>: mask overlaps"), widgets.HBox([self.path, self.load_button]),
            widgets.HBox([self.level, self.use_button]), self.error_html, self.note, self.matrix,
        ], **kwargs)
        self.load_button.on_click(lambda _b: self.load(self.path.value))
        self.use_button.on_click(lambda _b: self.use())
        self._loading = False
        self.level.observe(lambda change: None if self._loading else self._draw(), "value")
        if run is not None:
            self.load(run)

    def _set_error(self, message: str | None) -> None:
        self.error = message
        self.error_html.value = error_line(message)

    def load(self, run: "TicketRun | str | os.PathLike") -> bool:
        """Show ``run`` (a run or its directory); a bad one shows the error, the shown run stays."""
        try:
            if isinstance(run, str) and not run.strip():
                raise ValueError("type the directory of a ticket run to load")
            loaded = run_for(self.explorer, run.strip() if isinstance(run, str) else run)
        except ValueError as err:
            self._set_error(str(err))
            return False
        self._set_error(None)
        self.run = loaded
        self.path.value = str(loaded.path or "")
        first = loaded.seeds[0]
        done = loaded.completed_levels(first)
        options = [(f"level {lv} ({percent(loaded.record(lv, first).metrics['sparsity'])} sparse)", lv) for lv in done]
        self._loading = True
        try:
            self.level.options = options
            self.level.value = done[-1]
        finally:
            self._loading = False
        self.use_button.disabled = loaded.path is None
        self._draw()
        return True

    def _draw(self) -> None:
        if self.run is None or self.level.value is None:
            return
        level = int(self.level.value)
        try:
            labels = default_selection(self.run, level)
            masks = resolve_masks(self.explorer, self.run, labels, level)
            self.table = run_attrs(overlap_matrix_table(masks), self.run)
            check = jackpots(self.explorer, self.run, level)
        except ValueError as err:
            self._set_error(str(err))
            return
        self.matrix.value = matrix_html(self.table)
        best = check.iloc[0]
        self.note.value = (f'<span data-closest="{html.escape(str(best.criterion))}">Closest one-shot mask to the '
                           f"ticket (seed {check.attrs['seed']}, level {level}): <b>{html.escape(str(best.label))}</b>, "
                           f"Jaccard {best.jaccard:.3f} vs {best.random_jaccard:.3f} for random masks.</span>")

    def use(self) -> bool:
        """Prune the explorer with the chosen level's ticket (the run's first seed)."""
        try:
            self.explorer.prune("ticket", run=str(self.run.path), level=int(self.level.value))
        except ValueError as err:
            self._set_error(str(err))
            return False
        self._set_error(None)
        self._draw()  # the current setting's row follows
        return True


def tickets_box(explorer: "Explorer", run: "TicketRun | str | os.PathLike | None" = None) -> TicketsBox:
    """A :class:`TicketsBox` on ``explorer`` (showing ``run`` if given)."""
    return TicketsBox(explorer, run)
