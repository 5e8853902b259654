"""The sidebar: model, method and its options, the evaluation backend, the global sparsity and
one slider per prunable weight; all drawn from :func:`prunescope.explorer.viewmodel.view_model`.

The widgets only show the view model; ``ExplorerApp`` turns their changes into
``Explorer.prune`` / ``set_layer_sparsity`` calls and calls :meth:`Controls.show` after every
state change (with its callbacks suppressed, so an echo is never taken for user input).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import panel as pn

from prunescope.explorer.app.backends import BACKEND_NOTES
from prunescope.explorer.pruning import METHODS
from prunescope.explorer.viewmodel import MAX_SPARSITY, STEP, Option, ViewModel

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer

_NOTE = {"font-size": "12px", "color": "#4b5563"}


def _set(widget: pn.viewable.Viewable, **values) -> None:
    """Update only the parameters that differ."""
    changed = {k: v for k, v in values.items() if getattr(widget, k) != v}
    if changed:
        widget.param.update(**changed)


def option_widget(option: Option) -> pn.widgets.Widget:
    """A Panel widget for one method option."""
    if option.kind == "select":
        return pn.widgets.Select(name=option.label, options=list(option.choices), value=option.value,
                                 description=option.doc or None)
    if option.kind == "bool":
        return pn.widgets.Checkbox(name=option.label, value=option.value)
    if option.kind == "int":
        low, high = option.bounds or (None, None)
        return pn.widgets.IntInput(name=option.label, value=option.value, start=low, end=high,
                                   description=option.doc or None)
    if option.kind == "float":
        low, high = option.bounds or (None, None)
        return pn.widgets.FloatInput(name=option.label, value=option.value, start=low, end=high)
    return pn.widgets.TextInput(name=option.label, value=str(option.value))


class Controls:
    """Widgets of the sidebar; ``layer_sliders`` maps each prunable weight to its slider and
    ``option_widgets`` each option of the current method to its widget."""

    def __init__(self, models: list[str], model: str, backends: list[str] | None = None) -> None:
        self.model = pn.widgets.Select(name="Model", options=models, value=model)
        self.method = pn.widgets.Select(
            name="Pruning method",
            options={m.display_name: name for name, m in METHODS.items() if getattr(m, "selectable", True)},
        )
        self.description = pn.pane.HTML("", styles=_NOTE, margin=(0, 10))
        self.sparsity = pn.widgets.FloatSlider(
            name="Global sparsity", start=0.0, end=MAX_SPARSITY, step=STEP, value=0.0, format="0.0%",
        )
        self.achieved = pn.pane.HTML("", styles=_NOTE, margin=(0, 10))
        self.option_box = pn.Column(sizing_mode="stretch_width", margin=0)
        self.option_widgets: dict[str, pn.widgets.Widget] = {}
        self._option_method: str | None = None
        self.seed = pn.widgets.IntInput(name="Seed", start=0, end=2**31 - 1, value=0)
        self.backend = pn.widgets.Select(name="Evaluate with", options=list(backends or ["torch"]), value="torch")
        self.backend_note = pn.pane.HTML(BACKEND_NOTES["torch"], styles=_NOTE, margin=(0, 10))
        self.layer_note = pn.pane.HTML("", styles=_NOTE, margin=(0, 10))
        self.layer_box = pn.Column(sizing_mode="stretch_width")
        self.layer_sliders: dict[str, pn.widgets.FloatSlider] = {}

    def set_layers(self, layers: list[str]) -> dict[str, pn.widgets.FloatSlider]:
        """Replace the per-weight sliders with one per weight of ``layers`` (returns them)."""
        self.layer_sliders = {
            name: pn.widgets.FloatSlider(name=name, start=0.0, end=MAX_SPARSITY, step=STEP,
                                         value=0.0, format="0.0%", sizing_mode="stretch_width")
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
        _set(self.sparsity, value=s.value, disabled=s.disabled, name=s.label)
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
            if slider is not None:
                _set(slider, start=slider_vm.start, end=slider_vm.end, step=slider_vm.step, value=slider_vm.value,
                     name=slider_vm.label, disabled=slider_vm.disabled)
        _set(self.layer_note, object=vm.weights_note)

    def widgets(self) -> list[pn.viewable.Viewable]:
        """The sidebar's contents, top to bottom."""
        return [
            self.model, self.method, self.description, self.sparsity, self.achieved, self.option_box,
            self.seed, self.backend, self.backend_note,
            pn.pane.HTML("<b>Per-weight sparsity</b>", margin=(12, 10, 0, 10)), self.layer_note,
            self.layer_box,
        ]
