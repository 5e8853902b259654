"""One view model for every view: a pure function of an explorer and its state that gives each
control's range, step, value, disabled flag, label and note. The Panel app and the Jupyter widget
both render it (and write only through the Explorer), so they never disagree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import param

from prunescope.explorer.pruning import METHODS, get_method

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer

#: Slider range: the engine accepts sparsities in [0, 1).
MAX_SPARSITY = 0.99
STEP = 0.01


def percent(x: float, digits: int = 1) -> str:
    """A fraction as a percentage, rounded the same way in every view (half away from zero)."""
    scaled = abs(x) * 100 * 10**digits
    rounded = int(scaled + 0.5) / 10**digits
    return f"{'-' if x < 0 else ''}{rounded:.{digits}f}%"


@dataclass(frozen=True)
class Slider:
    name: str
    label: str
    value: float
    start: float
    end: float
    step: float
    disabled: bool = False
    hand_set: bool = False
    note: str = ""


@dataclass(frozen=True)
class Option:
    """One option of the current method, from its ``param`` declaration."""

    name: str
    label: str
    kind: str  # 'int', 'float', 'select', 'bool'
    value: Any
    bounds: tuple[Any, Any] | None = None
    choices: tuple[Any, ...] = ()
    doc: str = ""


@dataclass(frozen=True)
class ViewModel:
    model: str
    method: str
    methods: dict[str, str]  # display name -> registry name
    description: str
    sparsity: Slider
    achieved: str
    options: tuple[Option, ...]
    seed: Option | None
    weights: tuple[Slider, ...]
    weights_note: str


def _option(name: str, p: param.Parameter, value: Any) -> Option:
    label = name.replace("_", " ")
    if isinstance(p, param.Selector) and not isinstance(p, param.Boolean):
        return Option(name, label, "select", value, choices=tuple(p.objects), doc=p.doc or "")
    if isinstance(p, param.Boolean):
        return Option(name, label, "bool", value, doc=p.doc or "")
    if isinstance(p, param.Integer):
        return Option(name, label, "int", value, bounds=p.bounds, doc=p.doc or "")
    if isinstance(p, param.Number):
        return Option(name, label, "float", value, bounds=p.bounds, doc=p.doc or "")
    return Option(name, label, "text", value, doc=p.doc or "")


def view_model(explorer: "Explorer") -> ViewModel:
    """Every control of the pruning sidebar for ``explorer``'s current state."""
    setting = explorer.setting.weights
    method = get_method(setting.method)
    options = dict(setting.options)
    cost = explorer.cost()
    fixed = method.fixed_sparsity(options)
    sparsity = Slider(
        name="sparsity", label=method.sparsity_label, value=min(setting.sparsity, MAX_SPARSITY),
        start=0.0, end=MAX_SPARSITY, step=STEP, disabled=fixed is not None,
        note=("Fixed by the method's options." if fixed is not None else ""),
    )
    achieved = f"Achieved sparsity of the prunable weights: {percent(cost.sparsity)}"
    if setting.overrides:
        achieved += " (the target applies to the weights not set by hand)"
    opts = tuple(_option(n, method.Options.param[n], options[n]) for n in method.option_names())
    seed = Option("seed", "seed", "int", setting.seed, bounds=(0, 2**31 - 1),
                  doc="Seed of the random choices") if method.uses_seed else None
    steps = method.layer_steps(options)
    values = explorer.layer_settings()
    locked = method.locked_weights(explorer._score_context(setting.seed), options)
    hand = setting.overrides_dict
    sliders = []
    for name in explorer.weights:
        end, step = (max(steps), max(steps)) if steps else (MAX_SPARSITY, STEP)
        label = f"{name} · set by hand" if name in hand else name
        sliders.append(Slider(name=name, label=label, value=min(values[name], end), start=0.0, end=end,
                              step=step, disabled=name in locked, hand_set=name in hand,
                              note=locked.get(name, "")))
    if steps:
        dense = [n for n in explorer.weights if bool(explorer.masks[n].all())]
        note = f"Each weight is dense or {percent(max(steps))} sparse."
        if dense and not hand:
            note += f" Kept dense (input size not a multiple of the group): {', '.join(dense)}."
    elif method.is_structured:
        note = "Fraction of output channels removed; coupled channels go together."
        if locked:
            note += f" Locked: {', '.join(locked)} (their channels are the model's outputs or not prunable)."
    else:
        note = "Achieved sparsity of each weight; drag one to set it by hand."
    return ViewModel(
        model=explorer.name, method=method.name,
        methods={m.display_name: name for name, m in METHODS.items()
                 if m.selectable or name == method.name},
        description=method.description, sparsity=sparsity, achieved=achieved, options=opts, seed=seed,
        weights=tuple(sliders), weights_note=note,
    )
