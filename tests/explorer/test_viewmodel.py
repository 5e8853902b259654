"""One view model for every view: it agrees with the engine, and the Panel app's sidebar and the
Jupyter widget render the same values for the same explorer (issue: widget echoes taken as input)."""

from __future__ import annotations

import html

import pytest
import torch
from torch import nn

from prunescope.explorer import Explorer
from prunescope.explorer.app.metrics_view import MetricsPanel
from prunescope.explorer.app.plots import LayerSparsityChart
from prunescope.explorer.pruning import METHODS, get_method, nm_groups
from prunescope.explorer.viewmodel import MAX_SPARSITY, percent, view_model
from prunescope.widgets import ExplorerWidget

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def cnn() -> Explorer:
    return Explorer.from_sample("digits_cnn")


# ----------------------------------------------------------------------------- the view model vs the engine
def test_percent_rounds_half_away_from_zero():
    assert [percent(x) for x in (0.3125, 0.0, 0.5, 0.99949, 0.12344)] == ["31.3%", "0.0%", "50.0%", "99.9%", "12.3%"]
    assert percent(0.3125, digits=0) == "31%" and percent(-0.0625) == "-6.3%"


@pytest.mark.parametrize("n, m", [(2, 4), (1, 8)])
def test_nm_per_weight_limits_follow_the_method(cnn, n, m):
    ex = cnn.prune("nm", n=n, m=m)
    vm = view_model(ex)
    fixed = 1 - n / m
    assert vm.sparsity.disabled and vm.sparsity.value == pytest.approx(fixed) and vm.sparsity.note
    assert get_method("nm").layer_steps({"n": n, "m": m}) == (0.0, pytest.approx(fixed))
    for slider in vm.weights:
        assert (slider.start, slider.end, slider.step) == (0.0, pytest.approx(fixed), pytest.approx(fixed))
        assert slider.value == pytest.approx(ex.layer_sparsities()[slider.name])
    undivisible = [w for w in ex.weights if nm_groups(ex.dense_weights[w], m) is None]
    assert undivisible == ["conv1.weight"]  # 1 x 3 x 3 = 9 inputs per output
    assert vm.weights[0].value == 0.0 and "conv1.weight" in vm.weights_note and percent(fixed) in vm.weights_note


def test_a_weight_nm_cannot_prune_is_not_offered_as_hand_set_sparse(cnn):
    """conv1 has 9 inputs per output, not a multiple of M: N:M keeps it dense. Its slider must not
    claim 50% 'set by hand' while the weight stays dense (either refused or locked)."""
    ex = cnn.prune("nm", n=2, m=4)
    try:
        ex.set_layer_sparsity("conv1", 0.5)
    except ValueError as err:
        assert "conv1" in str(err)
    vm = view_model(ex)
    conv1 = vm.weights[0]
    assert conv1.value == ex.layer_sparsities()["conv1.weight"] == 0.0 or conv1.disabled
    assert conv1.disabled or conv1.end == 0.0, "the view offers a sparsity N:M cannot give conv1"


def test_channel_locks_the_weights_whose_outputs_cannot_go(cnn):
    ex = cnn.prune("channel", sparsity=0.5)
    vm = view_model(ex)
    locked = get_method("channel").locked_weights(ex._score_context(0))
    assert list(locked) == ["fc2.weight"]
    assert [s.name for s in vm.weights if s.disabled] == ["fc2.weight"]
    assert vm.weights[-1].note == locked["fc2.weight"] and "output" in vm.weights[-1].note
    assert "fc2.weight" in vm.weights_note and "channels" in vm.weights_note
    # the per-weight values are fractions of output channels (set_layer_sparsity's unit)
    assert {s.name: s.value for s in vm.weights} == pytest.approx(ex.layer_settings())
    assert vm.weights[1].value == pytest.approx(1 - float(ex.masks["conv2.weight"].flatten(1).any(1).float().mean()))
    assert [o.name for o in vm.options] == ["norm"] and vm.options[0].choices == ("l1", "l2")
    assert vm.seed is None  # channel pruning draws nothing at random


