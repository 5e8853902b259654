"""ExplorerWidget without a browser: set controls or the state, check the state and the output."""

from __future__ import annotations

import re
import threading

import ipywidgets
import pytest
import torch

from prunescope.explorer import Explorer
from prunescope.explorer.viewmodel import percent
from prunescope.widgets import ExplorerWidget


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread: on a shared machine OpenMP's spinning threads make tiny matmuls 50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def shown(widget: ExplorerWidget, metric: str, dense: bool = False, wait: bool = True) -> float:
    """The exact value the metrics table shows for ``metric`` (pruned column, or dense), by default
    once the background measurement is in."""
    if wait:
        assert widget.wait(), "the measurement did not arrive"
    attr = "data-dense" if dense else "data-metric"
    found = re.search(rf'{attr}="{metric}" data-value="([^"]+)"', widget.metrics_html.value)
    assert found, f"{metric} is not in the metrics table"
    return float(found.group(1))


def layer_values(widget: ExplorerWidget) -> dict[str, float]:
    return {name: slider.value for name, slider in widget.layer_sliders.items()}


@pytest.fixture
def explorer() -> Explorer:
    return Explorer.from_sample("digits_mlp")


@pytest.fixture
def widget(explorer):
    w = ExplorerWidget(explorer)
    yield w
    w.close()


