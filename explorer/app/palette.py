"""Colours and markers of the app, from the one style shared with the paper figures
(:mod:`prunescope.explorer.figures.style`): Okabe-Ito, safe for the common colour-vision deficiencies."""

from __future__ import annotations

from prunescope.explorer.figures.style import CYCLE, OKABE_ITO, ROLE_COLOURS
from prunescope.explorer.figures.style import method_style as _style

__all__ = ["ACCENT", "CYCLE", "GLOBAL_BAR", "HAND_BAR", "KEPT", "OKABE_ITO", "PRUNED", "method_style", "series_colour"]

#: Kept / pruned weights in the mask image.
KEPT = ROLE_COLOURS["kept"]
PRUNED = ROLE_COLOURS["pruned"]
#: Bars of weights following the global setting / set by hand.
GLOBAL_BAR = ROLE_COLOURS["global"]
HAND_BAR = ROLE_COLOURS["hand"]
ACCENT = OKABE_ITO["blue"]


def method_style(method: str, index: int = 0) -> tuple[str, str]:
    """``(colour, Bokeh marker)`` of a criterion, the same as in the paper figures."""
    style = _style(method, index)
    return style.colour, style.bokeh_marker


def series_colour(index: int) -> str:
    """The ``index``-th colour of the cycle (wraps around)."""
    return CYCLE[index % len(CYCLE)]