def test_hand_set_labels_and_achieved_text(cnn):
    ex = cnn.prune("lamp", sparsity=0.8).set_layer_sparsity("fc1", 0.3)
    vm = view_model(ex)
    labels = {s.name: s.label for s in vm.weights}
    assert labels["fc1.weight"] == "fc1.weight · set by hand" and [s.name for s in vm.weights if s.hand_set] == ["fc1.weight"]
    assert all(labels[n] == n for n in ex.weights if n != "fc1.weight")
    assert vm.achieved.startswith(f"Achieved sparsity of the prunable weights: {percent(ex.cost().sparsity)}")
    assert "set by hand" in vm.achieved
    assert vm.sparsity.label == get_method("lamp").sparsity_label and vm.sparsity.value == 0.8
    ex.prune("lamp", sparsity=0.8)
    vm = view_model(ex)
    assert vm.achieved == f"Achieved sparsity of the prunable weights: {percent(ex.cost().sparsity)}"
    assert not any(s.hand_set for s in vm.weights)


def test_every_registered_method_is_offered_with_its_own_options(cnn, runnable_methods):
    vm = view_model(cnn)
    assert vm.methods == {m.display_name: name for name, m in METHODS.items() if getattr(m, "selectable", True)}
    assert set(runnable_methods) <= set(vm.methods.values())
    for name in runnable_methods:
        method = METHODS[name]
        fixed = method.fixed_sparsity(dict(method.check_options({})))
        cnn.prune(name) if fixed is not None else cnn.prune(name, sparsity=0.6)
        vm = view_model(cnn)
        assert vm.method == name and vm.description == method.description
        assert [o.name for o in vm.options] == method.option_names()
        assert {o.name: o.value for o in vm.options} == dict(cnn.setting.weights.options)
        assert (vm.seed is not None) == method.uses_seed
        assert vm.sparsity.end == MAX_SPARSITY and vm.sparsity.disabled == (fixed is not None)


def test_slider_values_never_exceed_their_range(cnn):
    ex = cnn.prune("magnitude", sparsity=0.9).set_layer_sparsity("fc1", 0.995)
    vm = view_model(ex)
    assert all(s.start <= s.value <= s.end for s in [vm.sparsity, *vm.weights])


