"""HTML snippets of the Jupyter widget: the metrics table, layer readouts and the error line.

Pure formatting of numbers the engine computed; nothing here computes a metric.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Callable

from prunescope.explorer.viewmodel import percent

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.core.cost import Cost, Metrics

#: Colours of the widget's text (dark grey for pending values, a dark red that reads as an alert
#: to most colour-vision types because it is also marked with a symbol and words).
PENDING_COLOUR = "#767676"
ERROR_COLOUR = "#a50f15"


def si(value: float) -> str:
    """``value`` with an SI prefix: 1234 -> '1.23 k', 4.5e6 -> '4.50 M'."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}"
    return f"{value:.3g} "


def _cell(key: str, value: float | None, text: str, pending: bool = False, dense: bool = False) -> str:
    """One ``<td>`` carrying the exact value in ``data-value`` (for tests and copy-paste)."""
    attr = "data-dense" if dense else "data-metric"
    style = "text-align:right;padding:2px 10px;font-variant-numeric:tabular-nums;"
    if value is None:
        return f'<td {attr}="{key}" style="{style}color:{PENDING_COLOUR}">&ndash;</td>'
    title = f"{value!r}"
    if pending:
        style += f"color:{PENDING_COLOUR};"
        title += " (of the previous setting; measuring this one)"
        text += " &hellip;"
    return f'<td {attr}="{key}" data-value="{value!r}" title="{title}" style="{style}">{text}</td>'


_ROWS = (  # label, Metrics field, format; the FLOPs row gets the reduction factor added
    ("Weight sparsity", "sparsity", percent),  # rounded as in every view
    ("Accuracy", "accuracy", percent),
    ("Loss (cross-entropy)", "loss", "{:.4f}"),
    ("Nonzero parameters", "params_nonzero", "{:,}"),
    ("FLOPs per sample", "flops_effective", None),
)
_MEASURED = {"accuracy", "loss"}


def _text(fmt: str | Callable[[float], str] | None, value: float) -> str:
    if fmt is None:
        return f"{si(value)}FLOP"
    return fmt(value) if callable(fmt) else fmt.format(value)


def metrics_table(cost: "Cost", measured: "Metrics | None", dense: "Metrics | None", pending: bool) -> str:
    """The live metrics: instant ``cost`` numbers, ``measured`` accuracy/loss, dense values beside.

    ``measured`` is the last evaluation done; while ``pending`` it belongs to an earlier setting
    and is greyed out with an ellipsis. ``None`` (not measured yet) shows a dash.
    """
    body = []
    for label, key, fmt in _ROWS:
        source = measured if key in _MEASURED else cost
        value = None if source is None else getattr(source, key)
        text = "" if value is None else _text(fmt, value)
        if key == "flops_effective":
            text += f" (&times;{cost.flops_reduction:.2f} fewer)"
        dense_value = None if dense is None else getattr(dense, key)
        dense_text = "" if dense_value is None else _text(fmt, dense_value)
        body.append(
            f'<tr><th style="text-align:left;padding:2px 10px;font-weight:normal">{label}</th>'
            f"{_cell(key, value, text, pending=pending and key in _MEASURED)}"
            f"{_cell(key, dense_value, dense_text, dense=True)}</tr>"
        )
    head = (
        '<tr><th></th><th style="text-align:right;padding:2px 10px">pruned</th>'
        '<th style="text-align:right;padding:2px 10px">dense</th></tr>'
    )
    samples = f"accuracy and loss measured on {dense.samples:,} evaluation samples" if dense else ""
    caption = f'<caption style="caption-side:bottom;color:{PENDING_COLOUR};font-size:85%">{samples}</caption>'
    return (
        f'<table class="prunescope-metrics" style="border-collapse:collapse">{caption}{head}{"".join(body)}</table>'
    )


def layer_readout(kept: int, params: int, hand_set: bool) -> str:
    """Weights kept of one layer, and whether its sparsity was set by hand."""
    mark = ' <b title="set by hand; moving the global slider resets it">&#9998; by hand</b>' if hand_set else ""
    return (
        f'<span style="font-variant-numeric:tabular-nums" data-kept="{kept}">'
        f"{kept:,} / {params:,} weights kept</span>{mark}"
    )


def error_line(message: str | None) -> str:
    """The error message of the last rejected input ('' when there is none)."""
    if not message:
        return ""
    return (
        f'<div role="alert" style="color:{ERROR_COLOUR};font-weight:bold">'
        f"&#9888; Not applied: {html.escape(message)}</div>"
    )
