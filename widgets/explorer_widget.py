"""``ExplorerWidget``: an ipywidgets view of one :class:`~prunescope.explorer.Explorer`.

The widget holds no pruning logic and no copy of the state: it renders
:func:`prunescope.explorer.viewmodel.view_model` (the same view model the Panel app renders), and
moving a control calls ``Explorer.prune`` / ``Explorer.set_layer_sparsity``. The engine validates
the input and updates ``explorer.state``; a ``param`` watcher on that state redraws every
control. So a change made anywhere (this widget, a second widget, ``ex.prune(...)`` in a later
cell, the Panel app) shows up here the same way. Echoes of a redraw (values the redraw sets, or
the browser's slider snapping them to its step) are never taken for user input.

Evaluation runs on the kernel's own thread: comm messages sent from a background thread do not
reach a notebook page (ipykernel 7), and an evaluation of a sample model takes milliseconds.
"""

from __future__ import annotations

import contextlib
import functools
import html
import threading
from typing import TYPE_CHECKING, Any, Iterator

import ipywidgets as widgets

from prunescope.explorer.viewmodel import MAX_SPARSITY, Option, view_model
from prunescope.widgets._html import error_line, layer_readout, metrics_table

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer
    from prunescope.explorer.core.cost import Metrics

#: State parameters whose change redraws the widget.
STATE_PARAMS = ("setting", "backend")

#: Largest value the sparsity sliders offer (the state allows anything in [0, 1)).
SLIDER_MAX = MAX_SPARSITY
SLIDER_STEP = 0.01
_LABEL_WIDTH = "140px"


def _from_browser(value: float) -> float:
    """A slider value without the float noise of the browser's step arithmetic (0.47000000000000003)."""
    return round(value, 9)


