"""HTML snippets of the Jupyter widget: the metrics table, layer readouts and the error line.

Pure formatting of numbers the engine computed; nothing here computes a metric.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.metrics import Cost, Metrics

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


def _cell(key: str, value: float, text: str, pending: bool = False, dense: bool = False) -> str:
    """One ``<td>`` carrying the exact value in ``data-value`` (for tests and copy-paste)."""
    attr = "data-dense" if dense else "data-metric"
    style = "text-align:right;padding:2px 10px;font-variant-numeric:tabular-nums;"
    title = f"{value!r}"
    if pending:
        style += f"color:{PENDING_COLOUR};"
        title += " (measuring the new setting...)"
        text += " &hellip;"
    return f'<td {attr}="{key}" data-value="{value!r}" title="{title}" style="{style}">{text}</td>'


def metrics_table(cost: "Cost", measured: "Metrics | None", dense: "Metrics", pending: bool) -> str:
    """The live metrics: instant ``cost`` numbers, ``measured`` accuracy/loss, dense values beside.

    ``measured`` is the last evaluation shown; while ``pending`` it belongs to an earlier setting
    and is greyed out with an ellipsis until the new measurement arrives.
    """
    accuracy = measured.accuracy if measured is not None else float("nan")
    loss = measured.loss if measured is not None else float("nan")
    stale = pending or measured is None
    rows = [
        ("Weight sparsity", "sparsity", cost.sparsity, f"{cost.sparsity:.1%}",
         dense.sparsity, f"{dense.sparsity:.1%}", False),
        ("Accuracy", "accuracy", accuracy, f"{accuracy:.2%}", dense.accuracy, f"{dense.accuracy:.2%}", stale),
        ("Loss (cross-entropy)", "loss", loss, f"{loss:.4f}", dense.loss, f"{dense.loss:.4f}", stale),
        ("Nonzero parameters", "params_nonzero", cost.params_nonzero, f"{cost.params_nonzero:,}",
         dense.params_nonzero, f"{dense.params_nonzero:,}", False),
        ("FLOPs per sample", "flops_effective", cost.flops_effective,
         f"{si(cost.flops_effective)}FLOP (&times;{cost.flops_reduction:.2f} fewer)",
         dense.flops_effective, f"{si(dense.flops_effective)}FLOP", False),
    ]
    body = "".join(
        f'<tr><th style="text-align:left;padding:2px 10px;font-weight:normal">{label}</th>'
        f"{_cell(key, value, text, pending=grey)}{_cell(key, dense_value, dense_text, dense=True)}</tr>"
        for label, key, value, text, dense_value, dense_text, grey in rows
    )
    head = (
        '<tr><th></th><th style="text-align:right;padding:2px 10px">pruned</th>'
        '<th style="text-align:right;padding:2px 10px">dense</th></tr>'
    )
    samples = f"measured on {dense.samples:,} test samples" if dense.samples else ""
    caption = f'<caption style="caption-side:bottom;color:{PENDING_COLOUR};font-size:85%">{samples}</caption>'
    return f'<table class="prunescope-metrics" style="border-collapse:collapse">{caption}{head}{body}</table>'


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
