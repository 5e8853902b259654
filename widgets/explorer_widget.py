"""``ExplorerWidget``: an ipywidgets view of one :class:`~prunescope.explorer.Explorer`.

The widget holds no pruning logic and no copy of the state. Moving a control calls
``Explorer.prune`` / ``Explorer.set_layer_sparsity``; the engine validates the input and updates
``explorer.state``; a ``param`` watcher on that state then redraws every control. So a change made
anywhere (this widget, a second widget, ``ex.prune(...)`` in a later cell, the Panel app) shows up
here the same way. A guard flag stops the redraw from calling the engine again.

Instant numbers (sparsity, parameters, FLOPs from ``explorer.cost()``) are drawn on every slider
value; ``explorer.evaluate()`` measures accuracy and loss on the widget's
:class:`~prunescope.explorer.worker.LatestWorker`, so a fast drag never queues stale
evaluations and the kernel keeps answering the slider. Until the measurement of the current
setting arrives the previous one is shown greyed out.
"""

from __future__ import annotations

import contextlib
import functools
import html
import threading
from typing import TYPE_CHECKING, Any, Iterator

import ipywidgets as widgets

from prunescope.explorer.pruning import METHODS
from prunescope.explorer.worker import LatestWorker
from prunescope.widgets._html import error_line, layer_readout, metrics_table

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer
    from prunescope.explorer.metrics import Cost, Metrics

#: State parameters whose change redraws the widget.
STATE_PARAMS = ("method", "sparsity", "layer_sparsity", "n", "m", "norm", "skip_first_last", "seed", "backend")
#: Largest value the sparsity sliders offer (the state allows anything in [0, 1)).
SLIDER_MAX = 0.99
SLIDER_STEP = 0.01
_LABEL_WIDTH = "140px"


def _from_browser(value: float) -> float:
    """A slider value without the float noise of the browser's step arithmetic (0.47000000000000003)."""
    return round(value, 9)


