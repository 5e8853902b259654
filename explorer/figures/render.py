"""The paper renderer: a registered figure's table drawn with matplotlib in the paper style, and
saved as PDF, SVG, PGF or PNG; the table itself as CSV.

No global matplotlib state is touched: figures are plain :class:`matplotlib.figure.Figure` objects
on an explicit Agg canvas (no pyplot, no display needed), and the style is applied with
``matplotlib.rc_context`` around drawing and saving only.
"""

from __future__ import annotations

import functools

import io
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from prunescope.explorer.figures.registry import get_figure
from prunescope.explorer.figures.style import figure_size, paper_rc

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

    from prunescope.explorer.engine import Explorer

#: Output formats by file suffix.
FORMATS = {".pdf": "pdf", ".svg": "svg", ".pgf": "pgf", ".png": "png"}
#: Formats :func:`export` returns (the figure's formats and its data as CSV).
EXPORT_FORMATS = ("pdf", "svg", "png", "pgf", "csv")
_METADATA = {  # fixed metadata: regenerating a figure gives the same bytes
    "pdf": {"Creator": "prunescope", "Producer": "prunescope (matplotlib)", "CreationDate": None},
    "svg": {"Creator": "prunescope", "Date": None},
    "png": {"Software": "prunescope (matplotlib)"},
    "pgf": {},
}


def figure_data(name: str, explorer: "Explorer", progress: Callable[[int, int], None] | None = None,
                **options: Any) -> "pd.DataFrame":
    """The tidy table of figure ``name`` for the explorer's current setting (see ``list_figures()``).

    ``options`` are the figure's declared options (unknown ones raise a ValueError listing them);
    ``progress(done, total)`` is passed to long computations (sweeps, speed).
    """
    spec = get_figure(name)
    values = spec.resolve(options)
    if spec.long:
        values["progress"] = progress
    frame = spec.data(explorer, **values)
    frame.attrs.setdefault("figure", name)
    return frame


@functools.lru_cache(maxsize=1)
def _paper_figure() -> type:
    """A matplotlib ``Figure`` that notebooks show as a PNG without pyplot (no global backend)."""
    from matplotlib.figure import Figure

    class PaperFigure(Figure):
        def _repr_png_(self) -> bytes:
            return figure_bytes(self, "png", dpi=150)

    return PaperFigure


def render_data(name: str, data: "pd.DataFrame", width: str = "single", height: float | None = None) -> "Figure":
    """Figure ``name`` drawn from its table ``data`` at ``width`` ('single' 3.25 in, 'double' 6.75 in)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    spec = get_figure(name)
    size = figure_size(width, height if height is not None else spec.height_for(data, width))
    with matplotlib.rc_context(paper_rc()):
        fig = _paper_figure()(figsize=size)
        FigureCanvasAgg(fig)
        spec.draw(data, fig)
    return fig


def render(name: str, explorer: "Explorer", width: str = "single", height: float | None = None,
           progress: Callable[[int, int], None] | None = None, **options: Any) -> "Figure":
    """Figure ``name`` of the explorer's current setting as a matplotlib figure (``ex.figure``)."""
    return render_data(name, figure_data(name, explorer, progress=progress, **options), width, height)


def format_of(path: str | Path) -> str:
    """The output format of ``path`` from its suffix; an unknown suffix raises a ValueError."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the figure format from {str(path)!r}: the suffix must be one of "
                         f"{', '.join(FORMATS)}")
    return FORMATS[suffix]


def check_format_available(fmt: str) -> None:
    """PGF needs LaTeX (matplotlib measures text with it); raise a ValueError if none is installed."""
    if fmt == "pgf":
        import matplotlib

        with matplotlib.rc_context(paper_rc()):
            tex = matplotlib.rcParams["pgf.texsystem"]
        if shutil.which(tex) is None:
            raise ValueError(f"PGF output needs LaTeX ({tex}) on PATH, which is not installed here; "
                             f"use .pdf or .svg (vector) instead")


def figure_bytes(fig: "Figure", fmt: str, dpi: int = 300) -> bytes:
    """``fig`` encoded as ``fmt`` (pdf, svg, pgf, png; ``dpi`` for PNG and raster parts)."""
    import matplotlib

    if fmt not in FORMATS.values():
        raise ValueError(f"unknown figure format {fmt!r}; allowed: {', '.join(FORMATS.values())}")
    if not isinstance(dpi, int) or not 50 <= dpi <= 2400:
        raise ValueError(f"dpi must be an integer in [50, 2400], got {dpi!r}")
    check_format_available(fmt)
    buffer = io.BytesIO()
    with matplotlib.rc_context(paper_rc()):
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=_METADATA[fmt])
    return buffer.getvalue()


def save_figure(fig: "Figure", path: str | Path, dpi: int = 300) -> Path:
    """Write ``fig`` to ``path`` as PDF, SVG, PGF or PNG, chosen by the suffix; returns the path."""
    path = Path(path)
    content = figure_bytes(fig, format_of(path), dpi)
    path.write_bytes(content)
    return path


def data_csv(data: "pd.DataFrame") -> bytes:
    """The figure's table as CSV (UTF-8, header row, no index); floats round-trip exactly."""
    return data.to_csv(index=False).encode("utf-8")


def save_data(data: "pd.DataFrame", path: str | Path) -> Path:
    """Write the figure's table to ``path`` as CSV; returns the path."""
    path = Path(path)
    path.write_bytes(data_csv(data))
    return path


def export(name: str, data: "pd.DataFrame", fmt: str, width: str = "single", dpi: int = 300) -> bytes:
    """What an app's Export control downloads: figure ``name`` drawn from ``data`` as ``fmt``
    (pdf, svg, png, pgf), or ``data`` itself as CSV (``fmt='csv'``)."""
    if fmt == "csv":
        return data_csv(data)
    if fmt not in FORMATS.values():
        raise ValueError(f"unknown export format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    return figure_bytes(render_data(name, data, width), fmt, dpi)
