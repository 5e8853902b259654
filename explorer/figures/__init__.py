"""Paper figures: one registered data function (tidy table) and draw function per view.

>>> from prunescope.explorer.figures import figure_data, render, save_figure
>>> fig = render("sensitivity", ex, width="single", methods=["magnitude", "lamp"])
>>> save_figure(fig, "sensitivity.pdf")

:mod:`.style` (plain data, no matplotlib) holds the one colour / marker / dash per method that the
app uses too. Importing this package loads neither matplotlib nor the figure modules.
"""

from prunescope.explorer.figures.registry import (
    FIGURES,
    FigureSpec,
    Option,
    get_figure,
    list_figures,
    register_figure,
)
from prunescope.explorer.figures.render import (
    EXPORT_FORMATS,
    FORMATS,
    data_csv,
    export,
    figure_bytes,
    figure_data,
    format_of,
    render,
    render_data,
    save_data,
    save_figure,
)

__all__ = [
    "EXPORT_FORMATS", "FIGURES", "FORMATS", "FigureSpec", "Option", "data_csv", "export", "figure_bytes",
    "figure_data", "format_of", "get_figure", "list_figures", "register_figure", "render", "render_data",
    "save_data", "save_figure",
]