class ExplorerWidget(widgets.VBox):
    """Method picker, global and per-layer sparsity sliders and live metrics for one explorer.

    >>> w = ExplorerWidget(Explorer.from_sample("digits_mlp")); w          # in a notebook cell
    >>> w.sparsity.value = 0.9      # same as dragging: calls explorer.prune(method, sparsity=0.9)

    Controls (public, for scripting and tests): ``method``, ``n``, ``m``, ``norm``,
    ``sparsity``, ``skip_first_last`` and ``layer_sliders[layer]``; output: ``metrics_html``, ``error_html``,
    :attr:`metrics` (the measurement on display) and :attr:`error` (the last rejected input).
    """

    def __init__(self, explorer: "Explorer", **kwargs: Any) -> None:
        self.explorer = explorer
        self.error: str | None = None
        self._dense: Metrics | None = None
        self._measured: Metrics | None = None
        self._measured_key: tuple | None = None  # (spec, backend) of ``_measured``
        self._drawn: dict[widgets.FloatSlider, float] = {}  # the value each slider was last drawn at
        self._local = threading.local()  # the guard flag, per thread: watchers run on the caller's thread
        self._draw_lock = threading.RLock()
        self._worker = LatestWorker(name=f"prunescope-widget-{explorer.name}")

        self.method = widgets.Dropdown(
            options=[(METHODS[name].display_name, name) for name in explorer.methods],
            description="Method", tooltip="Pruning criterion",
        )
        self.n = widgets.IntText(description="N", tooltip="weights kept per group",
                                 layout=widgets.Layout(width="120px"))
        self.m = widgets.IntText(description="M", tooltip="group size",
                                 layout=widgets.Layout(width="120px"))
        self.norm = widgets.ToggleButtons(options=[("L1 norm", "l1"), ("L2 norm", "l2")],
                                          description="Channels", tooltip="channel norm")
        self.skip_first_last = widgets.Checkbox(description="Keep first and last layer dense", indent=False)
        self.sparsity = self._slider("Sparsity", "Fraction of the prunable weights removed")
        self.layer_sliders = {
            name: self._slider(name, f"Sparsity of layer {name}, set by hand") for name in explorer.layers
        }
        self.layer_readouts = {name: widgets.HTML() for name in explorer.layers}
        self.layer_heading = widgets.HTML()
        self.metrics_html = widgets.HTML()
        self.error_html = widgets.HTML()
        self.nm_box = widgets.HBox([self.n, self.m])

        layer_rows = [
            widgets.HBox([self.layer_sliders[name], self.layer_readouts[name]]) for name in explorer.layers
        ]
        children = [
            widgets.HTML(f"<b>Prunescope</b> &middot; {html.escape(explorer.name)}"),
            widgets.HBox([self.method, self.nm_box, self.norm]),
            self.sparsity,
            self.skip_first_last,
            self.layer_heading,
            *layer_rows,
            self.error_html,
            self.metrics_html,
        ]
        super().__init__(children=children, **kwargs)

        state = explorer.state
        key = (state.spec(), state.backend)
        try:  # the first numbers without waiting for the worker
            self._show(key, self._evaluate(key))
        except Exception as err:  # noqa: BLE001 - shown in the widget
            self._evaluation_failed(err)
        self._draw()
        self.method.observe(self._on_method, "value")
        self.n.observe(self._on_nm, "value")
        self.m.observe(self._on_nm, "value")
        self.norm.observe(self._on_norm, "value")
        self.skip_first_last.observe(self._on_skip_first_last, "value")
        self.sparsity.observe(self._on_sparsity, "value")
        for name, slider in self.layer_sliders.items():
            slider.observe(functools.partial(self._on_layer, name), "value")
        self._watcher = explorer.state.param.watch(self._on_state, list(STATE_PARAMS))

    @staticmethod
    def _slider(description: str, tooltip: str) -> widgets.FloatSlider:
        return widgets.FloatSlider(
            min=0.0, max=SLIDER_MAX, step=SLIDER_STEP, readout_format=".1%", continuous_update=True,
            description=description, tooltip=tooltip,
            style={"description_width": _LABEL_WIDTH}, layout=widgets.Layout(width="480px"),
        )

    # ------------------------------------------------------------------ controls -> engine
    def _on_method(self, change: dict) -> None:
        if not self._drawing:
            self._apply(lambda: self.explorer.prune(change["new"]))

    def _on_nm(self, change: dict) -> None:
        if not self._drawing:
            self._apply(lambda: self.explorer.prune("nm", n=self.n.value, m=self.m.value))

    def _on_norm(self, change: dict) -> None:
        if not self._drawing:
            self._apply(lambda: self.explorer.prune("channel", norm=change["new"]))

    def _on_skip_first_last(self, change: dict) -> None:
        if not self._drawing:
            self._apply(lambda: self.explorer.prune(self.explorer.state.method, skip_first_last=change["new"]))

    def _on_sparsity(self, change: dict) -> None:
        if not self._drawing and not self._is_echo(self.sparsity, change["new"]):
            method = self.explorer.state.method
            self._apply(lambda: self.explorer.prune(method, sparsity=_from_browser(change["new"])))

    def _on_layer(self, layer: str, change: dict) -> None:
        if not self._drawing and not self._is_echo(self.layer_sliders[layer], change["new"]):
            self._apply(lambda: self.explorer.set_layer_sparsity(layer, _from_browser(change["new"])))

    def _is_echo(self, slider: widgets.FloatSlider, value: float) -> bool:
        """Whether ``value`` is the browser's slider snapping the drawn value to its step.

        The JavaScript slider rounds a value it is sent to its step grid and, with
        ``continuous_update``, sends the rounded value back (0.891 -> 0.89, 0.9 ->
        0.9000000000000001). Taken as input, that would turn a method's allocation into hand-set
        layers. Any real move lands at least one step away from the drawn value.
        """
        drawn = self._drawn.get(slider)
        return drawn is not None and abs(value - drawn) < slider.step / 2 + 1e-9

    def _apply(self, change_state) -> None:
        """Run one engine call; on a ValueError show it and put the controls back to the state."""
        self._set_error(None)
        try:
            change_state()
        except ValueError as err:
            self._set_error(str(err))
            self._draw()  # the state is unchanged: redraw it over the rejected input

    # ------------------------------------------------------------------ engine -> controls
    @property
    def _drawing(self) -> bool:
        return getattr(self._local, "drawing", False)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """While drawing, control observers ignore the values the drawing sets."""
        before = self._drawing
        self._local.drawing = True
        try:
            yield
        finally:
            self._local.drawing = before

    def _on_state(self, *events: Any) -> None:
        self._set_error(None)
        self._draw()

    def _draw(self) -> None:
        """Set every control and the instant numbers from ``explorer.state``, then measure."""
        explorer, state = self.explorer, self.explorer.state
        with self._draw_lock, self._guard():
            spec = state.spec()
            cost = explorer.cost(spec)
            structured = METHODS[state.method].is_structured
            self.method.value = state.method
            self.n.value, self.m.value = state.n, state.m
            self.norm.value = state.norm
            self.skip_first_last.value = state.skip_first_last
            self.nm_box.layout.display = None if state.method == "nm" else "none"
            self.norm.layout.display = None if structured else "none"
            self._draw_slider(self.sparsity, state.sparsity)
            self.sparsity.disabled = state.method == "nm"
            self.sparsity.tooltip = (
                "N:M fixes the sparsity at 1 - N/M" if state.method == "nm"
                else "Fraction of output channels removed per layer" if structured
                else "Fraction of the prunable weights removed"
            )
            unit = "output channels" if structured else "weights"
            self.layer_heading.value = (
                f"<b>Per layer</b> (fraction of {unit} removed; drag one to set that layer by hand)"
            )
            values = explorer.layer_settings()
            table = cost.per_layer.set_index("layer")
            for name, slider in self.layer_sliders.items():
                self._draw_slider(slider, values[name])
                self.layer_readouts[name].value = layer_readout(
                    int(table.at[name, "kept"]), int(table.at[name, "params"]), name in state.layer_sparsity
                )
            key = (spec, state.backend)
            fresh = self._measured_key == key
            self.metrics_html.value = metrics_table(cost, self._measured, self._dense, pending=not fresh)
        if not fresh:
            self._worker.submit(
                functools.partial(self._evaluate, key), functools.partial(self._show, key), self._evaluation_failed
            )

    def _draw_slider(self, slider: widgets.FloatSlider, value: float) -> None:
        self._drawn[slider] = slider.value = min(value, SLIDER_MAX)

    def _evaluate(self, key: tuple) -> tuple["Metrics", "Metrics"]:
        """Dense and pruned metrics of ``key = (spec, backend)`` (runs on the worker thread)."""
        spec, backend = key
        return self.explorer.dense_metrics(), self.explorer.evaluate(backend=backend, spec=spec)

    def _show(self, key: tuple, result: tuple["Metrics", "Metrics"]) -> None:
        """Show a measurement if it is of the current setting (else a newer one is on its way)."""
        dense, metrics = result
        state = self.explorer.state
        with self._draw_lock:
            if key == (state.spec(), state.backend):
                self._dense, self._measured, self._measured_key = dense, metrics, key
                self.metrics_html.value = metrics_table(metrics, metrics, dense, pending=False)

    def _evaluation_failed(self, err: BaseException) -> None:
        self._set_error(f"could not evaluate this setting: {err}")

    def _set_error(self, message: str | None) -> None:
        self.error = message
        self.error_html.value = error_line(message)

    # ------------------------------------------------------------------ public helpers
    @property
    def metrics(self) -> "Metrics | None":
        """The measurement on display (``None`` before the first one)."""
        return self._measured

    def wait(self, timeout: float = 30.0) -> bool:
        """Block until the measurement in progress is shown (scripts and tests); returns success."""
        return self._worker.wait_idle(timeout)

    def close(self) -> None:
        """Stop following the state, stop the worker and close the controls."""
        if getattr(self, "_watcher", None) is not None:
            self.explorer.state.param.unwatch(self._watcher)
            self._watcher = None
            self._worker.close()
        _close_tree(self.children)
        super().close()


def _close_tree(children) -> None:
    """Close widgets and, depth first, the widgets inside them."""
    for child in children:
        _close_tree(getattr(child, "children", ()))
        child.close()