# ----------------------------------------------------------------------------- one rounding everywhere
class Sixteen(nn.Module):
    """16 prunable weights: 5 removed is 31.25%, a tie that two roundings show differently."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_the_app_and_the_widget_round_sparsity_the_same_way():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ex = Explorer(Sixteen(), (torch.randn(8, 4), torch.arange(8) % 4), device="cpu")
    ex.set_layer_sparsity("fc", 5 / 16)
    cost = ex.cost()
    assert cost.sparsity == 0.3125 and percent(cost.sparsity) == "31.3%"
    cards = MetricsPanel()
    cards.show_cost(cost)
    chart = LayerSparsityChart()
    chart.update(cost.per_layer, set())
    widget = ExplorerWidget(ex)
    try:
        assert cards.sparsity.value == "31.3%"
        assert chart.source.data["label"] == ["31.3%"]
        assert ">31.3%<" in widget.metrics_html.value.replace(" &hellip;", "")
        assert "31.3%" in widget.achieved.value
        accuracy = widget.metrics.accuracy
        assert f">{percent(accuracy)}<" in widget.metrics_html.value  # accuracy as the app's card shows it
    finally:
        widget.close()


# ----------------------------------------------------------------------------- the app and the widget agree
def _app_view(app) -> dict:
    c = app.controls
    return {
        "method": c.method.value,
        "sparsity": (c.sparsity.value, c.sparsity.disabled),
        "options": {n: w.value for n, w in c.option_widgets.items()},
        "seed": c.seed.value if c.seed.visible else None,
        "weights": {n: (s.value, s.name, s.disabled, s.end, s.step) for n, s in c.layer_sliders.items()},
    }


def _widget_view(widget: ExplorerWidget) -> dict:
    return {
        "method": widget.method.value,
        "sparsity": (widget.sparsity.value, widget.sparsity.disabled),
        "options": {n: w.value for n, w in widget.option_widgets.items()},
        "seed": widget.seed.value if widget.seed.layout.display != "none" else None,
        # the widget's per-weight label is its tooltip (the slider's description is the bare name)
        "weights": {n: (s.value, s.tooltip, s.disabled, s.max, s.step) for n, s in widget.layer_sliders.items()},
    }


def _vm_view(ex: Explorer) -> dict:
    vm = view_model(ex)
    return {
        "method": vm.method,
        "sparsity": (vm.sparsity.value, vm.sparsity.disabled),
        "options": {o.name: o.value for o in vm.options},
        "seed": vm.seed.value if vm.seed is not None else None,
        "weights": {s.name: (s.value, s.label, s.disabled, s.end, s.step) for s in vm.weights},
    }


STEPS = [
    lambda ex: ex.prune("lamp", sparsity=0.8),
    lambda ex: ex.set_layer_sparsity("fc2", 0.3),
    lambda ex: ex.prune("nm", n=1, m=8),
    lambda ex: ex.set_layer_sparsity("fc1", 0.0),
    lambda ex: ex.prune("channel", sparsity=0.5, norm="l2"),
    lambda ex: ex.set_layer_sparsity("fc1", 0.25),
    lambda ex: ex.prune("random", sparsity=0.4, seed=7),
    lambda ex: ex.prune("snip", sparsity=0.6, seed=2),
    lambda ex: ex.prune("erk", sparsity=0.9),
    lambda ex: ex.prune("uniform_plus", sparsity=0.7),
    lambda ex: ex.prune("global_magnitude", sparsity=0.35),
]


def test_the_app_and_the_widget_show_the_same_state(app):
    ex = app.explorer
    widget = ex.widget()
    try:
        for i, step in enumerate(STEPS):
            step(ex)
            assert app.wait_idle()  # a method's first scores are computed on the app's worker
            expected = _vm_view(ex)
            assert _app_view(app) == expected, f"app after step {i}"
            assert _widget_view(widget) == expected, f"widget after step {i}"
            assert html.escape(view_model(ex).achieved) in widget.achieved.value
            assert app.controls.achieved.object == view_model(ex).achieved
    finally:
        widget.close()
        assert app.wait_idle()


def test_a_widget_does_not_turn_an_allocation_into_hand_set_weights():
    """The issue's notebook: a widget on ex, then two prune calls from code."""
    ex = Explorer.from_sample("digits_mlp")
    widget = ex.widget()
    try:
        ex.prune("erk", sparsity=0.9)
        ex.prune("lamp", sparsity=0.5)
        assert ex.setting.weights.overrides == ()
        assert (ex.setting.weights.method, ex.setting.weights.sparsity) == ("lamp", 0.5)
        fresh = Explorer.from_sample("digits_mlp").prune("lamp", sparsity=0.5)
        assert all(torch.equal(ex.masks[n], fresh.masks[n]) for n in ex.weights)
        assert not any("by hand" in r.value for r in widget.layer_readouts.values())
        # the notebook's N:M cell: the widget's sliders echo values N:M does not take
        ex.prune("magnitude", sparsity=0.3)
        ex.prune("nm", n=2, m=4)
        assert widget.error is None and ex.setting.weights.overrides == ()
    finally:
        widget.close()


def test_app_and_widget_on_one_explorer_twenty_slider_moves(app):
    ex = app.explorer
    ex.prune("lamp", sparsity=0.5)
    widget = ex.widget()
    try:
        values = [round(0.05 + 0.045 * i, 2) for i in range(20)]
        for value in values:
            widget.sparsity.value = value
            assert app.wait_idle()
            assert ex.setting.weights.overrides == (), f"hand-set weights after the slider went to {value}"
        assert (ex.setting.weights.method, ex.setting.weights.sparsity) == ("lamp", values[-1])
        assert not any(s.hand_set for s in view_model(ex).weights)
        assert not any("set by hand" in s.name for s in app.controls.layer_sliders.values())
        assert _app_view(app) == _widget_view(widget) == _vm_view(ex)
    finally:
        widget.close()
        assert app.wait_idle()
    assert app.metrics.metrics.accuracy == ex.evaluate().accuracy
