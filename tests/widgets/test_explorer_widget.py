"""ExplorerWidget without a browser: set controls or the state, check the state and the output."""

from __future__ import annotations

import re
import threading

import ipywidgets
import pytest

from prunescope.explorer import Explorer
from prunescope.widgets import ExplorerWidget


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
    assert f"{measured.accuracy:.2%}" in widget.metrics_html.value
    assert measured.accuracy != explorer.dense_metrics().accuracy
    # one engine call per slider value: the redraw does not call the engine again
    assert len(calls["prune"]) == 1 and calls["set_layer_sparsity"] == []


def test_instant_numbers_come_before_the_measurement(widget, explorer, monkeypatch):
    """Sparsity, parameters and FLOPs follow the slider at once; accuracy follows when measured."""
    release = threading.Event()
    real_evaluate = explorer.evaluate

    def slow_evaluate(*args, **kwargs):
        assert release.wait(10)
        return real_evaluate(*args, **kwargs)

    before = widget.metrics
    monkeypatch.setattr(explorer, "evaluate", slow_evaluate)
    widget.sparsity.value = 0.9
    cost = explorer.cost()
    assert shown(widget, "sparsity", wait=False) == cost.sparsity
    assert shown(widget, "flops_effective", wait=False) == cost.flops_effective
    assert shown(widget, "accuracy", wait=False) == before.accuracy  # the old value, greyed out
    assert "&hellip;" in widget.metrics_html.value and widget.metrics is before
    release.set()
    assert shown(widget, "accuracy") == real_evaluate().accuracy != before.accuracy
    assert "&hellip;" not in widget.metrics_html.value


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
    assert len({round(v, 3) for v in achieved.values()}) > 1  # LAMP allocates layers differently
    assert shown(widget, "accuracy") == explorer.evaluate().accuracy

    explorer.prune("nm", n=1, m=4)
    assert widget.method.value == "nm" and widget.n.value == 1 and widget.m.value == 4
    assert widget.sparsity.value == 0.75 and widget.sparsity.disabled
    assert widget.nm_box.layout.display is None and widget.norm.layout.display == "none"


@pytest.mark.parametrize("method", ["erk", "lamp", "magnitude"])
def test_browser_snapping_to_the_step_is_not_taken_as_input(widget, explorer, calls, method):
    """The JS slider rounds drawn values to its step and sends them back; that must change nothing."""
    explorer.prune(method, sparsity=0.9)
    calls["prune"].clear()
    before = explorer.state.param.values()
    for slider in [widget.sparsity, *widget.layer_sliders.values()]:
        slider.value = round(slider.value / slider.step) * slider.step  # as noUiSlider computes it
    assert calls == {"prune": [], "set_layer_sparsity": []}
    assert explorer.state.param.values() == before and widget.error is None
    # a move of one step is a real move
    widget.layer_sliders["fc1"].value = round(widget.layer_sliders["fc1"].value - 0.01, 2)
    assert len(calls["set_layer_sparsity"]) == 1 and list(explorer.state.layer_sparsity) == ["fc1"]


def test_layer_slider_calls_set_layer_sparsity(widget, explorer, calls):
    explorer.prune("magnitude", sparsity=0.5)
    widget.layer_sliders["fc2"].value = 0.95
    assert calls["set_layer_sparsity"] == [(("fc2", 0.95), {})]
    assert explorer.state.layer_sparsity == {"fc2": 0.95}
    assert layer_values(widget) == pytest.approx({"fc1": 0.5, "fc2": 0.95, "fc3": 0.5})
    assert "by hand" in widget.layer_readouts["fc2"].value
    assert "by hand" not in widget.layer_readouts["fc1"].value
    assert shown(widget, "accuracy") == explorer.evaluate().accuracy
    # the global slider resets hand-set layers
    widget.sparsity.value = 0.6
    assert explorer.state.layer_sparsity == {}
    assert layer_values(widget) == pytest.approx({"fc1": 0.6, "fc2": 0.6, "fc3": 0.6})


def test_keep_first_and_last_dense(widget, explorer):
    explorer.prune("magnitude", sparsity=0.7)
    widget.skip_first_last.value = True
    assert explorer.state.skip_first_last and explorer.state.method == "magnitude"
    assert layer_values(widget) == pytest.approx({"fc1": 0.0, "fc2": 0.7, "fc3": 0.0})
    explorer.prune("lamp", sparsity=0.5, skip_first_last=False)
    assert widget.skip_first_last.value is False


def test_channel_layer_sliders_show_channel_fractions(widget, explorer):
    explorer.prune("channel", sparsity=0.5)
    assert layer_values(widget) == pytest.approx({"fc1": 0.5, "fc2": 0.5, "fc3": 0.0})
    assert "output channels" in widget.layer_heading.value
    assert widget.norm.layout.display is None
    widget.norm.value = "l2"
    assert explorer.state.norm == "l2" and explorer.state.method == "channel"


def test_bad_layer_value_under_nm_shows_error_and_changes_nothing(widget, explorer, calls):
    explorer.prune("nm", n=2, m=4)
    before = explorer.state.param.values()
    widget.layer_sliders["fc1"].value = 0.3
    assert len(calls["set_layer_sparsity"]) == 1
    assert explorer.state.param.values() == before
    assert "0.3" in widget.error and "1 - n/m" in widget.error
    assert 'role="alert"' in widget.error_html.value and "Not applied" in widget.error_html.value
    assert widget.layer_sliders["fc1"].value == 0.5  # put back to what the state holds
    # a valid value clears the message
    widget.layer_sliders["fc1"].value = 0.0
    assert widget.error is None and widget.error_html.value == ""
    assert explorer.state.layer_sparsity == {"fc1": 0.0}


@pytest.mark.parametrize(
    "setup, move, message",
    [
        (("nm",), lambda w: setattr(w.n, "value", 4), "1 <= n < m"),
        (("nm",), lambda w: setattr(w.sparsity, "value", 0.3), "sparsity"),
        (("channel", 0.5), lambda w: setattr(w.layer_sliders["fc3"], "value", 0.2), "last layer"),
    ],
    ids=["nm-n-equals-m", "nm-global-slider", "channel-last-layer"],
)
def test_bad_input_shows_error_and_leaves_state(widget, explorer, setup, move, message):
    explorer.prune(*setup)
    before = explorer.state.param.values()
    shown_before = (widget.n.value, widget.sparsity.value, layer_values(widget))
    move(widget)
    assert message in widget.error
    assert explorer.state.param.values() == before
    assert (widget.n.value, widget.sparsity.value, layer_values(widget)) == shown_before


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
        w_b.layer_sliders["fc1"].value = 0.3
        assert ex_a.state.layer_sparsity == {} and ex_b.state.layer_sparsity == {"fc1": 0.3}
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
        second.layer_sliders["fc3"].value = 0.2
        assert first.layer_sliders["fc3"].value == 0.2
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
