"""The headline numbers: accuracy, loss, non-zero parameters, FLOPs and sparsity, each beside its dense value."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import panel as pn
import param

from prunescope.explorer.viewmodel import percent

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.core.cost import Cost, Metrics

_CSS = """
.ps-metric { font-family: system-ui, sans-serif; padding: 6px 10px; border-radius: 6px;
  background: #f7f9fb; border-left: 4px solid #0072B2; box-sizing: border-box; min-width: 0; }
.ps-metric.ps-pending .ps-value { color: #6b7280; }
.ps-title { font-size: 11px; text-transform: uppercase; letter-spacing: .03em; color: #4b5563;
  overflow-wrap: anywhere; }
.ps-value { font-size: 21px; white-space: nowrap; font-weight: 600; color: #111827; line-height: 1.25; }
.ps-dense { font-size: 12px; color: #4b5563; overflow-wrap: anywhere; }
.ps-dense b { color: #111827; font-weight: 600; }
"""


class MetricCard(pn.viewable.Viewer):
    """One number with its title, the dense model's value beside it and an optional note."""

    title = param.String(doc="What the number is, with its unit.")
    key = param.String(doc="Stable id, rendered as data-metric for tests and styling.")
    value = param.String(default="–", doc="The formatted value of the current setting.")
    dense = param.String(default="–", doc="The formatted value of the dense (unpruned) model.")
    note = param.String(default="", doc="A short remark after the dense value, e.g. the change.")
    pending = param.Boolean(default=False, doc="The value is being recomputed (shown greyed).")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._pane = pn.pane.HTML(self._html(), stylesheets=[_CSS], margin=(4, 6),
                                  styles={"flex": "1 1 112px", "min-width": "0"})
        self.param.watch(self._render, ["title", "value", "dense", "note", "pending"])

    def _html(self) -> str:
        pending = " ps-pending" if self.pending else ""
        note = f" · {html.escape(self.note)}" if self.note else ""
        return (
            f'<div class="ps-metric{pending}" data-metric="{html.escape(self.key)}">'
            f'<div class="ps-title">{html.escape(self.title)}</div>'
            f'<div class="ps-value">{html.escape(self.value)}</div>'
            f'<div class="ps-dense">dense <b>{html.escape(self.dense)}</b>{note}</div></div>'
        )

    def _render(self, *events: param.parameterized.Event) -> None:
        self._pane.object = self._html()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._pane


def _percent(fraction: float) -> str:
    return percent(fraction)


def _mflops(flops: int) -> str:
    return f"{flops / 1e6:.3f}"


class MetricsPanel(pn.viewable.Viewer):
    """Cards for the current setting. ``show_cost`` is instant; ``show_metrics`` follows evaluation.

    ``cost``, ``metrics`` and ``dense`` hold the engine objects currently displayed, ``backend``
    what ``metrics`` was measured with.
    """

    def __init__(self) -> None:
        super().__init__()
        self.accuracy = MetricCard(key="accuracy", title="Accuracy (test)")
        self.loss = MetricCard(key="loss", title="Loss (cross-entropy)")
        self.params_nonzero = MetricCard(key="params", title="Non-zero params")
        self.flops = MetricCard(key="flops", title="MFLOPs / sample")
        self.sparsity = MetricCard(key="sparsity", title="Weight sparsity (achieved)")
        self.cards = [self.accuracy, self.loss, self.params_nonzero, self.flops, self.sparsity]
        self.cost: Cost | None = None
        self.metrics: Metrics | None = None
        self.dense: Metrics | None = None
        self.backend = "torch"
        self._layout = pn.FlexBox(*self.cards, sizing_mode="stretch_width")

    def show_cost(self, cost: "Cost") -> None:
        """Numbers known without running the model (every slider value)."""
        self.cost = cost
        self.params_nonzero.value = f"{cost.params_nonzero:,}"
        self.params_nonzero.dense = f"{cost.params_total:,}"
        self.flops.value = _mflops(cost.flops_effective)
        self.flops.dense = _mflops(cost.flops_dense)
        self.flops.note = f"{cost.flops_reduction:.2f}× fewer"
        self.sparsity.value = _percent(cost.sparsity)
        self.sparsity.dense = _percent(0.0)

    def set_pending(self, pending: bool, reason: str = "") -> None:
        """Grey out accuracy and loss while a newer evaluation is on its way; ``reason`` (e.g. the
        kernels still compiling) stands in the accuracy card's note meanwhile."""
        self.accuracy.pending = self.loss.pending = pending
        if pending and reason:
            self.accuracy.note = reason
        else:
            self._notes()

    def show_dense(self, dense: "Metrics") -> None:
        """The unpruned model's values, shown beside every number."""
        self.dense = dense
        self.accuracy.dense = _percent(dense.accuracy)
        self.loss.dense = f"{dense.loss:.3f}"
        self._notes()

    def show_metrics(self, metrics: "Metrics", backend: str = "torch") -> None:
        """Measured accuracy and loss (and the cost they were measured at), run on ``backend``."""
        self.metrics = metrics
        self.backend = backend
        name = metrics.metric_name.capitalize()
        where = "test" if backend == "torch" else backend
        if metrics.estimate:
            self.accuracy.title = f"{name} (estimate, {metrics.samples:,} of {metrics.population:,})"
        else:
            self.accuracy.title = f"{name} ({where})"
        self.loss.title = f"Loss ({metrics.loss_name})"
        self.show_cost(metrics)
        low, high = metrics.interval
        self.accuracy.value = (f"≈{_percent(metrics.accuracy)}" if metrics.estimate else _percent(metrics.accuracy))
        self.loss.value = f"{metrics.loss:.3f}"
        self._notes()
        self.set_pending(False)

    def _notes(self) -> None:
        if self.metrics is None or self.dense is None:
            self.accuracy.note = self.loss.note = ""
            return
        points = 100 * (self.metrics.accuracy - self.dense.accuracy)
        self.accuracy.note = f"{points:+.1f} pp"
        if self.metrics.estimate:
            low, high = self.metrics.interval
            self.accuracy.note += f" · 95% CI {_percent(low)}–{_percent(high)}"
        self.loss.note = f"{self.metrics.loss - self.dense.loss:+.3f}"

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout
