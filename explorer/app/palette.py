"""Colours and markers of the app: the Okabe-Ito palette, safe for the common colour-vision deficiencies."""

from __future__ import annotations

#: Okabe & Ito (2008), "Color Universal Design", in their published order.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

#: Colour cycle for series without a fixed colour (layers); yellow last: it is faint on white.
CYCLE = tuple(OKABE_ITO[k] for k in ("blue", "vermillion", "bluish_green", "reddish_purple",
                                      "orange", "sky_blue", "black", "yellow"))

#: Fixed colour and marker per pruning criterion, so a method looks the same in every figure.
METHOD_STYLE = {
    "magnitude": (OKABE_ITO["blue"], "circle"),
    "global_magnitude": (OKABE_ITO["sky_blue"], "square"),
    "lamp": (OKABE_ITO["vermillion"], "triangle"),
    "erk": (OKABE_ITO["bluish_green"], "diamond"),
    "random": (OKABE_ITO["orange"], "inverted_triangle"),
    "snip": (OKABE_ITO["reddish_purple"], "hex"),
    "channel": (OKABE_ITO["black"], "square_pin"),
    "nm": (OKABE_ITO["yellow"], "star"),
}

#: Kept / pruned weights in the mask image.
KEPT = OKABE_ITO["blue"]
PRUNED = "#EDEDED"
#: Bars of layers following the global setting / set by hand.
GLOBAL_BAR = OKABE_ITO["blue"]
HAND_BAR = OKABE_ITO["vermillion"]
ACCENT = OKABE_ITO["blue"]


def method_style(method: str, index: int = 0) -> tuple[str, str]:
    """``(colour, marker)`` of a criterion; unknown (user-registered) ones take from the cycle."""
    return METHOD_STYLE.get(method, (CYCLE[index % len(CYCLE)], "circle"))


def series_colour(index: int) -> str:
    """The ``index``-th colour of the cycle (wraps around)."""
    return CYCLE[index % len(CYCLE)]
