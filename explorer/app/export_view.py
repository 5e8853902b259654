"""The Export control of a plot: the paper figure (PDF, SVG, PNG) or its data (CSV).

Every plot of the app draws the tidy table of a registered figure
(:mod:`prunescope.explorer.figures`); its :class:`ExportMenu` hands that same table to
:func:`prunescope.explorer.figures.export`, so the downloaded figure (and the CLI's ``prunescope
figure NAME``) can never show other numbers than the app. The figure is rendered off the event
loop (matplotlib takes a fraction of a second, other sessions keep going) and only when the button
is pressed.
"""

from __future__ import annotations

import asyncio
import io
import re
from typing import TYPE_CHECKING, Callable

import panel as pn

from prunescope.explorer.figures import export

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Formats offered, by their label in the menu.
EXPORT_CHOICES = {"PDF (vector)": "pdf", "SVG (vector)": "svg", "PNG (300 dpi)": "png", "CSV (data)": "csv"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def file_stem(*parts: str) -> str:
    """A download file name stem from ``parts`` (model, figure): letters, digits, ``_.-`` only."""
    return "-".join(p for p in (_UNSAFE.sub("_", str(part)).strip("_") for part in parts) if p) or "figure"


def export_bytes(figure: str, data: "pd.DataFrame", fmt: str, width: str = "single") -> bytes:
    """What the Export button downloads: figure ``figure`` drawn from ``data`` as ``fmt``, or ``data`` as CSV."""
    return export(figure, data, fmt, width)


class ExportMenu(pn.viewable.Viewer):
    """A format menu and an Export button for figure ``figure``.

    ``data()`` returns the table the plot draws (usually ``figure_data(figure, explorer, **options)``
    or a table the view already holds, e.g. a finished sweep); it is called when the button is
    pressed. ``on_error`` receives any failure (shown in the app's alert); the session keeps going.
    """

    def __init__(self, figure: str, data: Callable[[], "pd.DataFrame"] | None = None, *,
                 on_error: Callable[[BaseException], None] | None = None, width: str = "single",
                 enabled: bool = True) -> None:
        super().__init__()
        self.figure = figure
        self.data = data
        self.width = width
        self._on_error = on_error
        css = [f"ps-export-{figure}"]  # for browser tests and user style sheets
        self.format = pn.widgets.Select(options=EXPORT_CHOICES, value="pdf", width=130, margin=(5, 2, 5, 10),
                                        css_classes=css, stylesheets=[":host { font-size: 12px; }"])
        self.download = pn.widgets.FileDownload(
            callback=self._download, filename=f"{figure}.pdf", label="Export", color="light",
            width=80, margin=(5, 10, 5, 2), css_classes=css, description=f"Download the paper figure '{figure}' or its data",
        )
        self.set_enabled(enabled and data is not None)

    @property
    def fmt(self) -> str:
        """The chosen format: pdf, svg, png or csv."""
        return self.format.value

    def set_enabled(self, enabled: bool) -> None:
        """Allow exporting (False while the plot has nothing to show, e.g. before a sweep)."""
        self.format.disabled = self.download.disabled = not enabled

    def table(self) -> "pd.DataFrame":
        """The table the plot draws now (what the CSV holds)."""
        if self.data is None:
            raise ValueError(f"nothing to export for figure {self.figure!r} yet")
        return self.data()

    def payload(self, fmt: str | None = None) -> tuple[str, bytes]:
        """``(file name, bytes)`` of the export in ``fmt`` (default: the menu's choice)."""
        fmt = fmt or self.fmt
        data = self.table()
        name = file_stem(data.attrs.get("model", ""), self.figure)
        return f"{name}.{fmt}", export_bytes(self.figure, data, fmt, self.width)

    async def _download(self) -> io.BytesIO:
        fmt = self.fmt
        try:
            filename, content = await asyncio.to_thread(self.payload, fmt)
        except Exception as err:  # noqa: BLE001 - shown in the alert; the session keeps running
            if self._on_error is not None:
                self._on_error(err)
            raise
        self.download.filename = filename
        return io.BytesIO(content)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Row(self.format, self.download, align="end", margin=0)
