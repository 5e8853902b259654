"""The sidebar: model, method and its options, the evaluation backend, the global sparsity and
one slider per prunable weight; all drawn from :func:`prunescope.explorer.viewmodel.view_model`.

The widgets only show the view model; ``ExplorerApp`` turns their changes into
``Explorer.prune`` / ``set_layer_sparsity`` calls and calls :meth:`Controls.show` after every
state change (with its callbacks suppressed, so an echo is never taken for user input).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import panel as pn

from prunescope.explorer.app.backends import BACKEND_NOTES
from prunescope.explorer.pruning import METHODS
from prunescope.explorer.viewmodel import MAX_SPARSITY, STEP, Option, ViewModel

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer

_NOTE = {"font-size": "12px", "color": "#4b5563"}
#: Long slider titles ("Global sparsity (achieved, of the prunable weights): 90.0%") wrap inside
#: the sidebar instead of running off its edge with the value hidden.
_WRAP_TITLE = ":host .bk-slider-title { white-space: normal; overflow-wrap: anywhere; }"


def _set(widget: pn.viewable.Viewable, **values) -> None:
    """Update only the parameters that differ."""
    changed = {k: v for k, v in values.items() if getattr(widget, k) != v}
    if changed:
        widget.param.update(**changed)


#: How long a value drawn into a slider can come back from a notebook page as its echo (s).
ECHO_WINDOW_S = 5.0
#: Seconds after a draw in which a user's move of that slider may have crossed it on the wire.
RESEND_WINDOW_S = 2.0
#: The echo record's name for the global sparsity slider (weights are recorded by their names).
GLOBAL = "<global sparsity>"


def _set_slider(slider: pn.widgets.FloatSlider, value: float, **values) -> bool:
    """Like :func:`_set`, but a value within half a step of the slider's own is the same position:
    sending it back (0.35 for the browser's 0.35000000000000003) would make the handle jump back
    under a user pressing keys faster than the server answers, and lose their key presses.
    "A step" is the finest of the old grid, the new one and the app's 1 % step: N:M's coarse grid
    (one step from dense to 1 - n/m) moves from 75 % to 87.5 % when m goes from 4 to 8, less
    than half of its step, and that move must reach the slider."""
    step = min(values.get("step", slider.step), slider.step, STEP)
    moved = abs(slider.value - value) > step / 2 - 1e-12
    if moved:
        values["value"] = value
    _set(slider, **values)
    return moved  # whether the value was sent to the page


def _doc_with_range(option: Option) -> str | None:
    low, high = option.bounds or (None, None)
    if low is None and high is None:
        return option.doc or None
    return f"{option.doc} Allowed: {low} to {high}.".strip()


def option_widget(option: Option) -> pn.widgets.Widget:
    """A Panel widget for one method option."""
    if option.kind == "select":
        return pn.widgets.Select(name=option.label, options=list(option.choices), value=option.value,
                                 description=option.doc or None)
    if option.kind == "bool":
        return pn.widgets.Checkbox(name=option.label, value=option.value)
    # No start/end in the browser: it would clamp N=0 to 1 silently; the engine refuses an
    # out-of-range value with an alert that names it and the range, and the field shows the state.
    if option.kind == "int":
        return pn.widgets.IntInput(name=option.label, value=option.value, description=_doc_with_range(option))
    if option.kind == "float":
        return pn.widgets.FloatInput(name=option.label, value=option.value, description=_doc_with_range(option))
    return pn.widgets.TextInput(name=option.label, value=str(option.value))


class Controls:
    """Widgets of the sidebar; ``layer_sliders`` maps each prunable weight to its slider and
    ``option_widgets`` each option of the current method to its widget."""

    def __init__(self, models: list[str], model: str, backends: list[str] | None = None) -> None:
        self.model = pn.widgets.Select(name="Model", options=models, value=model)
        self.method = pn.widgets.Select(
            name="Pruning method",
            options={m.display_name: name for name, m in METHODS.items() if m.selectable},
        )
        self.description = pn.pane.HTML("", styles=_NOTE, margin=(0, 10))
        self.sparsity = pn.widgets.FloatSlider(
            name="Global sparsity", start=0.0, end=MAX_SPARSITY, step=STEP, value=0.0, format="0.0%",
            stylesheets=[_WRAP_TITLE], sizing_mode="stretch_width",
        )
        self.achieved = pn.pane.HTML("", styles=_NOTE, margin=(0, 10))
        self.option_box = pn.Column(sizing_mode="stretch_width", margin=0)
        self.option_widgets: dict[str, pn.widgets.Widget] = {}
        self._option_method: str | None = None
        # unbounded in the browser (it would clamp -1 to 0 silently): the engine refuses and says why
        self.seed = pn.widgets.IntInput(name="Seed", value=0, description="Seed of the random choices; "
                                        "an integer from 0 to 2**63 - 1.")
        self.backend = pn.widgets.Select(name="Evaluate with", options=list(backends or ["torch"]), value="torch")
        self.backend_note = pn.pane.HTML(BACKEND_NOTES["torch"], styles=_NOTE, margin=(0, 10))
        self.layer_note = pn.pane.HTML("", styles=_NOTE, margin=(0, 10))
        self.layer_box = pn.Column(sizing_mode="stretch_width")
        self.layer_sliders: dict[str, pn.widgets.FloatSlider] = {}
        self._drawn_at: dict[str, list[tuple[float, float]]] = {}  # per weight: (time, value) sent lately

    def set_layers(self, layers: list[str]) -> dict[str, pn.widgets.FloatSlider]:
        """Replace the per-weight sliders with one per weight of ``layers`` (returns them)."""
        self._drawn_at = {}
        self.layer_sliders = {
            name: pn.widgets.FloatSlider(name=name, start=0.0, end=MAX_SPARSITY, step=STEP,
                                         value=0.0, format="0.0%", sizing_mode="stretch_width",
                                         stylesheets=[_WRAP_TITLE])
            for name in layers
        }
        self.layer_box.objects = list(self.layer_sliders.values())
        return self.layer_sliders

    def options_changed(self, vm: ViewModel) -> bool:
        """Whether the method changed, so the option widgets must be rebuilt (callers re-watch them)."""
        return vm.method != self._option_method

    def build_options(self, vm: ViewModel) -> dict[str, pn.widgets.Widget]:
        """New option widgets for ``vm``'s method."""
        self._option_method = vm.method
        self.option_widgets = {o.name: option_widget(o) for o in vm.options}
        self.option_box.objects = list(self.option_widgets.values())
        return self.option_widgets

    def option_values(self) -> dict[str, Any]:
        values = {name: w.value for name, w in self.option_widgets.items()}
        if self.seed.visible:
            values["seed"] = self.seed.value
        return values

    def show(self, explorer: "Explorer", vm: ViewModel) -> None:
        """Make every widget show ``vm`` (callers suppress the widgets' callbacks)."""
        state = explorer.state
        _set(self.model, value=explorer.name)
        _set(self.method, options=dict(vm.methods))
        _set(self.method, value=vm.method)
        _set(self.description, object=vm.description)
        s = vm.sparsity
        if _set_slider(self.sparsity, s.value, disabled=s.disabled, name=s.label):
            self._drew(GLOBAL, s.value)
        _set(self.achieved, object=vm.achieved)
        for option in vm.options:
            widget = self.option_widgets.get(option.name)
            if widget is not None:
                _set(widget, value=option.value)
        _set(self.seed, visible=vm.seed is not None)
        if vm.seed is not None:
            _set(self.seed, value=vm.seed.value)
        if state.backend not in self.backend.options:  # set in Python to one not available here
            _set(self.backend, options=[*self.backend.options, state.backend])
        _set(self.backend, value=state.backend)
        _set(self.backend_note, object=BACKEND_NOTES[state.backend])
        for slider_vm in vm.weights:
            slider = self.layer_sliders.get(slider_vm.name)
            if slider is not None and _set_slider(
                    slider, slider_vm.value, start=slider_vm.start, end=slider_vm.end, step=slider_vm.step,
                    name=slider_vm.label, disabled=slider_vm.disabled):
                self._drew(slider_vm.name, slider_vm.value)
        _set(self.layer_note, object=vm.weights_note)

    def _slider(self, name: str) -> pn.widgets.FloatSlider | None:
        """The slider of weight ``name``, or the global one for :data:`GLOBAL`."""
        return self.sparsity if name == GLOBAL else self.layer_sliders.get(name)

    def _drew(self, name: str, value: float) -> None:
        now = time.monotonic()
        recent = [(t, v) for t, v in self._drawn_at.get(name, ()) if now - t <= ECHO_WINDOW_S]
        self._drawn_at[name] = [*recent, (now, value)]

    def is_echo(self, name: str, value: float) -> bool:
        """Whether ``value`` for weight ``name`` (or :data:`GLOBAL`) is within half a step of a
        value drawn into its slider in the last ``ECHO_WINDOW_S`` seconds. In a notebook (Bokeh
        over Jupyter comms) the page sends a drawn value back after snapping it to the slider's
        step, and under a fast series of draws (another view's slider moved by keyboard) an echo of
        an older draw arrives after a newer one: taken as a move, it set the weight by hand (echoes
        of the inline app came back up to seconds late), or pruned the shared explorer back to an
        older global sparsity. A user's own moves are rarely in the record: a slider already where
        the state puts it is not drawn again. The served app never needs this (its page sends only
        the user's moves)."""
        slider = self._slider(name)
        if slider is None:
            return False
        now, step = time.monotonic(), min(slider.step, STEP)
        return any(now - t <= ECHO_WINDOW_S and abs(value - v) < step / 2 + 1e-9
                   for t, v in self._drawn_at.get(name, ()))

    def drawn_lately(self, name: str, seconds: float = RESEND_WINDOW_S) -> bool:
        """Whether slider ``name`` (a weight or :data:`GLOBAL`) was drawn in the last ``seconds``."""
        now = time.monotonic()
        return any(now - t <= seconds for t, _ in self._drawn_at.get(name, ()))

    def resend(self, name: str) -> None:
        """Send slider ``name``'s value to the page again (callers suppress the callbacks).

        For a served page: a draw of this slider may have crossed the user's own move of it on the
        wire and landed after it, so the page shows the older drawn value while the server holds
        the user's. The server cannot send a value its model already has, and Panel never sends a
        value back while the page's change of it is being handled; so, a tick later, the slider
        goes a hair off and back: two changes, the page ends at the value the server holds."""
        slider = self._slider(name)
        if slider is None:
            return
        value = slider.value
        hair = 1e-9 if value + 1e-9 <= slider.end else -1e-9
        slider.value = value + hair
        slider.value = value

    def widgets(self) -> list[pn.viewable.Viewable]:
        """The sidebar's contents, top to bottom."""
        return [
            self.model, self.method, self.description, self.sparsity, self.achieved, self.option_box,
            self.seed, self.backend, self.backend_note,
            pn.pane.HTML("<b>Per-weight sparsity</b>", margin=(12, 10, 0, 10)), self.layer_note,
            self.layer_box,
        ]