@pytest.fixture
def calls(explorer, monkeypatch):
    """Counts of the engine calls the widget makes (the real methods still run)."""
    counts = {"prune": [], "set_layer_sparsity": []}
    for name in counts:
        real = getattr(explorer, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            counts[_name].append((args, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(explorer, name, spy)
    return counts


def test_is_a_displayable_ipywidget(explorer):
    w = explorer.widget()
    try:
        assert isinstance(w, ExplorerWidget) and isinstance(w, ipywidgets.Box)
        assert "application/vnd.jupyter.widget-view+json" in w._repr_mimebundle_()
        assert w.metrics is not None and w.error is None
        assert shown(w, "accuracy") == explorer.evaluate().accuracy
    finally:
        w.close()


def test_dense_values_are_shown_beside(widget, explorer):
    dense = explorer.dense_metrics()
    widget.sparsity.value = 0.8
    assert shown(widget, "accuracy", dense=True) == dense.accuracy
    assert shown(widget, "loss", dense=True) == dense.loss
    assert shown(widget, "params_nonzero", dense=True) == dense.params_total
    assert shown(widget, "flops_effective", dense=True) == dense.flops_dense


def test_slider_changes_state_and_shows_measured_accuracy(widget, explorer, calls):
    widget.sparsity.value = 0.8
    assert explorer.state.sparsity == 0.8 and explorer.state.method == "magnitude"
    cost = explorer.cost()
    assert shown(widget, "sparsity") == cost.sparsity
    assert shown(widget, "params_nonzero") == cost.params_nonzero
    assert shown(widget, "flops_effective") == cost.flops_effective
    measured = explorer.evaluate()
    assert shown(widget, "accuracy") == measured.accuracy
    assert shown(widget, "loss") == measured.loss
    assert widget.metrics.accuracy == measured.accuracy
    assert f">{percent(measured.accuracy)}<" in widget.metrics_html.value
    assert measured.accuracy != explorer.dense_metrics().accuracy
    # one engine call per slider value: the redraw does not call the engine again
    assert len(calls["prune"]) == 1 and calls["set_layer_sparsity"] == []


def test_the_measurement_is_inline_and_current(widget, explorer):
    """The widget evaluates on the kernel's own thread: after a move its table is already current."""
    widget.sparsity.value = 0.9
    cost = explorer.cost()
    assert shown(widget, "sparsity", wait=False) == cost.sparsity
    assert shown(widget, "flops_effective", wait=False) == cost.flops_effective
    assert shown(widget, "accuracy", wait=False) == explorer.evaluate().accuracy
    assert "&hellip;" not in widget.metrics_html.value and widget.metrics is explorer.evaluate()


def test_dragging_shows_the_last_value(widget, explorer):
    for value in (0.1, 0.3, 0.5, 0.7, 0.85, 0.95, 0.9):
        widget.sparsity.value = value
    assert explorer.state.sparsity == 0.9
    assert shown(widget, "accuracy") == explorer.evaluate().accuracy


def test_method_picker_prunes_with_that_method(widget, explorer):
    widget.sparsity.value = 0.9
    widget.method.value = "lamp"
    assert explorer.state.method == "lamp" and explorer.state.sparsity == 0.9
    assert shown(widget, "accuracy") == explorer.evaluate().accuracy


def test_prune_in_code_updates_the_widget(widget, explorer):
    explorer.prune("lamp", sparsity=0.9)
    assert widget.method.value == "lamp"
    assert widget.sparsity.value == 0.9
    achieved = explorer.layer_sparsities()
    assert layer_values(widget) == pytest.approx(achieved)
    table = explorer.cost().per_layer.set_index("layer")
    assert all(f"{int(table.at[n, 'kept']):,}" in widget.layer_readouts[n].value for n in achieved)
    assert len({round(v, 3) for v in achieved.values()}) > 1  # LAMP allocates layers differently
    assert shown(widget, "accuracy") == explorer.evaluate().accuracy

    explorer.prune("nm", n=1, m=4)
    assert widget.method.value == "nm"
    assert {n: w.value for n, w in widget.option_widgets.items()} == {"n": 1, "m": 4}
    assert widget.sparsity.value == 0.75 and widget.sparsity.disabled
    assert list(widget.option_box.children) == list(widget.option_widgets.values())


@pytest.mark.parametrize("method", ["erk", "lamp", "magnitude"])
def test_browser_snapping_to_the_step_is_not_taken_as_input(widget, explorer, calls, method):
    """The JS slider rounds drawn values to its step and sends them back; that must change nothing."""
    explorer.prune(method, sparsity=0.9)
    calls["prune"].clear()
    before = explorer.setting
    for slider in [widget.sparsity, *widget.layer_sliders.values()]:
        slider.value = round(slider.value / slider.step) * slider.step  # as noUiSlider computes it
    assert calls == {"prune": [], "set_layer_sparsity": []}
    assert explorer.setting == before and widget.error is None
    # a move of one step is a real move
    widget.layer_sliders["fc1.weight"].value = round(widget.layer_sliders["fc1.weight"].value - 0.01, 2)
    assert len(calls["set_layer_sparsity"]) == 1 and list(explorer.state.layer_sparsity) == ["fc1.weight"]


def test_layer_slider_calls_set_layer_sparsity(widget, explorer, calls):
    explorer.prune("magnitude", sparsity=0.5)
    widget.layer_sliders["fc2.weight"].value = 0.95
    assert calls["set_layer_sparsity"] == [(("fc2.weight", 0.95), {})]
    assert explorer.state.layer_sparsity == {"fc2.weight": 0.95}
    assert layer_values(widget) == pytest.approx({"fc1.weight": 0.5, "fc2.weight": 0.95, "fc3.weight": 0.5})
    assert "by hand" in widget.layer_readouts["fc2.weight"].value and "set by hand" in widget.layer_sliders["fc2.weight"].tooltip
    assert widget.layer_sliders["fc2.weight"].description == "fc2.weight"  # the mark is in the readout: the label fits
    assert "by hand" not in widget.layer_readouts["fc1.weight"].value
    assert shown(widget, "accuracy") == explorer.evaluate().accuracy
    # the global slider resets hand-set layers
    widget.sparsity.value = 0.6
    assert explorer.state.layer_sparsity == {}
    assert layer_values(widget) == pytest.approx({"fc1.weight": 0.6, "fc2.weight": 0.6, "fc3.weight": 0.6})


def test_seed_shows_for_seeded_methods_and_drives_the_state(widget, explorer):
    explorer.prune("random", sparsity=0.7, seed=4)
    assert widget.seed.layout.display is None and widget.seed.value == 4
    widget.seed.value = 9
    assert explorer.setting.weights.seed == 9 and explorer.setting.weights.sparsity == 0.7
    explorer.prune("lamp", sparsity=0.5)
    assert widget.seed.layout.display == "none"


def test_channel_layer_sliders_show_channel_fractions(widget, explorer):
    explorer.prune("channel", sparsity=0.5)
    assert layer_values(widget) == pytest.approx({"fc1.weight": 0.5, "fc2.weight": 0.5, "fc3.weight": 0.0})
    assert "output channels" in widget.layer_heading.value and widget.layer_sliders["fc3.weight"].disabled
    assert list(widget.option_widgets) == ["norm"]
    widget.option_widgets["norm"].value = "l2"
    assert explorer.setting.weights.option("norm") == "l2" and explorer.state.method == "channel"
    assert explorer.setting.weights.sparsity == 0.5


def test_nm_layer_sliders_offer_only_dense_or_the_pattern(widget, explorer, calls):
    explorer.prune("nm", n=2, m=4)
    slider = widget.layer_sliders["fc1.weight"]
    assert (slider.min, slider.max, slider.step) == (0.0, 0.5, 0.5)
    before = explorer.setting
    slider.value = 0.5 + 1e-12  # the browser's snapping of the drawn value: an echo, ignored
    assert calls["set_layer_sparsity"] == [] and explorer.setting == before
    slider.value = 0.3  # off the step grid, so not the browser: input, refused by the engine
    assert calls["set_layer_sparsity"] == [(("fc1.weight", 0.3), {})] and explorer.setting == before
    assert "0.3" in widget.error
    slider.value = 0.0
    assert calls["set_layer_sparsity"][-1] == (("fc1.weight", 0.0), {})
    assert widget.error is None and explorer.state.layer_sparsity == {"fc1.weight": 0.0}
    assert explorer.masks["fc1.weight"].all()


def test_a_refused_value_is_named_and_the_widget_shows_the_state(widget, explorer, calls):
    explorer.prune("nm", n=2, m=4)
    before = explorer.setting
    explorer_call = explorer.set_layer_sparsity
    try:
        explorer_call("fc1.weight", 0.3)
    except ValueError as err:
        message = str(err)
    assert "0.3" in message and "0 or 0.5" in message  # what the widget would show
    widget.sparsity.disabled = False  # a stale frontend may still send a global value
    widget.sparsity.value = 0.3
    assert "0.3" in widget.error and "sparsity 0.5 with these options" in widget.error
    assert 'role="alert"' in widget.error_html.value and "Not applied" in widget.error_html.value
    assert explorer.setting == before and widget.sparsity.value == 0.5 and widget.sparsity.disabled
    widget.layer_sliders["fc2.weight"].value = 0.0  # a valid value clears the message
    assert widget.error is None and widget.error_html.value == ""


def test_a_seed_beyond_the_field_is_clamped_and_the_state_follows(widget, explorer):
    explorer.prune("random", sparsity=0.5)
    widget.seed.value = 2**40
    assert widget.seed.value == widget.seed.max == explorer.setting.weights.seed


@pytest.mark.parametrize(
    "setup, move, message",
    [
        (("nm",), lambda w: setattr(w.option_widgets["n"], "value", 4), "1 <= n < m"),
        (("nm",), lambda w: setattr(w.sparsity, "value", 0.3), "sparsity 0.5 with these options"),
        (("channel", 0.5), lambda w: setattr(w.layer_sliders["fc3.weight"], "value", 0.2), "output channels of 'fc3.weight'"),
    ],
    ids=["nm-n-equals-m", "nm-global-slider", "channel-last-layer"],
)
def test_bad_input_shows_error_and_leaves_state(widget, explorer, setup, move, message):
    explorer.prune(*setup)
    before = explorer.setting

    def view():
        return ({n: o.value for n, o in widget.option_widgets.items()}, widget.seed.value, widget.sparsity.value,
                layer_values(widget))

    shown_before = view()
    move(widget)
    assert message in widget.error
    assert explorer.setting == before
    assert view() == shown_before


def test_evaluation_error_is_shown(widget, explorer, monkeypatch):
    def fail(*args, **kwargs):
        raise ValueError("backend 'numba-cpu' is not available yet")

    monkeypatch.setattr(explorer, "evaluate", fail)
    widget.sparsity.value = 0.4
    assert widget.wait()
    assert "could not evaluate" in widget.error and "numba-cpu" in widget.error
    assert explorer.state.sparsity == 0.4


def test_two_widgets_on_two_explorers_do_not_share_state():
    ex_a, ex_b = Explorer.from_sample("digits_mlp"), Explorer.from_sample("digits_mlp")
    w_a, w_b = ExplorerWidget(ex_a), ExplorerWidget(ex_b)
    try:
        w_a.method.value = "lamp"
        w_a.sparsity.value = 0.9
        assert (ex_a.state.method, ex_a.state.sparsity) == ("lamp", 0.9)
        assert (ex_b.state.method, ex_b.state.sparsity) == ("magnitude", 0.0)
        assert (w_b.method.value, w_b.sparsity.value) == ("magnitude", 0.0)
        w_b.layer_sliders["fc1.weight"].value = 0.3
        assert ex_a.state.layer_sparsity == {} and ex_b.state.layer_sparsity == {"fc1.weight": 0.3}
        assert shown(w_a, "accuracy") == ex_a.evaluate().accuracy
        assert shown(w_b, "accuracy") == ex_b.evaluate().accuracy
        assert shown(w_a, "accuracy") != shown(w_b, "accuracy")
    finally:
        w_a.close()
        w_b.close()


def test_two_widgets_on_one_explorer_follow_each_other(explorer):
    first, second = ExplorerWidget(explorer), ExplorerWidget(explorer)
    try:
        first.sparsity.value = 0.7
        assert second.sparsity.value == 0.7
        second.layer_sliders["fc3.weight"].value = 0.2
        assert first.layer_sliders["fc3.weight"].value == 0.2
        assert shown(first, "accuracy") == shown(second, "accuracy") == explorer.evaluate().accuracy
    finally:
        first.close()
        second.close()


def test_closed_widget_stops_following(explorer):
    w = ExplorerWidget(explorer)
    w.close()
    explorer.prune("lamp", sparsity=0.5)  # must not touch the closed widget
    assert explorer.state.method == "lamp"
    assert w.sparsity.value == 0.0 and w.method.value == "magnitude"
    watchers = explorer.state.param.watchers
    assert not any(found for per_param in watchers.values() for found in per_param.values())


@pytest.mark.parametrize("sample_name", ["digits_mlp", "digits_cnn"])
def test_every_sample_model_gets_one_slider_per_layer(sample_name):
    ex = Explorer.from_sample(sample_name)
    w = ExplorerWidget(ex)
    try:
        assert list(w.layer_sliders) == ex.layers
        last = ex.layers[-1]
        w.layer_sliders[last].value = 0.5
        assert ex.state.layer_sparsity == {last: 0.5}
        assert shown(w, "accuracy") == ex.evaluate().accuracy
    finally:
        w.close()


def test_metrics_table_marks_old_and_missing_measurements(explorer):
    from prunescope.widgets._html import metrics_table

    old = explorer.evaluate()
    explorer.prune("magnitude", sparsity=0.9)
    cost = explorer.cost()
    pending = metrics_table(cost, old, explorer.dense_metrics(), pending=True)
    assert f'data-metric="accuracy" data-value="{old.accuracy!r}"' in pending and "&hellip;" in pending
    assert f'data-metric="sparsity" data-value="{cost.sparsity!r}"' in pending
    empty = metrics_table(cost, None, None, pending=True)
    assert 'data-metric="accuracy" style' in empty and "&ndash;" in empty
