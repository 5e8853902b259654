"""The sidebar: model, method and its options, the evaluation backend, the global sparsity and
one slider per layer.

The widgets only show the session's :class:`~prunescope.explorer.state.PruningState`;
``ExplorerApp`` turns their changes into ``Explorer.prune`` / ``set_layer_sparsity`` calls and
calls :meth:`Controls.show` after every state change.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import panel as pn

from prunescope.explorer.app.backends import BACKEND_NOTES
from prunescope.explorer.pruning import METHODS

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer

#: Slider range: the engine accepts sparsities in [0, 1).
MAX_SPARSITY = 0.99
STEP = 0.01


def _set(widget: pn.viewable.Viewable, **values) -> None:
    """Update only the parameters that differ (param's own no-op check costs more than this one)."""
    changed = {k: v for k, v in values.items() if getattr(widget, k) != v}
    if changed:
        widget.param.update(**changed)


class Controls:
    """Widgets of the sidebar; ``layer_sliders`` maps each prunable layer to its slider."""

    def __init__(self, models: list[str], model: str, backends: list[str] | None = None) -> None:
        self.model = pn.widgets.Select(label="Model", options=models, value=model)
        self.method = pn.widgets.Select(
            label="Pruning method", options={m.display_name: name for name, m in METHODS.items()},
        )
        self.description = pn.pane.HTML("", styles={"font-size": "12px", "color": "#4b5563"}, margin=(0, 10))
        self.sparsity = pn.widgets.FloatSlider(
            label="Global sparsity", start=0.0, end=MAX_SPARSITY, step=STEP, value=0.0, format="0%",
        )
        self.n = pn.widgets.IntInput(label="N (kept)", start=1, value=2, width=135)
        self.m = pn.widgets.IntInput(label="M (group)", start=2, value=4, width=135)
        self.nm_row = pn.Row(self.n, self.m, visible=False)
        self.norm = pn.widgets.RadioButtonGroup(label="Channel norm", options={"L1 norm": "l1", "L2 norm": "l2"},
                                                visible=False)
        self.skip_first_last = pn.widgets.Checkbox(label="Keep first and last layer dense")
        self.seed = pn.widgets.IntInput(label="Seed (random, SNIP)", start=0, value=0)
        self.backend = pn.widgets.Select(label="Evaluate with", options=list(backends or ["torch"]), value="torch")
        self.backend_note = pn.pane.HTML(BACKEND_NOTES["torch"], styles={"font-size": "12px", "color": "#4b5563"},
                                         margin=(0, 10))
        self.layer_note = pn.pane.HTML("", styles={"font-size": "12px", "color": "#4b5563"}, margin=(0, 10))
        self.layer_box = pn.Column(sizing_mode="stretch_width")
        self.layer_sliders: dict[str, pn.widgets.FloatSlider] = {}

    def set_layers(self, layers: list[str]) -> dict[str, pn.widgets.FloatSlider]:
        """Replace the per-layer sliders with one per layer of ``layers`` (returns them)."""
        self.layer_sliders = {
            name: pn.widgets.FloatSlider(label=name, start=0.0, end=MAX_SPARSITY, step=STEP,
                                         value=0.0, format="0.0%", sizing_mode="stretch_width")
            for name in layers
        }
        self.layer_box.objects = list(self.layer_sliders.values())
        return self.layer_sliders

    def show(self, explorer: "Explorer") -> None:
        """Make every widget show ``explorer``'s state (callers suppress the widgets' callbacks)."""
        state = explorer.state
        is_nm, is_channel = state.method == "nm", state.method == "channel"
        _set(self.model, value=explorer.name)
        _set(self.method, value=state.method)
        _set(self.description, object=METHODS[state.method].description)
        label = "Global sparsity (1 − N/M)" if is_nm else (
            "Channels removed per layer" if is_channel else "Global sparsity")
        _set(self.sparsity, value=min(state.sparsity, MAX_SPARSITY), disabled=is_nm, label=label)
        _set(self.n, value=state.n)
        _set(self.m, value=state.m)
        _set(self.nm_row, visible=is_nm)
        _set(self.norm, value=state.norm, visible=is_channel)
        _set(self.skip_first_last, value=state.skip_first_last)
        _set(self.seed, value=state.seed)
        if state.backend not in self.backend.options:  # set in Python to one not available here
            _set(self.backend, options=[*self.backend.options, state.backend])
        _set(self.backend, value=state.backend)
        _set(self.backend_note, object=BACKEND_NOTES[state.backend])
        nm_step = 1.0 - state.n / state.m
        values = explorer.layer_settings()
        last = explorer.layers[-1]
        for name, slider in self.layer_sliders.items():
            end, step = (nm_step, nm_step) if is_nm else (MAX_SPARSITY, STEP)
            _set(slider, start=0.0, end=end, step=step, value=min(values[name], end),
                 label=f"{name} · set by hand" if name in state.layer_sparsity else name,
                 disabled=is_channel and name == last)
        if is_nm:
            dense = [n for n in explorer.layers if explorer.masks[n].all()]
            note = f"Each layer is dense or {state.n}:{state.m} sparse."
            if dense and not state.layer_sparsity:
                note += (f" Input size not a multiple of {state.m}, kept dense: "
                         f"{', '.join(html.escape(n) for n in dense)}.")
        elif is_channel:
            note = "Fraction of output channels removed; the last layer's outputs are the model's outputs and stay."
        else:
            note = "Achieved sparsity of each layer; drag one to set it by hand."
        _set(self.layer_note, object=note)

    def widgets(self) -> list[pn.viewable.Viewable]:
        """The sidebar's contents, top to bottom."""
        return [
            self.model, self.method, self.description, self.sparsity, self.nm_row, self.norm,
            self.skip_first_last, self.seed, self.backend, self.backend_note,
            pn.pane.HTML("<b>Per-layer sparsity</b>", margin=(12, 10, 0, 10)), self.layer_note,
            self.layer_box,
        ]
