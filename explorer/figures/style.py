"""The paper style and the one colour / marker / dash per pruning method, as plain data.

This module is the single source of truth for how a method looks, in the matplotlib paper
figures and in the app's Bokeh views alike; it imports nothing heavy (no matplotlib), so the
app can import it. Colours are the Okabe & Ito (2008) "Color Universal Design" palette, safe for
the common colour-vision deficiencies; every method also has its own marker and dash pattern so
curves stay distinguishable in greyscale print.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Okabe & Ito (2008), "Color Universal Design", in their published order (grey as the ninth,
#: as in R's ``palette.colors("Okabe-Ito")``).
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "grey": "#999999",
}

#: Figure widths in inches: one column and the full text width of a two-column paper.
WIDTHS = {"single": 3.25, "double": 6.75}
#: Font sizes in points (the text of a figure sits between 8 and 9 pt at print size).
FONT_SIZE = 8
LABEL_SIZE = 9


@dataclass(frozen=True)
class SeriesStyle:
    """How one series looks: a colour, a marker (matplotlib and Bokeh names) and a dash pattern.

    ``dash`` is an on/off sequence in points; ``()`` is a solid line. Use :func:`mpl_dash` and
    :func:`bokeh_dash` to hand it to either library.
    """

    colour: str
    marker: str
    bokeh_marker: str
    dash: tuple[float, ...] = ()
    #: Edge colour of the marker (a dark edge keeps light colours visible on white).
    edge: str | None = None


#: Fixed look per pruning criterion, so a method is recognisable in every figure and the app.
METHOD_STYLE: dict[str, SeriesStyle] = {
    "magnitude": SeriesStyle(OKABE_ITO["blue"], "o", "circle", ()),
    "global_magnitude": SeriesStyle(OKABE_ITO["sky_blue"], "s", "square", (5.0, 1.5)),
    "lamp": SeriesStyle(OKABE_ITO["vermillion"], "^", "triangle", (1.2, 1.2)),
    "erk": SeriesStyle(OKABE_ITO["bluish_green"], "D", "diamond", (4.0, 1.5, 1.2, 1.5)),
    "uniform_plus": SeriesStyle(OKABE_ITO["grey"], "X", "x", (1.5, 3.0)),
    "random": SeriesStyle(OKABE_ITO["orange"], "v", "inverted_triangle", (2.5, 1.5)),
    "snip": SeriesStyle(OKABE_ITO["reddish_purple"], "h", "hex", (6.0, 1.5, 1.2, 1.5, 1.2, 1.5)),
    "channel": SeriesStyle(OKABE_ITO["black"], "P", "plus", (3.0, 3.0)),
    "nm": SeriesStyle(OKABE_ITO["yellow"], "*", "star", (), edge=OKABE_ITO["black"]),
    "ticket": SeriesStyle(OKABE_ITO["bluish_green"], "p", "square_pin", (1.0, 2.0), edge=OKABE_ITO["black"]),
}

#: Short method names for legends (a column-wide legend has room for about 2 x 16 characters).
METHOD_LABELS: dict[str, str] = {
    "magnitude": "Magnitude", "global_magnitude": "Global magnitude", "lamp": "LAMP", "erk": "ERK",
    "uniform_plus": "Uniform+", "random": "Random", "snip": "SNIP", "channel": "Channel", "nm": "N:M",
    "ticket": "Ticket",
}

#: Colour cycle for series without a fixed colour (layers); yellow last: it is faint on white.
CYCLE = tuple(OKABE_ITO[k] for k in ("blue", "vermillion", "bluish_green", "reddish_purple",
                                      "orange", "sky_blue", "black", "yellow"))
_MARKERS = (("o", "circle"), ("s", "square"), ("^", "triangle"), ("D", "diamond"),
            ("v", "inverted_triangle"), ("h", "hex"), ("P", "plus"), ("*", "star"))
_DASHES = ((), (5.0, 1.5), (1.2, 1.2), (4.0, 1.5, 1.2, 1.5), (2.5, 1.5), (3.0, 3.0))

#: Colours with a fixed meaning in every view.
ROLE_COLOURS = {
    "kept": OKABE_ITO["blue"],           # kept weights in a mask image
    "pruned": "#EDEDED",                 # pruned weights
    "global": OKABE_ITO["blue"],         # layers following the global setting
    "hand": OKABE_ITO["vermillion"],     # layers set by hand
    "dense": OKABE_ITO["orange"],        # dense torch execution
    "sparse": OKABE_ITO["blue"],         # sparse kernel execution
    "measured": OKABE_ITO["blue"],       # measured speed-up
    "theoretical": OKABE_ITO["orange"],  # FLOPs reduction
    "reference": OKABE_ITO["black"],     # reference lines (dense accuracy, 1x)
}


def method_style(method: str, index: int = 0) -> SeriesStyle:
    """The look of criterion ``method``; unregistered (user) methods take the ``index``-th series style."""
    return METHOD_STYLE.get(method) or series_style(index)


def series_style(index: int) -> SeriesStyle:
    """The ``index``-th style of the cycle (wraps around), for series such as layers."""
    marker, bokeh_marker = _MARKERS[index % len(_MARKERS)]
    colour = CYCLE[index % len(CYCLE)]
    return SeriesStyle(colour, marker, bokeh_marker, _DASHES[index % len(_DASHES)],
                       edge=OKABE_ITO["black"] if colour == OKABE_ITO["yellow"] else None)


def mpl_dash(style: SeriesStyle) -> Any:
    """``style.dash`` as a matplotlib ``linestyle``."""
    return "-" if not style.dash else (0, style.dash)


def bokeh_dash(style: SeriesStyle, scale: float = 1.5) -> Any:
    """``style.dash`` as a Bokeh ``line_dash`` (screen pixels, ``scale`` pixels per point)."""
    return "solid" if not style.dash else [max(1, round(v * scale)) for v in style.dash]


def figure_size(width: str, height: float) -> tuple[float, float]:
    """``(width, height)`` in inches of a ``'single'`` or ``'double'`` column figure."""
    if width not in WIDTHS:
        raise ValueError(f"width must be one of {sorted(WIDTHS)}, got {width!r}")
    return WIDTHS[width], float(height)


def paper_rc() -> dict[str, Any]:
    """matplotlib rcParams of the paper style (for ``matplotlib.rc_context``; nothing global changes).

    Text stays text: TrueType fonts are embedded in PDF/PS (fonttype 42) and SVG keeps ``<text>``.
    """
    return {
        "pdf.fonttype": 42,
        "ps.fonttype": 42,
        "svg.fonttype": "none",
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans"],
        "font.size": FONT_SIZE,
        "axes.titlesize": LABEL_SIZE,
        "axes.labelsize": LABEL_SIZE,
        "xtick.labelsize": FONT_SIZE,
        "ytick.labelsize": FONT_SIZE,
        "legend.fontsize": FONT_SIZE,
        "legend.title_fontsize": FONT_SIZE,
        "legend.frameon": False,
        "legend.handlelength": 2.4,
        "legend.borderaxespad": 0.3,
        "legend.columnspacing": 1.0,
        "axes.linewidth": 0.6,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.linewidth": 0.4,
        "grid.color": "#D0D0D0",
        "xtick.major.width": 0.6,
        "ytick.major.width": 0.6,
        "xtick.major.size": 2.5,
        "ytick.major.size": 2.5,
        "lines.linewidth": 1.2,
        "lines.markersize": 3.5,
        "patch.linewidth": 0.5,
        "figure.dpi": 100,
        "figure.constrained_layout.use": True,
        "figure.constrained_layout.h_pad": 0.02,
        "figure.constrained_layout.w_pad": 0.02,
        "savefig.dpi": 300,
        "savefig.bbox": None,
        "savefig.pad_inches": 0.02,
        "pgf.rcfonts": False,
        "pgf.texsystem": "pdflatex",
        "svg.hashsalt": "prunescope",
        "pdf.compression": 6,
    }
