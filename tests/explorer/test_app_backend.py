"""The 'Evaluate with' select: it drives ``state.backend``, the cards are measured through that
backend, the kernels' warm-up is awaited on the worker (never the UI), and app_hooks starts it."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import panel as pn
import pytest

from prunescope.explorer.app import ExplorerApp, app as app_module
from prunescope.explorer.app.backends import WARMUP_KEY, evaluation_backends, kernel_warmup
from prunescope.explorer.viewmodel import percent

EXPLORER_DIR = Path(app_module.__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _percent(fraction: float) -> str:
    return percent(fraction)  # the one rounding every view uses


def test_select_offers_the_available_backends(app):
    assert app.controls.backend.options == evaluation_backends()
    assert app.controls.backend.options[:2] == ["torch", "numba-cpu"]
    assert app.controls.backend.value == "torch" == app.explorer.state.backend


def test_select_drives_the_state_and_the_cards_measure_through_it(app):
    app.explorer.prune("lamp", sparsity=0.85)
    assert app.wait_idle()
    app.controls.backend.value = "numba-cpu"
    assert app.explorer.state.backend == "numba-cpu"
    assert app.wait_idle(120)
    expected = app.explorer.evaluate(backend="numba-cpu")
    shown = app.metrics
    assert shown.backend == "numba-cpu" and shown.accuracy.title == "Accuracy (numba-cpu)"
    assert shown.metrics.accuracy == expected.accuracy and shown.metrics.loss == expected.loss
    assert shown.accuracy.value == _percent(expected.accuracy) and shown.loss.value == f"{expected.loss:.3f}"
    assert not shown.accuracy.pending
    # and back, from the state (a notebook or another view): the select follows
    app.explorer.state.backend = "torch"
    assert app.controls.backend.value == "torch"
    assert app.wait_idle()
    torch_metrics = app.explorer.evaluate(backend="torch")
    assert shown.metrics.loss == torch_metrics.loss and shown.backend == "torch"
    assert shown.accuracy.title == "Accuracy (test)"
    assert torch_metrics.accuracy == expected.accuracy  # same model, two executions


def test_switching_model_keeps_the_backend(app):
    app.controls.backend.value = "numba-cpu"
    app.controls.model.value = "digits_cnn"
    assert app.explorer.state.backend == "numba-cpu" and app.controls.backend.value == "numba-cpu"
    assert app.wait_idle(120)
    assert app.metrics.backend == "numba-cpu"
    assert app.metrics.metrics.accuracy == app.explorer.evaluate(backend="numba-cpu").accuracy


def test_evaluation_waits_for_the_warmup_on_the_worker(app, monkeypatch):
    warming: Future = Future()
    monkeypatch.setattr(app_module, "warmup_for", lambda backend: None if backend == "torch" else warming)
    try:
        app.controls.backend.value = "numba-cpu"  # returns at once: the wait is on the worker thread
        assert app.metrics.accuracy.pending and "compile" in app.metrics.accuracy.note
        app.controls.sparsity.value = 0.6  # the app stays usable: instant numbers follow
        assert app.metrics.cost.sparsity == pytest.approx(app.explorer.cost().sparsity)
        assert app.metrics.sparsity.value == _percent(app.explorer.cost().sparsity)
        assert not app.wait_idle(0.3)  # still waiting for the kernels
    finally:
        warming.set_result(None)
    assert app.wait_idle(120)
    expected = app.explorer.evaluate(backend="numba-cpu")
    assert app.metrics.metrics.accuracy == expected.accuracy and not app.metrics.accuracy.pending
    assert "compile" not in app.metrics.accuracy.note


def test_a_failed_warmup_shows_an_alert(app, monkeypatch):
    warming: Future = Future()
    warming.set_exception(RuntimeError("kernels did not compile (simulated)"))
    monkeypatch.setattr(app_module, "warmup_for", lambda backend: None if backend == "torch" else warming)
    app.controls.backend.value = "numba-cpu"
    assert app.wait_idle()
    assert app.alert.visible and "kernels did not compile (simulated)" in app.alert.object
    assert not app.metrics.accuracy.pending


def test_a_bad_backend_from_the_select_is_refused(app):
    app.controls.backend.options = [*app.controls.backend.options, "tpu"]
    app.controls.backend.value = "tpu"
    assert app.alert.visible and "tpu" in app.alert.object
    assert app.explorer.state.backend == "torch" and app.controls.backend.value == "torch"


def test_warmup_is_shared_through_the_panel_cache():
    assert kernel_warmup() is kernel_warmup() is pn.state.cache[WARMUP_KEY]
    assert kernel_warmup().result(120) is None


def test_a_failed_warmup_is_started_again_by_the_next_session(monkeypatch):
    failed: Future = Future()
    failed.set_exception(ImportError("partially initialized module 'torch' (simulated)"))
    monkeypatch.setitem(pn.state.cache, WARMUP_KEY, failed)
    again = kernel_warmup()
    assert again is not failed and pn.state.cache[WARMUP_KEY] is again
    assert again.result(120) is None and kernel_warmup() is again


def test_bokeh_runs_app_hooks_when_the_server_loads(monkeypatch):
    """``panel serve explorer`` builds a DirectoryHandler; its on_server_loaded runs app_hooks.py."""
    from bokeh.application.handlers.directory import DirectoryHandler

    monkeypatch.delitem(pn.state.cache, WARMUP_KEY, raising=False)
    handler = DirectoryHandler(filename=str(EXPLORER_DIR))
    assert not handler.failed, handler.error_detail
    handler.on_server_loaded(server_context=None)
    warming = pn.state.cache[WARMUP_KEY]
    assert isinstance(warming, Future) and warming.result(120) is None
