"""The Speed section: a background benchmark on a real explorer, drawn exactly as the engine's
report, marked stale when the setting changes, errors in the alert."""

from __future__ import annotations

import pytest

from prunescope.explorer.app import ExplorerApp
from prunescope.explorer.app.speed_chart import TABLE_COLUMNS, WHOLE_MODEL
from prunescope.explorer.app.speed_view import describe_spec
from prunescope.explorer.core.setting import WeightSetting

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPEATS = 3  # medians of a few runs: the tests check plumbing, never timings


@pytest.fixture(scope="module")
def measured(close_app):
    """An MLP app, LAMP 80%, whose speed was measured at batch 32 on numba-cpu."""
    app = ExplorerApp(model="digits_mlp")
    app.speed.repeats = REPEATS
    app.controls.method.value = "lamp"
    assert app.wait_idle()
    app.controls.sparsity.value = 0.8
    app.speed.batch_size.value = 32
    assert app.wait_idle()
    view = app.speed
    view.run()
    assert view.running and view.run_button.disabled and view.progress.visible
    assert "Measuring" in view.status.object
    assert view.wait_idle(120)
    yield app
    close_app(app)


def test_chart_and_table_are_the_engine_report(measured):
    view = measured.speed
    report = view.reports["digits_mlp"]
    assert report.setting == measured.explorer.setting.weights and report.batch_size == 32
    assert report.backend == "numba-cpu"
    table = report.table
    data = view.chart.source.data
    assert data["layer"] == [*measured.explorer.layers, "model"] == list(table["layer"])
    assert data["factor"] == [*measured.explorer.layers, WHOLE_MODEL]
    assert list(view.chart.figure.x_range.factors) == data["factor"]
    assert data["measured"] == pytest.approx(list(table["measured_speedup"]))
    assert data["theoretical"] == pytest.approx(list(table["theoretical_speedup"]))
    assert data["format"] == ["csr", "csr", "csr", "whole forward"]
    shown = view.chart.frame
    assert list(shown.columns) == list(TABLE_COLUMNS)
    assert shown.values.tolist() == table[list(TABLE_COLUMNS.values())].values.tolist()
    assert view.chart.table.object is shown
    # the theoretical speed-up is the FLOPs reduction the cost card shows
    assert data["theoretical"][-1] == pytest.approx(measured.metrics.cost.flops_reduction)
    y = view.chart.figure.y_range
    assert y.start < min(1.0, *data["measured"], *data["theoretical"]) and y.end > max(data["theoretical"])
    assert view.chart.figure.yaxis[0].axis_label == "speed-up over dense torch (x)"
    ticks = view.chart.figure.yaxis[0].ticker.ticks
    assert 1 in ticks and all(y.start <= t <= y.end for t in ticks)


def test_status_states_what_was_measured(measured):
    view = measured.speed
    whole = view.reports["digits_mlp"].whole
    assert not view.running and not view.run_button.disabled and not view.progress.visible
    assert "LAMP 80%" in view.status.object and "batch 32" in view.status.object
    assert f"{whole['measured_speedup']:.2f}×" in view.status.object
    assert "setting changed" not in view.status.object
    assert "LAMP 80%" in view.chart.figure.title.text
    assert view.chart.measured.glyph.fill_alpha == 1.0


@pytest.mark.parametrize("change", ["sparsity", "batch", "layer"])
def test_a_changed_setting_marks_the_result_stale(measured, change):
    view, controls = measured.speed, measured.controls
    report = view.reports["digits_mlp"]
    if change == "sparsity":
        controls.sparsity.value = 0.5
    elif change == "batch":
        view.batch_size.value = 256
    else:
        measured.explorer.set_layer_sparsity("fc1.weight", 0.3)
    assert "Measured for <b>LAMP 80%</b>" in view.status.object and "setting changed" in view.status.object
    assert view.chart.measured.glyph.fill_alpha < 1.0
    assert view.chart.source.data["measured"] == pytest.approx(list(report.table["measured_speedup"]))
    # back to the measured setting: current again
    view.batch_size.value = 32
    measured.explorer.prune("lamp", sparsity=0.8)
    assert "setting changed" not in view.status.object and view.chart.measured.glyph.fill_alpha == 1.0
    assert measured.wait_idle()


def test_each_model_keeps_its_report(measured):
    view = measured.speed
    measured.controls.model.value = "digits_cnn"
    assert view.chart.source.data["measured"] == [] and "Not measured" in view.status.object
    view.batch_size.value = 1
    view.run()
    assert view.wait_idle(120)
    cnn = view.reports["digits_cnn"]
    assert cnn.batch_size == 1 and set(cnn.table["format"][:2]) == {"csr-conv"}
    assert view.chart.source.data["layer"] == [*measured.explorer.layers, "model"]
    measured.controls.model.value = "digits_mlp"
    view.batch_size.value = 32
    assert view.chart.source.data["layer"] == ["fc1.weight", "fc2.weight", "fc3.weight", "model"]
    assert "setting changed" not in view.status.object


def test_cancel_stops_the_measurement_without_an_alert(close_app):
    import threading

    app = ExplorerApp(model="digits_mlp")
    try:
        release = threading.Event()
        real = app.explorer.benchmark

        def slow(**kwargs):  # hold the measurement until the test has pressed Cancel
            release.wait(30)
            return real(**kwargs)

        app.explorer.benchmark = slow
        app.speed.repeats = 1
        app.speed.run()
        assert app.speed.running and not app.speed.cancel_button.disabled
        app.speed.cancel()
        assert app.speed.status.object == "Cancelling…"
        release.set()
        assert app.speed.wait_idle(60)
        assert app.speed.status.object.startswith("Cancelled") and not app.alert.visible
        assert not app.speed.running and app.speed.cancel_button.disabled
        assert app.explorer.name not in app.speed.reports
    finally:
        close_app(app)


@pytest.mark.parametrize("setting, text", [
    (WeightSetting("lamp", 0.8), "LAMP 80%"),
    (WeightSetting("nm", 0.5, options=(("m", 4), ("n", 2))), "N:M semi-structured 2:4"),
    (WeightSetting("channel", 0.25, options=(("norm", "l2"),)), "Channel (structured), 25% of channels (L2)"),
    (WeightSetting("magnitude", 0.5, overrides=(("fc1.weight", 0.1),)), "Magnitude (layer-wise) 50%, 1 weight set by hand"),
    (WeightSetting("uniform_plus", 0.9, overrides=(("fc1.weight", 0.1), ("fc2.weight", 0.2))),
     "Unif+ (uniform, first conv dense) 90%, 2 weights set by hand"),
])
def test_describe_spec(setting, text):
    assert describe_spec(setting) == text


def test_inside_a_jupyter_kernel_the_measurement_runs_inline(close_app, monkeypatch):
    from prunescope.explorer.app.dispatch import SessionDispatcher

    monkeypatch.setattr(SessionDispatcher, "in_kernel", property(lambda self: True))
    app = ExplorerApp(model="digits_mlp")
    try:
        app.speed.repeats = REPEATS
        app.explorer.prune("magnitude", sparsity=0.5)
        app.speed.run()  # returns with the result shown: no thread may update a notebook page
        report = app.speed.reports["digits_mlp"]
        assert app.speed.chart.source.data["measured"] == pytest.approx(list(report.table["measured_speedup"]))
        assert not app.speed.running and "Magnitude (layer-wise) 50%" in app.speed.status.object
    finally:
        close_app(app)
