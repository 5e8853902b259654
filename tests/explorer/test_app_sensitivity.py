"""The sensitivity view: background sweep with progress and Cancel, curves from the engine, current setting marked."""

from __future__ import annotations

import time

import pytest

from prunescope.explorer import Explorer
from prunescope.explorer.app import ExplorerApp
from prunescope.explorer.core.setting import Setting, WeightSetting
from prunescope.explorer.pruning import METHODS
from prunescope.explorer.sensitivity import DEFAULT_METHODS, DEFAULT_SPARSITIES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _wait(predicate, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture(scope="module")
def swept(close_app):
    """An MLP app whose sweep ran while the slider kept moving (live evaluation alongside)."""
    app = ExplorerApp(model="digits_mlp")
    view = app.sensitivity
    view.run()
    assert view.running and view.progress.visible and view.run_button.disabled
    app.controls.method.value = "lamp"
    for sparsity in (0.3, 0.6, 0.9, 0.8):
        app.controls.sparsity.value = sparsity
        assert app.wait_idle()
    assert view.wait_idle(120)
    # Outside a server the sweep's result is drawn on its worker thread, racing the marks of the
    # slider moves above; one more move after the sweep makes the final marks deterministic.
    app.controls.sparsity.value = 0.85
    app.controls.sparsity.value = 0.8
    assert app.wait_idle()
    yield app
    close_app(app)


def test_curves_are_the_measured_sweep(swept):
    view = swept.sensitivity
    result = view.results["digits_mlp"]
    data = view.method_source.data
    methods = list(dict.fromkeys(result.by_method["method"]))
    assert data["label"] == [METHODS[m].display_name for m in methods]
    lamp = result.by_method[result.by_method["method"] == "lamp"]
    i = methods.index("lamp")
    assert data["xs"][i] == pytest.approx(list(100 * lamp["weight_sparsity"]))
    assert data["ys"][i] == pytest.approx(list(100 * lamp["accuracy"]))
    # a point of the curve is what the engine measures for that setting on a fresh explorer
    k = list(lamp["sparsity"]).index(0.8)
    fresh = Explorer.from_sample("digits_mlp").evaluate(setting=Setting(WeightSetting(method="lamp", sparsity=0.8)))
    assert data["ys"][i][k] == pytest.approx(100 * fresh.accuracy)
    layers = view.layer_source.data
    assert layers["label"] == swept.explorer.layers
    fc2 = result.by_layer[result.by_layer["layer"] == "fc2.weight"]
    assert layers["ys"][1] == pytest.approx(list(100 * fc2["accuracy"]))
    assert f"{len(result.by_method) + len(result.by_layer)} evaluations" in view.status.object
    assert len(result.by_layer) == 3 * len(DEFAULT_SPARSITIES)
    assert not view.running and not view.progress.visible and view.cancel_button.disabled


def test_live_evaluation_during_the_sweep_is_correct(swept):
    fresh = Explorer.from_sample("digits_mlp").evaluate(setting=swept.explorer.setting)
    assert swept.metrics.metrics.accuracy == fresh.accuracy
    assert swept.metrics.metrics.loss == fresh.loss


def test_current_setting_is_marked(swept):
    metrics = swept.metrics.metrics
    view = swept.sensitivity
    assert view.current.data["x"] == [pytest.approx(100 * metrics.sparsity)]
    assert view.current.data["y"] == [pytest.approx(100 * metrics.accuracy)]
    widths = dict(zip(view.method_source.data["label"], view.method_source.data["width"]))
    assert widths["LAMP"] > widths["Random"]
    achieved = swept.explorer.layer_sparsities()
    assert view.layer_marks.data["x"] == pytest.approx([100 * achieved[n] for n in swept.explorer.layers])


def test_cancel_stops_the_sweep_and_reports_it(close_app):
    app = ExplorerApp(model="digits_mlp")
    view = app.sensitivity
    try:
        view.run()
        assert _wait(lambda: view.progress.value > 0), "no progress shown"
        view.cancel()
        assert view.wait_idle(30)
        assert "Cancelled" in view.status.object
        assert "digits_mlp" not in view.results and view.method_source.data["xs"] == []
        assert not view.running and not view.run_button.disabled and not view.progress.visible
    finally:
        close_app(app)


def test_switching_model_cancels_the_sweep_and_redraws_kept_results(swept):
    view = swept.sensitivity
    swept.controls.model.value = "digits_cnn"
    assert view.method_source.data["xs"] == [] and "Not measured" in view.status.object
    view.run()
    swept.controls.model.value = "digits_mlp"  # the CNN sweep is stopped; the MLP's curves come back
    assert view.wait_idle(30)
    assert "digits_cnn" not in view.results
    assert len(view.method_source.data["xs"]) == len(DEFAULT_METHODS)


def test_inside_a_jupyter_kernel_the_sweep_runs_inline(close_app, monkeypatch):
    from prunescope.explorer.app.dispatch import SessionDispatcher

    monkeypatch.setattr(SessionDispatcher, "in_kernel", property(lambda self: True))
    app = ExplorerApp(model="digits_mlp")
    try:
        app.sensitivity.run()  # returns with the curves drawn: no thread may update a notebook page
        assert not app.sensitivity.running and "digits_mlp" in app.sensitivity.results
        result = app.sensitivity.results["digits_mlp"]
        evaluations = len(result.by_method) + len(result.by_layer)
        assert app.sensitivity.status.object == f"Measured: {evaluations} evaluations on the test split."
    finally:
        close_app(app)
