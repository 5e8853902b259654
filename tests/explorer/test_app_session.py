"""Per-session plumbing: results from worker threads reach the page only through the session's
event loop, the session's threads stop when it ends, and the page builds from local resources."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import panel as pn
import pytest
from panel.io.state import set_curdoc
from torch.func import functional_call

from prunescope.explorer import Explorer
from prunescope.explorer.core import forward as core_forward
from prunescope.explorer.app import ExplorerApp
from prunescope.explorer.app.dispatch import SessionDispatcher


class FakeSessionDocument:
    """Stands in for a served Bokeh Document: queues next-tick callbacks for the 'event loop'."""

    session_context = SimpleNamespace(request=SimpleNamespace(arguments={}))

    def __init__(self) -> None:
        self.queued: list = []
        self.queued_from: list[threading.Thread] = []
        self.destroyed: list = []

    def add_next_tick_callback(self, callback) -> None:
        self.queued.append(callback)
        self.queued_from.append(threading.current_thread())

    def on_session_destroyed(self, *callbacks) -> None:
        self.destroyed.extend(callbacks)

    def load(self) -> None:
        """The browser has loaded the page: Panel runs the session's ``onload`` callbacks."""
        with set_curdoc(self):
            for callback, _threaded in pn.state._onload.pop(self, []):
                callback()

    def run_loop_once(self) -> None:
        callbacks, self.queued, self.queued_from = self.queued, [], []
        for callback in callbacks:
            callback()

    def settle(self, app: ExplorerApp, rounds: int = 10) -> None:
        """Run the loop until the worker is idle and nothing is queued (a result may ask for more work)."""
        for _ in range(rounds):
            assert app.wait_idle()
            if not self.queued:
                return
            self.run_loop_once()
        raise AssertionError("the session kept queueing work")


def test_without_a_session_updates_run_inline():
    dispatch = SessionDispatcher()
    ran = []
    dispatch(lambda: ran.append(1))
    assert not dispatch.served and ran == [1]
    dispatch.close()
    dispatch(lambda: ran.append(2))
    assert ran == [1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def served():
    doc = FakeSessionDocument()
    with set_curdoc(doc):
        app = ExplorerApp(model="digits_mlp")
    assert app.wait_idle()
    doc.load()  # the first result waited for the page: now on the loop,
    doc.run_loop_once()  # where it runs and asks for the evaluation
    yield doc, app
    app.wait_idle()
    app.sensitivity.wait_idle()
    app.close()


def test_worker_results_are_applied_on_the_session_loop_only(served):
    doc, app = served
    assert app.wait_idle()
    assert app.metrics.metrics is None and app.metrics.accuracy.pending  # nothing applied off-loop
    assert doc.queued and all(t is not threading.main_thread() for t in doc.queued_from)
    doc.settle(app)
    assert app.metrics.metrics.accuracy == app.explorer.evaluate().accuracy
    assert not app.metrics.accuracy.pending


def test_results_that_come_before_the_page_has_loaded_wait_for_it():
    """A fresh session's first result (the masks of 0 % take milliseconds) arrives while Bokeh is
    still setting the session up: it waits for the page's onload instead, then runs on the loop."""
    doc = FakeSessionDocument()
    with set_curdoc(doc):
        app = ExplorerApp(model="digits_mlp")
    try:
        assert app.wait_idle()
        assert doc.queued == [] and app.metrics.metrics is None  # nothing handed to a session not yet up
        doc.load()  # the waiting result goes to the loop, in order
        assert len(doc.queued) == 1 and app.metrics.metrics is None
        doc.settle(app)
        assert app.metrics.metrics.accuracy == app.explorer.evaluate().accuracy
        ran = []
        app._dispatch(lambda: ran.append(threading.current_thread()))
        assert ran == [] and doc.queued  # after the load, updates go to the loop as before
        doc.run_loop_once()
        assert ran == [threading.main_thread()]
    finally:
        app.close()


def test_only_the_latest_setting_is_shown(served):
    doc, app = served
    doc.settle(app)
    for sparsity in (0.2, 0.5, 0.9):
        app.controls.sparsity.value = sparsity
    doc.settle(app)  # results of older settings may be queued too: they are dropped
    assert app.metrics.metrics.sparsity == pytest.approx(0.9, abs=1e-3)
    assert app.metrics.metrics.accuracy == app.explorer.evaluate().accuracy


def test_session_end_stops_its_threads(served):
    doc, app = served
    assert doc.destroyed
    for callback in doc.destroyed:
        callback(doc.session_context)
    assert app._dispatch.closed
    with pytest.raises(RuntimeError, match="closed"):
        app._worker.submit(lambda: None, lambda r: None)


def test_one_model_never_runs_on_two_threads_at_once(monkeypatch):
    """functional_call swaps the module's parameters in place while it runs: live evaluation (worker
    thread) and SNIP scoring (prune, on the UI thread) must take turns on a session's model
    (the engine serialises forward passes per explorer; the app relies on it)."""
    running, overlaps, guard = [], [], threading.Lock()

    def tracked(*args, **kwargs):
        with guard:
            running.append(threading.current_thread())
            if len(running) > 1:
                overlaps.append(list(running))
        try:
            if threading.current_thread() is not threading.main_thread():
                time.sleep(0.05)  # a slow evaluation: the UI thread's next scoring comes meanwhile
            return functional_call(*args, **kwargs)
        finally:
            with guard:
                running.remove(threading.current_thread())

    monkeypatch.setattr(core_forward, "functional_call", tracked)
    app = ExplorerApp(model="digits_mlp")
    try:
        app.controls.method.value = "snip"
        for seed in range(1, 8):  # each new seed scores SNIP with gradients on this thread
            app.controls.sparsity.value = 0.5 + seed / 100
            app.controls.seed.value = seed
        assert app.wait_idle()
        assert overlaps == []
        reference = Explorer.from_sample("digits_mlp").evaluate(setting=app.explorer.setting)
        assert app.metrics.metrics.accuracy == reference.accuracy
    finally:
        app.wait_idle()
        app.close()


def test_page_is_a_bootstrap_template_with_the_views():
    app = ExplorerApp()
    try:
        page = app.template()
        assert isinstance(page, pn.template.BootstrapTemplate)  # Fast's design loads a Google font
        (sidebar,), (main,) = page.sidebar.objects, page.main.objects  # one root per area
        assert app.controls.sparsity in sidebar.objects
        main = main.objects
        assert any(view is app.metrics.__panel__() for view in main) and app.tabs in main
        tabs = dict(zip(app.tabs._names, app.tabs.objects))
        assert list(tabs)[:3] == ["Pruning", "Sensitivity", "Speed"] and app.active_tab == "Pruning"
        assert any(v is app.sensitivity.__panel__() for v in tabs["Sensitivity"].objects)
        assert any(v is app.speed.__panel__() for v in tabs["Speed"].objects)
        assert isinstance(app.__panel__(), pn.Row)  # notebooks get the same views without the page
    finally:
        app.wait_idle()
        app.close()