class ExplorerWidget(widgets.VBox):
    """Method picker, its options, global and per-weight sparsity sliders and live metrics.

    >>> w = ExplorerWidget(Explorer.from_sample("digits_mlp")); w          # in a notebook cell
    >>> w.sparsity.value = 0.9      # same as dragging: calls explorer.prune(method, sparsity=0.9)

    Controls (public, for scripting and tests): ``method``, ``sparsity``, ``option_widgets[name]``,
    ``seed`` and ``layer_sliders[weight]``; output: ``metrics_html``, ``error_html``,
    :attr:`metrics` (the measurement on display) and :attr:`error` (the last rejected input).
    """

    def __init__(self, explorer: "Explorer", **kwargs: Any) -> None:
        self.explorer = explorer
        self.error: str | None = None
        self._measured: Metrics | None = None
        self._drawn: dict[Any, Any] = {}  # the value each control was last drawn at
        self._local = threading.local()  # the guard flag, per thread
        self._draw_lock = threading.RLock()
        vm = view_model(explorer)
        self.method = widgets.Dropdown(options=list(vm.methods.items()), description="Method",
                                       tooltip="Pruning criterion")
        self.method_note = widgets.HTML()
        self.sparsity = self._slider("Sparsity", "Target sparsity of the method")
        self.achieved = widgets.HTML()
        self.option_box = widgets.HBox()
        self.option_widgets: dict[str, widgets.Widget] = {}
        self._option_method: str | None = None
        self.seed = widgets.BoundedIntText(description="Seed", min=0, max=2**31 - 1,
                                           layout=widgets.Layout(width="180px"))
        # wide enough for the longest weight name (about 7 px a character at the notebook's 13 px font)
        names_width = f"{max(140, 7 * max((len(n) for n in explorer.weights), default=0) + 8)}px"
        self.layer_sliders = {name: self._slider(name, f"Sparsity of {name}, set by hand", names_width)
                              for name in explorer.weights}
        self.layer_readouts = {name: widgets.HTML() for name in explorer.weights}
        self.layer_heading = widgets.HTML()
        self.metrics_html = widgets.HTML()
        self.error_html = widgets.HTML()
        layer_rows = [widgets.HBox([self.layer_sliders[n], self.layer_readouts[n]]) for n in explorer.weights]
        children = [
            widgets.HTML(f"<b>Prunescope</b> &middot; {html.escape(explorer.name)}"),
            self.method, self.method_note, self.sparsity, self.achieved, self.option_box, self.seed,
            self.layer_heading, *layer_rows, self.error_html, self.metrics_html,
        ]
        from prunescope.widgets.tokens_widget import token_box

        #: Token controls and heatmaps (None: the model has no transformer blocks).
        self.tokens = token_box(explorer)
        children += [self.tokens] if self.tokens is not None else []
        from prunescope.widgets.geometry_widget import geometry_box

        #: Feature geometry (embedding, CKA) in a collapsed accordion: it computes once opened.
        self.geometry = geometry_box(explorer)
        children.append(self.geometry)
        super().__init__(children=children, **kwargs)
        self._draw()
        self.method.observe(self._on_method, "value")
        self.sparsity.observe(self._on_sparsity, "value")
        self.seed.observe(self._on_option, "value")
        for name, slider in self.layer_sliders.items():
            slider.observe(functools.partial(self._on_layer, name), "value")
        self._watcher = explorer.state.param.watch(self._on_state, list(STATE_PARAMS))

    @staticmethod
    def _slider(description: str, tooltip: str, label_width: str = _LABEL_WIDTH) -> widgets.FloatSlider:
        return widgets.FloatSlider(
            min=0.0, max=MAX_SPARSITY, step=0.01, readout_format=".1%", continuous_update=True,
            description=description, tooltip=tooltip, style={"description_width": label_width},
            layout=widgets.Layout(width=f"calc({label_width} + 340px)"),
        )

    @staticmethod
    def _option_widget(option: Option) -> widgets.Widget:
        if option.kind == "select":
            return widgets.Dropdown(options=list(option.choices), value=option.value, description=option.label,
                                    tooltip=option.doc, layout=widgets.Layout(width="220px"))
        if option.kind == "bool":
            return widgets.Checkbox(value=option.value, description=option.label, indent=False)
        if option.kind == "int":
            low, high = option.bounds or (None, None)
            return widgets.BoundedIntText(value=option.value, min=low if low is not None else -2**31,
                                          max=high if high is not None else 2**31 - 1, description=option.label,
                                          tooltip=option.doc, layout=widgets.Layout(width="160px"))
        if option.kind == "float":
            return widgets.FloatText(value=option.value, description=option.label, layout=widgets.Layout(width="180px"))
        return widgets.Text(value=str(option.value), description=option.label, tooltip=option.doc,
                            layout=widgets.Layout(width="420px"))

    # ------------------------------------------------------------------ controls -> engine
    def _on_method(self, change: dict) -> None:
        if not self._drawing:
            self._apply(lambda: self.explorer.prune(change["new"]))

    def _on_option(self, change: dict) -> None:
        if self._drawing or change["owner"] in self._drawn and self._drawn[change["owner"]] == change["new"]:
            return
        w = self.explorer.setting.weights
        values = {n: wid.value for n, wid in self.option_widgets.items()}
        if self.seed.layout.display != "none":
            values["seed"] = self.seed.value
        self._apply(lambda: self.explorer.prune(w.method, sparsity=None, **values))

    def _on_sparsity(self, change: dict) -> None:
        if not self._drawing and not self._is_echo(self.sparsity, change["new"]):
            w = self.explorer.setting.weights
            self._apply(lambda: self.explorer.prune(w.method, sparsity=_from_browser(change["new"]),
                                                    seed=w.seed, **dict(w.options)))

    def _on_layer(self, layer: str, change: dict) -> None:
        if not self._drawing and not self._is_echo(self.layer_sliders[layer], change["new"]):
            self._apply(lambda: self.explorer.set_layer_sparsity(layer, _from_browser(change["new"])))

    def _is_echo(self, slider: widgets.FloatSlider, value: float) -> bool:
        """Whether ``value`` is the browser's slider snapping the drawn value to its step.

        The JavaScript slider rounds a value it is sent to its step grid and, with
        ``continuous_update``, sends the rounded value back (0.891 -> 0.89). Taken as input, that
        would turn a method's allocation into hand-set weights. An echo is a point of the step
        grid within half a step of the drawn value; a real move lands at least one step away, and
        a value off the grid (set from Python) is always input.
        """
        drawn = self._drawn.get(slider)
        if drawn is None:
            return False
        if abs(value - drawn) < 1e-9:
            return True
        steps = value / slider.step
        on_grid = abs(steps - round(steps)) < 1e-6
        return on_grid and abs(value - drawn) < slider.step / 2 + 1e-9

    def _apply(self, change_state) -> None:
        """Run one engine call; on a ValueError show it (naming the refused value) and redraw the state."""
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
        """Set every control from the view model, then measure the setting (inline)."""
        explorer = self.explorer
        with self._draw_lock, self._guard():
            vm = view_model(explorer)
            choices = tuple(vm.methods.items())
            if tuple(self.method.options) != choices:
                self.method.options = choices
            self.method.value = vm.method
            self.method_note.value = f'<span style="font-size:12px;color:#4b5563">{html.escape(vm.description)}</span>'
            self._draw_slider(self.sparsity, vm.sparsity.value)
            self.sparsity.disabled = vm.sparsity.disabled
            self.sparsity.description_tooltip = vm.sparsity.label
            self.achieved.value = f'<span style="font-size:12px">{html.escape(vm.achieved)}</span>'
            if vm.method != self._option_method:
                self._option_method = vm.method
                self.option_widgets = {o.name: self._option_widget(o) for o in vm.options}
                for wid in self.option_widgets.values():
                    wid.observe(self._on_option, "value")
                self.option_box.children = list(self.option_widgets.values())
            for option in vm.options:
                self.option_widgets[option.name].value = option.value
                self._drawn[self.option_widgets[option.name]] = option.value
            self.seed.layout.display = None if vm.seed is not None else "none"
            if vm.seed is not None:
                self.seed.value = vm.seed.value
                self._drawn[self.seed] = vm.seed.value
            self.layer_heading.value = f"<b>Per-weight sparsity</b> &middot; {html.escape(vm.weights_note)}"
            cost = explorer.cost()
            table = cost.per_layer.set_index("layer")
            for s in vm.weights:
                slider = self.layer_sliders[s.name]
                slider.max, slider.step, slider.disabled = s.end, s.step, s.disabled
                slider.description = s.name  # "set by hand" is in the readout beside it (a label must fit)
                slider.tooltip = s.label
                self._draw_slider(slider, s.value)
                self.layer_readouts[s.name].value = layer_readout(
                    int(table.at[s.name, "kept"]), int(table.at[s.name, "params"]), s.hand_set)
            try:
                self._measured = explorer.evaluate()
                dense = explorer.dense_metrics()
            except Exception as err:  # noqa: BLE001 - shown in the widget
                self._set_error(f"could not evaluate this setting: {err}")
                self.metrics_html.value = metrics_table(cost, None, None, pending=True)
            else:
                self.metrics_html.value = metrics_table(self._measured, self._measured, dense, pending=False)

    def _draw_slider(self, slider: widgets.FloatSlider, value: float) -> None:
        """Put ``slider`` at ``value`` unless it is within half a step of it already: resending a
        value the slider shows would pull the handle back under a user whose next key presses are
        still on their way (the handle bounced and key presses were lost)."""
        value = min(value, slider.max)
        self._drawn[slider] = value
        # half of the finest step: N:M's one coarse step (0.875) must not hide a real move
        if abs(slider.value - value) > min(slider.step or SLIDER_STEP, SLIDER_STEP) / 2 - 1e-12:
            slider.value = value

    def _set_error(self, message: str | None) -> None:
        self.error = message
        self.error_html.value = error_line(message)

    # ------------------------------------------------------------------ public helpers
    @property
    def metrics(self) -> "Metrics | None":
        """The measurement on display (``None`` before the first one)."""
        return self._measured

    def wait(self, timeout: float = 30.0) -> bool:
        """Measurements run inline; kept for scripts written against the threaded widget."""
        return True

    def close(self) -> None:
        """Stop following the state and close the controls."""
        if getattr(self, "_watcher", None) is not None:
            self.explorer.state.param.unwatch(self._watcher)
            self._watcher = None
        _close_tree(self.children)
        super().close()


def _close_tree(children) -> None:
    """Close widgets and, depth first, the widgets inside them."""
    for child in children:
        _close_tree(getattr(child, "children", ()))
        child.close()
