"""The metric cards show the engine's numbers: measured accuracy/loss, cost, and the dense reference."""

from __future__ import annotations

from dataclasses import replace

import param
import pytest

from prunescope.explorer.app.metrics_view import MetricsPanel
from prunescope.explorer.viewmodel import percent

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cards_show_the_evaluation_of_the_current_state(app):
    app.explorer.prune("lamp", sparsity=0.8)
    assert app.wait_idle()
    expected = app.explorer.evaluate()
    dense = app.explorer.dense_metrics()
    shown = app.metrics
    assert shown.metrics.accuracy == expected.accuracy and shown.metrics.loss == expected.loss
    assert shown.accuracy.value == percent(expected.accuracy)
    assert shown.accuracy.dense == percent(dense.accuracy)
    assert shown.accuracy.title == "Accuracy (test)" and not expected.estimate
    assert shown.loss.value == f"{expected.loss:.3f}" and shown.loss.dense == f"{dense.loss:.3f}"
    assert shown.accuracy.note == f"{100 * (expected.accuracy - dense.accuracy):+.1f} pp"
    assert not shown.accuracy.pending and not shown.loss.pending


def test_cost_cards_follow_every_slider_value(app):
    app.controls.sparsity.value = 0.5  # a drag: the instant numbers now, the measurement on the worker
    cost = app.explorer.cost()  # shown at once, before any evaluation finishes
    shown = app.metrics
    assert shown.cost.params_nonzero == cost.params_nonzero
    assert shown.params_nonzero.value == f"{cost.params_nonzero:,}"
    assert shown.params_nonzero.dense == f"{cost.params_total:,}"
    assert shown.flops.value == f"{cost.flops_effective / 1e6:.3f}"
    assert shown.flops.dense == f"{cost.flops_dense / 1e6:.3f}"
    assert shown.flops.note == f"{cost.flops_reduction:.2f}× fewer"
    assert shown.sparsity.value == percent(cost.sparsity) and shown.sparsity.dense == percent(0.0)
    assert app.wait_idle()
    assert app.metrics.metrics.accuracy == app.explorer.evaluate().accuracy


def test_card_html_carries_its_key_and_escapes_text(app):
    card = app.metrics.accuracy
    card.note = "<b>x</b>"
    html = card.__panel__().object
    assert 'data-metric="accuracy"' in html and "&lt;b&gt;x&lt;/b&gt;" in html
    card.pending = True
    assert "ps-pending" in card.__panel__().object


def test_a_failing_evaluation_shows_an_alert_and_the_session_goes_on(app, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(app.explorer, "evaluate", broken)
    app.controls.sparsity.value = 0.4
    assert app.wait_idle()
    assert app.alert.visible and "out of memory (simulated)" in app.alert.object
    assert not app.metrics.accuracy.pending
    monkeypatch.undo()
    app.controls.sparsity.value = 0.5  # the next setting is measured as usual
    assert app.wait_idle()
    assert not app.alert.visible
    assert app.metrics.metrics.accuracy == app.explorer.evaluate().accuracy


def test_an_estimate_is_marked_with_its_subset_and_interval(app):
    """While a slider moves on a large split the card shows the progressive estimate, marked."""
    ex = app.explorer.prune("lamp", sparsity=0.9)
    full = ex.evaluate()
    estimate = replace(full, estimate=True, samples=120, population=full.samples, interval=(0.71, 0.86), accuracy=0.79)
    cards = MetricsPanel()
    cards.show_dense(ex.dense_metrics())
    cards.show_metrics(estimate)
    assert cards.accuracy.title == f"Accuracy (estimate, 120 of {full.samples:,})"
    assert cards.accuracy.value == "≈" + percent(0.79)
    assert f"95% CI {percent(0.71)}–{percent(0.86)}" in cards.accuracy.note
    cards.show_metrics(full)  # released: the full split, unmarked
    assert cards.accuracy.value == percent(full.accuracy) and "CI" not in cards.accuracy.note
    assert cards.accuracy.title == "Accuracy (test)"


def test_release_measures_the_full_split(app):
    slider = app.controls.sparsity
    slider.value = 0.85
    with param.edit_constant(slider):  # the browser sends value_throttled on release
        slider.value_throttled = 0.85
    assert app.wait_idle()
    shown = app.metrics.metrics
    assert not shown.estimate and shown.samples == len(app.explorer.eval_data[1])
    assert shown.accuracy == app.explorer.evaluate().accuracy
